"""The diffusion process against closed forms and published values (models.md section 4, wave2.md section 5).

Everything is float64 NumPy; a denoiser here is either an oracle that knows x_0, or the exact optimal
denoiser of Gaussian data, so every sampler has a known right answer.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyvision.diffusion import (KINDS, ddim_invert, ddim_step, ddim_timesteps, ddpm_step, guided_denoiser,
                                  make_schedule, sample)

LINEAR = make_schedule("linear", 1000)


def oracle(schedule, x0):
    """The denoiser that knows x_0: eps_hat(x_t, t) = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)."""
    return lambda x, t: schedule.eps_from_x0(x, t, x0)


# --- schedules -----------------------------------------------------------------------------------------
def test_linear_schedule_reference_values():
    ab = LINEAR.alpha_bar
    assert ab[-1] == pytest.approx(4.04e-5, rel=2e-3)
    assert int(np.argmax(ab < 0.5)) == 259 and ab[499] == pytest.approx(0.0786, abs=5e-4)
    var = 0.0
    for beta in LINEAR.betas:                      # iterate q(x_t | x_{t-1}) on the variance, from 0
        var = (1 - beta) * var + beta
    assert var == pytest.approx(1 - ab[-1], abs=1e-14) and var == pytest.approx(0.99995964, abs=1e-8)


def test_cosine_schedule_reference_values():
    cos = make_schedule("cosine", 1000)
    assert cos.alpha_bar[-1] == pytest.approx(2.43e-9, rel=0.01)
    assert cos.alpha_bar[499] == pytest.approx(0.494, abs=1e-3)
    assert cos.betas[0] == pytest.approx(4.13e-5, rel=1e-3) and math.sqrt(cos.betas[0]) < 1 / 127.5
    assert (cos.betas == 0.999).sum() == 1 and cos.betas[-1] == 0.999          # only the last is capped


@pytest.mark.parametrize("kind, T", [("linear", 1000), ("linear", 100), ("linear", 50), ("linear", 21), ("cosine", 1000),
                                     ("cosine", 50)])
def test_every_schedule_ends_in_noise(kind, T):
    assert make_schedule(kind, T).alpha_bar[-1] < 1e-3


def test_scaled_linear_keeps_its_known_terminal_signal_and_unscaled_short_linear_would_keep_more():
    assert make_schedule("scaled_linear").alpha_bar[-1] == pytest.approx(0.00466, rel=1e-3)   # non-zero terminal SNR
    unscaled = np.cumprod(1 - np.linspace(1e-4, 0.02, 50))[-1]
    assert unscaled == pytest.approx(0.603, abs=1e-3)               # tiny-diffusion's T = 50 pitfall
    for T in (10, 20):            # rescaled by 1000 / T, beta_end reaches 2.0 and 1.0: the signal is erased
        with pytest.raises(ValueError, match=f"make_schedule: linear with T={T} gives beta up to"):
            make_schedule("linear", T)


@given(st.sampled_from(KINDS), st.integers(2, 60), st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_closed_form_q_equals_iterated_noising_in_mean_and_variance(kind, T, seed):
    if kind == "linear" and T < 21:      # rescaled by 1000 / T, a linear schedule this short has beta >= 1
        T += 21                          # and is refused (tested below); draw a length it accepts
    sched = make_schedule(kind, T)
    t = int(np.random.default_rng(seed).integers(0, sched.T))
    mean, var = 1.0, 0.0                       # x_0 = 1: track the mean and variance of x_t step by step
    for beta in sched.betas[:t + 1]:
        mean, var = math.sqrt(1 - beta) * mean, (1 - beta) * var + beta
    assert mean == pytest.approx(math.sqrt(sched.alpha_bar[t]), rel=1e-12)
    assert var == pytest.approx(1 - sched.alpha_bar[t], rel=1e-12, abs=1e-15)


def test_posterior_mean_via_x0_hat_equals_the_eps_form_at_every_step():
    rng = np.random.default_rng(0)
    xt, eps = rng.normal(size=(1000, 3)), rng.normal(size=(1000, 3))
    t = np.arange(1000)
    x0_hat = LINEAR.x0_from_eps(xt, t, eps)
    beta, ab = LINEAR.betas[:, None], LINEAR.alpha_bar[:, None]
    eps_form = (xt - beta / np.sqrt(1 - ab) * eps) / np.sqrt(1 - beta)      # Algorithm 2's mean
    np.testing.assert_allclose(LINEAR.posterior_mean(x0_hat, xt, t), eps_form, rtol=1e-9, atol=1e-9)
    assert LINEAR.posterior_variance[0] == 0.0


# --- samplers ------------------------------------------------------------------------------------------
def test_ddim_timesteps_leading_spacing():
    assert ddim_timesteps(1000, 10) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert ddim_timesteps(1000, 5, offset=1) == [801, 601, 401, 201, 1]


def test_ddim_variance_reference_values():
    for (t, s), want in {(420, 400): 0.14771, (980, 960): 0.32460, (487, 486): 0.00979, (999, 998): 0.02}.items():
        ab_t, ab_s = LINEAR.alpha_bar[t], LINEAR.alpha_bar[s]
        # the published values have 5 decimals (and come from float32 code): agree to 1.5e-5
        assert (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s) == pytest.approx(want, abs=1.5e-5)
    assert LINEAR.posterior_variance[[0, 487, 999]] == pytest.approx([0, 0.00979, 0.02], abs=1.5e-5)


def test_diffusers_ddim_full_loop_without_noise():
    """diffusers' test_full_loop_no_noise: dummy model x t / (t + 1), 10 DDIM steps, x0 clipped to [-1, 1]."""
    x = (np.arange(768).reshape(3, 8, 8, 4) / 768).transpose(3, 0, 1, 2)
    ts = ddim_timesteps(1000, 10)
    for t, s in zip(ts, ts[1:] + [-1]):
        x = ddim_step(LINEAR, x, t, s, x * t / (t + 1), clip=1.0)
    assert np.abs(x).sum() == pytest.approx(172.0067, abs=1e-2) and np.abs(x).mean() == pytest.approx(0.223967, abs=1e-3)


def test_ddim_with_eta_one_on_consecutive_steps_is_the_ddpm_posterior():
    rng = np.random.default_rng(1)
    x, eps = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    for t in (999, 487, 5, 1):
        want = LINEAR.posterior_mean(LINEAR.x0_from_eps(x, t, eps), x, t)
        got = ddim_step(LINEAR, x, t, t - 1, eps, eta=1.0, rng=np.random.default_rng(5))
        noise = np.random.default_rng(5).standard_normal(x.shape)          # the same draw the step made
        sigma = math.sqrt(LINEAR.posterior_variance[t])                     # DDPM's "small" variance
        np.testing.assert_allclose(got - sigma * noise, want, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ddpm_step(LINEAR, x, t, eps, np.random.default_rng(5)), got, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddim", 1000), ("ddim", 50), ("ddim", 7)])
def test_every_sampler_returns_x0_with_an_oracle_denoiser(sampler, steps):
    rng = np.random.default_rng(2)
    x0 = rng.uniform(-1, 1, size=(3, 5))
    got = sample(oracle(LINEAR, x0), LINEAR, x0.shape, np.random.default_rng(3), sampler, steps)
    np.testing.assert_allclose(got, x0, rtol=0, atol=1e-9)


def test_ddim_eta0_recovers_x0_on_an_arbitrary_subsequence():
    rng = np.random.default_rng(4)
    x0, eps = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    seq = [999, 700, 333, 120, 5, -1]
    x = LINEAR.q_sample(x0, 999, eps)
    for t, s in zip(seq, seq[1:]):
        x = ddim_step(LINEAR, x, t, s, oracle(LINEAR, x0)(x, t))
    np.testing.assert_allclose(x, x0, atol=1e-9)


def test_ddim_inversion_then_generation_returns_the_data_with_the_exact_denoiser_of_gaussian_data():
    """Data N(0, c^2) in each coordinate: the exact eps_hat(x_t, t) = sqrt(1 - ab) x_t / (ab c^2 + 1 - ab) depends
    on x_t only (unlike an oracle that knows x_0, which would return x_0 from ANY x_T), so the round trip
    x_0 -> ddim_invert -> DDIM back can only succeed if inversion follows the same path; its error
    shrinks as the steps get smaller (inversion uses eps at the step it leaves, an approximation)."""
    c = 0.5

    def exact(x, t):
        ab = LINEAR.alpha_bar[t]
        return math.sqrt(1 - ab) * x / (ab * c * c + 1 - ab)
    x0 = np.random.default_rng(5).normal(0, c, size=(200, 2))
    errors = {}
    for steps in (50, 1000):
        x_T = ddim_invert(exact, LINEAR, x0, steps=steps)
        assert abs(x_T.std() - 1) < 0.2                       # the inverted points look like the noise
        back = sample(exact, LINEAR, x0.shape, None, "ddim", steps, x_T=x_T)
        errors[steps] = np.abs(back - x0).max()
    assert errors[1000] < 0.05 * c and errors[1000] < errors[50], errors


def test_samplers_with_the_optimal_denoiser_of_gaussian_data_draw_that_gaussian():
    """Data x_0 ~ N(0, c^2): the MMSE noise estimate is E[eps | x_t] = sqrt(1 - ab) x_t / (ab c^2 + 1 - ab).
    With all 1000 steps DDPM (either variance) and DDIM end with standard deviation c; DDIM with 50 big
    steps is a coarser discretisation of the same ODE and lands further off (under-dispersed)."""
    c = 0.5

    def optimal(x, t):
        ab = LINEAR.alpha_bar[t]
        return math.sqrt(1 - ab) * x / (ab * c * c + 1 - ab)
    errors = {}
    for sampler, steps, variance in (("ddpm", None, "small"), ("ddpm", None, "large"), ("ddim", 1000, "small"),
                                     ("ddim", 50, "small")):
        x = sample(optimal, LINEAR, (20_000,), np.random.default_rng(6), sampler, steps, variance=variance)
        assert abs(x.mean()) < 0.02
        errors[(sampler, steps, variance)] = abs(x.std() / c - 1)
    assert max(errors[k] for k in list(errors)[:3]) < 0.015, errors       # 20,000 draws: std's error ~0.5 %
    assert errors[("ddim", 50, "small")] > errors[("ddim", 1000, "small")]


def test_guidance_zero_is_unconditional_and_one_is_conditional():
    cond, uncond = (lambda x, t: x + 1.0), (lambda x, t: 2 * x)
    x = np.arange(3.0)
    assert guided_denoiser(cond, uncond, 0.0)(x, 5).tolist() == uncond(x, 5).tolist()
    assert guided_denoiser(cond, uncond, 1.0)(x, 5).tolist() == cond(x, 5).tolist()
    np.testing.assert_allclose(guided_denoiser(cond, uncond, 3.0)(x, 5), uncond(x, 5) + 3 * (cond(x, 5) - uncond(x, 5)))


def test_bad_steps_are_named():
    with pytest.raises(ValueError, match=r"Schedule: t must be integer steps in 0\.\.999"):
        LINEAR.q_sample(np.zeros(2), 1000, np.zeros(2))
    with pytest.raises(ValueError, match="ddim_step: the next step s=5 must be below t=5"):
        ddim_step(LINEAR, np.zeros(2), 5, 5, np.zeros(2))
    with pytest.raises(ValueError, match="ddim_timesteps: steps=2000 is more than the T=1000"):
        ddim_timesteps(1000, 2000)


# --- the denoiser and its loss ----------------------------------------------------------------------------
def test_sinusoidal_embedding_formula_and_errors():
    from tinyvision.diffusion import sinusoidal_embedding
    emb = sinusoidal_embedding([0, 3, 999], 8)
    w = 10000.0 ** (-np.arange(4) / 4)
    np.testing.assert_allclose(emb[1], np.concatenate([np.sin(3 * w), np.cos(3 * w)]), rtol=1e-6)
    assert emb[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="sinusoidal_embedding: dim must be even"):
        sinusoidal_embedding([1], 7)


def test_mlp_denoiser_learns_the_noise_of_a_point_cloud():
    from tinyvision.diffusion import MLPDenoiser, as_denoiser, diffusion_loss
    from tinyvision.optim import AdamW
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(-1, 0.05, (500, 2)), rng.normal(1, 0.05, (500, 2))])
    sched = make_schedule("linear", 50)
    model = MLPDenoiser(hidden=64, depth=2, seed=0)
    opt = AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(300):
        loss = diffusion_loss(model, sched, data[rng.integers(0, len(data), 128)], rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-50:]) < 0.6 * np.mean(losses[:20])      # predicting zero scores 1
    x = sample(as_denoiser(model), sched, (400, 2), np.random.default_rng(1))
    near = np.minimum(np.abs(x - 1).max(1), np.abs(x + 1).max(1)) < 0.5
    assert near.mean() > 0.8                                        # the samples land on the two clusters
    with pytest.raises(ValueError, match=r"MLPDenoiser: x must be \(B, 2\) and t \(B,\)"):
        model(np.zeros((3, 2), np.float32), np.zeros(2, int))


# --- image denoisers ----------------------------------------------------------------------------------------
def test_dit_blocks_are_the_identity_at_initialisation_and_the_output_starts_at_zero():
    import tinyvision as tv
    from tinyvision.diffusion import DiT
    rng = np.random.default_rng(0)
    model = DiT(img_size=8, patch_size=2, dim=32, depth=2, heads=4, num_classes=10, seed=0)
    tokens = tv.Tensor(rng.standard_normal((3, 16, 32)).astype(np.float32))
    c = model.cond(np.array([0, 10, 99]), np.array([1, 2, 10]))
    for block in model.blocks:
        np.testing.assert_array_equal(block(tokens, c).numpy(), tokens.numpy())
    x = tv.Tensor(rng.standard_normal((3, 1, 8, 8)).astype(np.float32))
    out = model(x, np.array([0, 10, 99]), np.array([1, 2, 10]))
    assert out.shape == (3, 1, 8, 8) and not out.numpy().any()
    out.sum().backward()                                    # zero output, but the zero layers still learn
    assert np.abs(model.final.weight.grad).max() > 0 and all(b.ada.weight.grad is not None for b in model.blocks)


def test_unet_gradients_check_and_the_label_changes_the_output():
    import tinyvision as tv
    from tinyvision.diffusion import UNet
    from tinyvision.gradcheck import gradcheck_module
    model = UNet(ch=4, heads=2, groups=2, num_classes=3, seed=0).astype(np.float64)
    x = np.random.default_rng(1).standard_normal((2, 1, 4, 4))
    t, y = np.array([5, 40]), np.array([0, 3])
    names = ["inp.weight", "down.weight", "attn.qkv.weight", "up_block.cond.weight", "cond.labels.weight"]
    gradcheck_module(model, [x], names=names, call=lambda m, xt: m(xt, t, y))
    a = model(tv.Tensor(x), t, np.array([0, 0])).numpy()
    b = model(tv.Tensor(x), t, np.array([1, 1])).numpy()
    assert a.shape == (2, 1, 4, 4) and np.abs(a - b).max() > 1e-6
    with pytest.raises(ValueError, match=r"UNet: x must be \(B, C, H, W\) with even H and W"):
        model(tv.Tensor(np.zeros((1, 1, 5, 4))), np.array([1]))


def test_sampler_and_model_shape_mistakes_are_named():
    from tinyvision.diffusion import UNet
    import tinyvision as tv
    with pytest.raises(ValueError, match=r"sample: x_T has shape \(4, 5\), expected \(3, 2\)"):
        sample(lambda x, t: x, LINEAR, (3, 2), None, "ddim", 10, x_T=np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"sample: denoise\(x, t=999\) returned shape \(1,\), expected x's shape \(3, 2\)"):
        sample(lambda x, t: np.zeros(1), LINEAR, (3, 2), np.random.default_rng(0))
    with pytest.raises(ValueError, match="sample: DDPM takes every one of the T steps"):
        sample(lambda x, t: x, LINEAR, (3, 2), np.random.default_rng(0), "ddpm", steps=10)
    with pytest.raises(ValueError, match="make_schedule: beta_start 0.02 is above beta_end 0.0001"):
        make_schedule("linear", 1000, beta_start=0.02, beta_end=1e-4)
    unconditional = UNet(ch=4, heads=2, groups=2, seed=0)
    with pytest.raises(ValueError, match="UNet: a condition y was given to a model built without num_classes"):
        unconditional(tv.Tensor(np.zeros((1, 1, 4, 4), np.float32)), np.array([1]), np.array([3]))
    with pytest.raises(ValueError, match=r"UNet: t must hold one step per image, shape \(1,\), got \(2,\)"):
        unconditional(tv.Tensor(np.zeros((1, 1, 4, 4), np.float32)), np.array([1, 2]))


def test_dit_with_a_context_vector_the_zero_vector_is_no_caption_and_dropout_sets_it():
    import tinyvision as tv
    from tinyvision.diffusion import DiT
    from tinyvision.gradcheck import gradcheck_module
    rng = np.random.default_rng(0)
    model = DiT(img_size=4, patch_size=1, in_chans=2, dim=8, depth=1, heads=2, context_dim=5, seed=0)
    for block in model.blocks:                              # leave adaLN-Zero, so that the context matters
        block.ada.weight.data[...] = rng.standard_normal(block.ada.weight.shape).astype(np.float32) * 0.1
    model.final.weight.data[...] = rng.standard_normal(model.final.weight.shape).astype(np.float32) * 0.1
    model = model.astype(np.float64)
    x, t = rng.standard_normal((3, 2, 4, 4)), np.array([0, 7, 99])
    ctx = rng.standard_normal((3, 5))
    none = model(tv.Tensor(x), t).numpy()
    np.testing.assert_array_equal(none, model(tv.Tensor(x), t, np.zeros((3, 5))).numpy())
    assert np.abs(model(tv.Tensor(x), t, ctx).numpy() - none).max() > 1e-6
    dropped = model.drop_condition(tv.Tensor(ctx, dtype=np.float64), np.array([True, False, True]))  # a Tensor too
    assert not dropped[[0, 2]].any() and np.array_equal(dropped[1], ctx[1]) and ctx[0].any()   # a copy
    gradcheck_module(model, [x], names=["cond.context.weight", "blocks.0.ada.weight", "final.weight"],
                     call=lambda m, xt: m(xt, t, ctx))
    with pytest.raises(ValueError, match=r"DiT: the context y must be \(3, 5\), one vector per example, got shape \(3, 4\)"):
        model(tv.Tensor(x), t, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="DiT: a denoiser is conditioned on class labels .* or on vectors .*, not both"):
        DiT(num_classes=10, context_dim=4, seed=0)


def test_label_dropout_in_the_loss_uses_the_null_class():
    from tinyvision.diffusion import DiT, diffusion_loss
    model = DiT(img_size=4, patch_size=2, dim=8, depth=1, heads=2, num_classes=3, seed=0)
    y = np.array([0, 1, 2, 1])
    assert model.drop_condition(y, np.array([1, 0, 0, 1], bool)).tolist() == [3, 1, 2, 3] and y.tolist() == [0, 1, 2, 1]
    seen = []
    forward = model.forward
    model.forward = lambda x, t, y=None: (seen.append(np.array(y)), forward(x, t, y))[1]
    x0 = np.zeros((4, 1, 4, 4))
    diffusion_loss(model, LINEAR, x0, np.random.default_rng(0), y=y, p_uncond=1.0).backward()
    diffusion_loss(model, LINEAR, x0, np.random.default_rng(0), y=y, p_uncond=0.0)
    assert seen[0].tolist() == [3, 3, 3, 3] and seen[1].tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError, match="diffusion_loss: p_uncond drops conditions, but no condition y was given"):
        diffusion_loss(model, LINEAR, x0, np.random.default_rng(0), p_uncond=0.1)
    with pytest.raises(ValueError, match="diffusion_loss: y has 2 conditions for 4 examples"):
        diffusion_loss(model, LINEAR, x0, np.random.default_rng(0), y=y[:2])


@given(t=st.integers(1, 999), s_gap=st.integers(1, 200), seed=st.integers(0, 2 ** 16))
@settings(max_examples=30, deadline=None)
def test_ddim_with_clipped_eps_steps_along_the_clipped_x0(t, s_gap, seed):
    rng = np.random.default_rng(seed)
    x, eps = rng.standard_normal(50) * 3, rng.standard_normal(50) * 3        # x0_hat mostly outside [-1, 1]
    s = max(t - s_gap, -1)
    ab_t = LINEAR.alpha_bar[t]
    ab_s = LINEAR.alpha_bar[s] if s >= 0 else 1.0
    x0 = np.clip((x - np.sqrt(1 - ab_t) * eps) / np.sqrt(ab_t), -1, 1)
    eps_c = (x - np.sqrt(ab_t) * x0) / np.sqrt(1 - ab_t)
    got = ddim_step(LINEAR, x, t, s, eps, clip=1.0, clipped_eps=True)
    np.testing.assert_allclose(got, np.sqrt(ab_s) * x0 + np.sqrt(1 - ab_s) * eps_c, rtol=1e-10, atol=1e-12)
    kept = ddim_step(LINEAR, x, t, s, eps, clip=1.0)                           # diffusers' default
    with pytest.raises(ValueError, match="ddim_step: clipped_eps=True recomputes eps from a clipped x0_hat; pass clip"):
        ddim_step(LINEAR, x, t, s, eps, clipped_eps=True)
    np.testing.assert_allclose(kept, np.sqrt(ab_s) * x0 + np.sqrt(1 - ab_s) * eps, rtol=1e-10, atol=1e-12)
    inside = np.clip(x0, -0.5, 0.5)                  # an x_t whose x0_hat needs no clipping: both agree
    x_in = np.sqrt(ab_t) * inside + np.sqrt(1 - ab_t) * eps
    np.testing.assert_allclose(ddim_step(LINEAR, x_in, t, s, eps, clip=1.0, clipped_eps=True),
                               ddim_step(LINEAR, x_in, t, s, eps, clip=1.0), rtol=1e-9, atol=1e-12)


@given(t=st.integers(0, 999), seed=st.integers(0, 2 ** 16))
@settings(max_examples=30, deadline=None)
def test_eps_x0_and_v_determine_each_other_given_x_t(t, seed):
    rng = np.random.default_rng(seed)
    x0, eps = rng.standard_normal(20), rng.standard_normal(20)
    xt = LINEAR.q_sample(x0, t, eps)
    v = LINEAR.v_target(x0, t, eps)
    np.testing.assert_allclose(LINEAR.eps_from_v(xt, t, v), eps, rtol=1e-9, atol=1e-9)
    a, s = math.sqrt(LINEAR.alpha_bar[t]), math.sqrt(1 - LINEAR.alpha_bar[t])
    np.testing.assert_allclose(a * xt - s * v, x0, rtol=1e-9, atol=1e-9)          # and x_0 = a x_t - s v
    if LINEAR.alpha_bar[t] > 1e-3:     # x_0 from eps divides by sqrt(abar_t): well conditioned away from the end
        np.testing.assert_allclose(LINEAR.eps_from_x0(xt, t, x0), eps, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_each_prediction_target_trains_to_zero_loss_with_an_oracle_and_samples_x0(prediction):
    """A model that knows x_0 and outputs the target of `prediction` has zero loss, and as_denoiser turns its
    output back into the eps with which every sampler returns x_0."""
    from tinyvision.diffusion import as_denoiser, diffusion_loss
    import tinyvision as tv
    x0 = np.random.default_rng(0).uniform(-1, 1, (6, 3))

    class Oracle:
        def __call__(self, x, t):
            xt = x.numpy().astype(np.float64)
            eps = LINEAR.eps_from_x0(xt, t, x0)
            out = {"eps": eps, "x0": x0, "v": LINEAR.v_target(x0, t, eps)}[prediction]
            return tv.Tensor(out.astype(np.float32))
    oracle = Oracle()
    assert diffusion_loss(oracle, LINEAR, x0, np.random.default_rng(1), prediction=prediction).item() < 1e-6
    other = {"eps": "x0", "x0": "v", "v": "eps"}[prediction]
    assert diffusion_loss(oracle, LINEAR, x0, np.random.default_rng(1), prediction=other).item() > 1e-2
    got = sample(as_denoiser(oracle, prediction=prediction, schedule=LINEAR), LINEAR, x0.shape,
                 np.random.default_rng(2), "ddim", 20)
    np.testing.assert_allclose(got, x0, atol=2e-4)          # the oracle's output passes through float32
    with pytest.raises(ValueError, match="as_denoiser: prediction='x0' needs the schedule"):
        as_denoiser(oracle, prediction="x0")
    with pytest.raises(ValueError, match="diffusion_loss: prediction must be one of"):
        diffusion_loss(oracle, LINEAR, x0, np.random.default_rng(1), prediction="noise")
