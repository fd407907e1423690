"""Optimizers, clipping, weight-decay groups and the lr schedule against their written formulas.

Every update rule is checked against a float64 NumPy transcription of the formula from its
paper (or from PyTorch's documentation where PyTorch defines it), over several steps, with
fresh random gradients at every step. The update tests run once per implementation (the NumPy
reference and the fused Numba kernel, chosen with tinyvision.kernels.use), each against the
formula, and check that the implementation they name is the one that ran: under "auto" only
the fastest would be tested, and a wrong reference could pass unseen.
"""
import contextlib
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels, nn
from tinyvision.optim import (SGD, Adam, AdamW, WarmupCosine, clip_grad_norm, param_groups_no_decay,
                              warmup_cosine)

SHAPES = [(3, 4), (5,), ()]  # a matrix, a vector, a scalar: every shape an optimizer meets
IMPLEMENTATIONS = ["reference", "numba"]   # every implementation of the optimizer updates


@contextlib.contextmanager
def running(impl):
    """kernels.use(impl) for the block; yields the list of calls the fused Adam kernel received.

    A test that steps Adam or AdamW asserts, with `check_ran`, that the fused kernel was called
    under "numba" and never under "reference", so each run tests the implementation it names.
    """
    why = kernels.why_unavailable(impl)
    if why is not None:
        pytest.skip(f"the {impl} kernels do not load here: {why}")
    fused = kernels.kernel("adamw", "numba") if kernels.why_unavailable("numba") is None else None
    calls, original = [], fused.update if fused is not None else None

    def counted(*args, **kwargs):
        calls.append(args[0].dtype)
        return original(*args, **kwargs)

    if fused is not None:
        fused.update = counted
    try:
        with kernels.use(impl):
            yield calls
    finally:
        if fused is not None:
            fused.update = original


def check_ran(impl, calls):
    if impl == "numba":
        assert calls, "the fused Numba Adam kernel was never called under kernels.use('numba')"
    else:
        assert not calls, f"the fused kernel ran {len(calls)} times under kernels.use({impl!r})"


def make_params(seed, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(s), dtype=np.float64) for s in shapes]


def random_grads(rng, params):
    return [rng.standard_normal(p.shape) for p in params]


def run_steps(optimizer, params, grads_per_step):
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = g.copy()
        optimizer.step()


# --- reference formulas, float64 NumPy ---------------------------------------------------------
def sgd_reference(p0, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """torch.optim.SGD (dampening 0): b = mu b + g (b = g first), p -= lr (g + mu b | b)."""
    p, buf = p0.copy(), None
    for g in grads:
        g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def adam_reference(p0, grads, lr, betas, eps, weight_decay, decoupled):
    """Kingma & Ba 2015, Algorithm 1; decay as L2 (Adam) or decoupled (Loshchilov & Hutter 2019)."""
    (b1, b2), p = betas, p0.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p - lr * weight_decay * p
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def check_against_reference(make_optimizer, reference, steps=4, seed=0):
    params = make_params(seed)
    start = [p.data.copy() for p in params]
    rng = np.random.default_rng(seed + 1)
    grads_per_step = [random_grads(rng, params) for _ in range(steps)]
    run_steps(make_optimizer(params), params, grads_per_step)
    for i, (p, p0) in enumerate(zip(params, start)):
        expected = reference(p0, [grads[i] for grads in grads_per_step])
        np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-14, err_msg=f"parameter {i}, shape {p.shape}")


# --- SGD ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    dict(lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1),
], ids=["plain", "momentum", "nesterov", "momentum_decay", "nesterov_decay"])
def test_sgd_steps_equal_pytorch_formulas(kwargs, impl):
    with running(impl):
        check_against_reference(lambda ps: SGD(ps, **kwargs), lambda p0, gs: sgd_reference(p0, gs, **kwargs), steps=5)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_sgd_first_momentum_step_is_a_plain_step(impl):
    """b_1 = g_1, so the first heavy-ball step is p - lr g, whatever the momentum."""
    (p,) = make_params(0, [(4,)])
    p0, g = p.data.copy(), np.arange(4.0)
    p.grad = g.copy()
    with running(impl):
        SGD([p], lr=0.5, momentum=0.9).step()
    np.testing.assert_array_equal(p.data, p0 - 0.5 * g)


# --- Adam and AdamW ----------------------------------------------------------------------------
adam_settings = st.fixed_dictionaries({
    "lr": st.floats(1e-4, 0.5),
    "betas": st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 0.9999)),
    "eps": st.sampled_from([1e-8, 1e-3, 0.1]),
    "weight_decay": st.sampled_from([0.0, 0.01, 0.5]),
})


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@given(settings=adam_settings, seed=st.integers(0, 2**16))
def test_adam_steps_equal_algorithm_1_with_l2(impl, settings, seed):
    with running(impl) as calls:
        check_against_reference(lambda ps: Adam(ps, **settings),
                                lambda p0, gs: adam_reference(p0, gs, decoupled=False, **settings), seed=seed)
    check_ran(impl, calls)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@given(settings=adam_settings, seed=st.integers(0, 2**16))
def test_adamw_steps_equal_decoupled_decay_then_adam(impl, settings, seed):
    with running(impl) as calls:
        check_against_reference(lambda ps: AdamW(ps, **settings),
                                lambda p0, gs: adam_reference(p0, gs, decoupled=True, **settings), seed=seed)
    check_ran(impl, calls)


def _final_weights(impl, optimizer_class, weight_decay, steps=3):
    params = make_params(0)
    rng = np.random.default_rng(1)
    with running(impl) as calls:
        run_steps(optimizer_class(params, lr=0.01, weight_decay=weight_decay), params,
                  [random_grads(rng, params) for _ in range(steps)])
    check_ran(impl, calls)
    return [p.data for p in params]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_adamw_decay_is_decoupled_so_it_differs_from_adam_l2(impl):
    adam, adamw = _final_weights(impl, Adam, 0.1), _final_weights(impl, AdamW, 0.1)
    for a, w in zip(adam, adamw):
        assert np.max(np.abs(a - w)) > 1e-6, "AdamW with weight_decay > 0 must not equal Adam with L2"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_adamw_without_decay_equals_adam_bitwise(impl):
    for a, w in zip(_final_weights(impl, Adam, 0.0), _final_weights(impl, AdamW, 0.0)):
        np.testing.assert_array_equal(a, w)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_adam_counts_steps_per_parameter(impl):
    """A parameter first updated at step 3 gets the bias correction of ITS first step (t = 1)."""
    a, b = make_params(0, [(3,), (3,)])
    opt = Adam([a, b], lr=0.1)
    b0, g = b.data.copy(), np.array([1.0, -2.0, 3.0])
    with running(impl) as calls:
        for _ in range(2):
            a.grad = np.ones(3)
            opt.step()
        b.grad = g.copy()
        opt.step()
    check_ran(impl, calls)
    np.testing.assert_allclose(b.data, adam_reference(b0, [g], 0.1, (0.9, 0.999), 1e-8, 0.0, False), rtol=1e-12)


# --- groups and weight decay -----------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_step_skips_parameters_without_gradient(impl):
    a, b = make_params(0, [(2,), (2,)])
    b0 = b.data.copy()
    opt = AdamW([a, b], lr=0.1, weight_decay=0.5)
    a.grad = np.ones(2)
    with running(impl) as calls:
        opt.step()
    check_ran(impl, calls)
    np.testing.assert_array_equal(b.data, b0)  # not even decayed
    assert id(b) not in opt.state


def test_group_overrides_default_hyperparameters():
    a, b = make_params(0, [(2,), (2,)])
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a0, b0 = a.data.copy(), b.data.copy()
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, a0 - 0.1)
    np.testing.assert_allclose(b.data, b0 - 1.0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_zero_grad_param_is_decayed_by_adamw_only_in_the_decay_group(impl):
    decayed, exempt = make_params(0, [(3, 3), (3,)])
    d0, e0 = decayed.data.copy(), exempt.data.copy()
    opt = AdamW([{"params": [decayed], "weight_decay": 0.1}, {"params": [exempt], "weight_decay": 0.0}], lr=0.01)
    with running(impl) as calls:
        for _ in range(3):
            decayed.grad, exempt.grad = np.zeros((3, 3)), np.zeros(3)
            opt.step()
    check_ran(impl, calls)
    np.testing.assert_array_equal(exempt.data, e0)
    np.testing.assert_allclose(decayed.data, d0 * (1 - 0.01 * 0.1) ** 3, rtol=1e-12)


class TinyClip(nn.Module):
    """A projection plus CLIP's scalar logit_scale = ln(1/0.07)."""

    def __init__(self):
        self.proj = nn.Linear(4, 4, seed=0)
        self.logit_scale = nn.Parameter(np.array(math.log(1 / 0.07), dtype=np.float32))


def test_param_groups_no_decay_puts_matrices_in_decay_and_the_rest_in_no_decay():
    block = nn.TransformerBlock(16, 4, seed=0)
    decay, no_decay = param_groups_no_decay(block, 0.05)
    names = {id(p): name for name, p in block.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == sorted(
        ["attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"])
    assert sorted(names[id(p)] for p in no_decay["params"]) == sorted(
        ["norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
         "attn.qkv.bias", "attn.proj.bias", "mlp.fc1.bias", "mlp.fc2.bias"])


def test_param_groups_no_decay_exempts_clip_logit_scale_and_named_skips():
    model = TinyClip()
    decay, no_decay = param_groups_no_decay(model, 0.1)
    assert [p is model.logit_scale for p in no_decay["params"]].count(True) == 1
    assert all(p is not model.logit_scale for p in decay["params"])
    decay, no_decay = param_groups_no_decay(model, 0.1, skip=("proj.weight",))
    assert decay["params"] == [] and len(no_decay["params"]) == 3
    AdamW([decay, no_decay])  # an empty group is allowed as long as some group has parameters


def test_scalar_parameter_with_grad_from_backward_is_updated_and_clipped():
    """A 0-d parameter's gradient from backward() may be a NumPy scalar, which in-place ops ignore."""
    model = TinyClip()
    s0 = float(model.logit_scale.data)
    opt = SGD([model.logit_scale], lr=0.1, momentum=0.9, weight_decay=0.01)
    for step in range(2):
        (model.logit_scale * tv.Tensor(np.full(3, 100.0, dtype=np.float32))).sum().backward()
        assert clip_grad_norm([model.logit_scale], 1.0) == pytest.approx(300.0)
        assert abs(float(model.logit_scale.grad)) == pytest.approx(1.0, rel=1e-5)
        opt.step()
        opt.zero_grad()
    # b1 = g1 + wd s0, b2 = 0.9 b1 + g2 + wd s1 with clipped g = 1: p moves by 0.1 (b1 + b2)
    s1 = s0 - 0.1 * (1 + 0.01 * s0)
    b2 = 0.9 * (1 + 0.01 * s0) + 1 + 0.01 * s1
    assert float(model.logit_scale.data) == pytest.approx(s1 - 0.1 * b2, rel=1e-5)


# --- gradient clipping -----------------------------------------------------------------------
def global_norm(params):
    return math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params if p.grad is not None))


@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 100.0), max_norm=st.floats(0.1, 10.0))
def test_clip_grad_norm_returns_preclip_norm_and_clips_to_max_norm(seed, scale, max_norm):
    params = make_params(seed)
    rng = np.random.default_rng(seed)
    for p in params:
        p.grad = scale * rng.standard_normal(p.shape)
    params.append(nn.Parameter(np.zeros(2)))  # no gradient: skipped
    before = [None if p.grad is None else p.grad.copy() for p in params]
    norm = clip_grad_norm(params, max_norm)
    assert norm == pytest.approx(math.sqrt(sum(np.sum(g ** 2) for g in before if g is not None)), rel=1e-12)
    if norm > max_norm:
        assert global_norm(params) == pytest.approx(max_norm, rel=1e-5)
        factor = params[0].grad.ravel()[0] / before[0].ravel()[0]
        for p, g in zip(params[:-1], before):  # one factor for all: the direction is kept
            np.testing.assert_allclose(p.grad, factor * g, rtol=1e-12)
    else:
        for p, g in zip(params[:-1], before):
            np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_norm_raises_on_non_finite_gradients():
    a, b = make_params(0, [(2,), (3,)])
    a.grad, b.grad = np.ones(2), np.array([1.0, np.nan, 0.0])
    with pytest.raises(FloatingPointError, match=r"params\[1\] \(3,\)"):
        clip_grad_norm([a, b], 1.0)
    b.grad = np.array([np.inf, 0.0, 0.0])
    with pytest.raises(FloatingPointError, match="inf"):
        clip_grad_norm([a, b], 1.0)


# --- the schedule ----------------------------------------------------------------------------
def test_warmup_cosine_values_at_landmarks():
    kw = dict(total_steps=110, warmup_steps=10, base_lr=1.0, min_lr=0.1)
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)          # (0 + 1) / 10, not 0
    assert warmup_cosine(4, **kw) == pytest.approx(0.5)
    assert warmup_cosine(9, **kw) == pytest.approx(1.0)          # the last warm-up step reaches base_lr
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)         # cosine starts at base_lr
    assert warmup_cosine(60, **kw) == pytest.approx(0.55)        # midpoint: (base + min) / 2
    assert warmup_cosine(110, **kw) == pytest.approx(0.1)        # the end: min_lr
    assert warmup_cosine(10_000, **kw) == 0.1                    # past the end: stays at min_lr
    assert warmup_cosine(0, total_steps=100, warmup_steps=0, base_lr=2.0) == 2.0


@given(total=st.integers(1, 200), warmup_frac=st.floats(0, 1), base=st.floats(1e-5, 1.0), min_frac=st.floats(0, 1))
def test_warmup_cosine_stays_between_zero_and_base_and_decays_monotonically(total, warmup_frac, base, min_frac):
    warmup, min_lr = int(warmup_frac * total), min_frac * base
    lrs = [warmup_cosine(s, total, warmup, base, min_lr) for s in range(total + 3)]
    assert all(0 < lr <= base * (1 + 1e-12) for lr in lrs[:total])
    decay = lrs[warmup:]
    assert all(a >= b - 1e-15 for a, b in zip(decay, decay[1:])), "the cosine part must not increase"
    assert lrs[total:] == [min_lr] * 3


def test_warmup_cosine_scheduler_sets_every_group_from_its_own_base_lr():
    a, b = make_params(0, [(2,), (2,)])
    opt = SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=0.5)
    scheduler = WarmupCosine(opt, total_steps=20, warmup_steps=4)
    for step in range(25):
        lr = scheduler.step()
        assert lr == opt.param_groups[0]["lr"] == warmup_cosine(step, 20, 4, 1.0)
        assert opt.param_groups[1]["lr"] == warmup_cosine(step, 20, 4, 0.1)


# --- saving and resuming ---------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1)], ids=["sgd", "adamw"])
def test_state_dict_round_trip_gives_identical_next_steps(make):
    rng = np.random.default_rng(0)
    params = make_params(0)
    grads = [random_grads(rng, params) for _ in range(6)]
    opt = make(params)
    run_steps(opt, params, grads[:3])
    saved_weights, saved_state = [p.data.copy() for p in params], opt.state_dict()
    assert all(isinstance(v, (int, float, bool, np.ndarray)) for v in saved_state.values())

    resumed = make_params(1)  # other values, overwritten below
    for p, w in zip(resumed, saved_weights):
        p.data = w.copy()
    resumed_opt = make(resumed)
    resumed_opt.load_state_dict(saved_state)
    run_steps(opt, params, grads[3:])
    run_steps(resumed_opt, resumed, grads[3:])
    for p, q in zip(params, resumed):
        np.testing.assert_array_equal(p.data, q.data)


def test_load_state_dict_rejects_wrong_shapes_and_keys_before_changing_anything():
    params = make_params(0)
    opt = Adam(params, lr=0.1)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    state = opt.state_dict()
    other = Adam(make_params(0, [(4, 3), (5,), ()]), lr=0.5)
    with pytest.raises(ValueError, match=r"state\.0\.exp_avg has shape \(3, 4\).*\(4, 3\)"):
        other.load_state_dict(state)
    assert other.param_groups[0]["lr"] == 0.5 and other.state == {}
    with pytest.raises(KeyError, match="momentum_buffer"):
        Adam(make_params(0), lr=0.1).load_state_dict({**state, "state.0.momentum_buffer": np.ones((3, 4))})
    with pytest.raises(KeyError, match=r"param_groups\.0\.lr"):
        Adam(make_params(0), lr=0.1).load_state_dict({k: v for k, v in state.items() if k != "param_groups.0.lr"})


# --- argument checking -----------------------------------------------------------------------
def _one():
    return make_params(0, [(2,)])


@pytest.mark.parametrize("build, message", [
    (lambda: SGD(_one(), lr=-0.1), r"lr must be .*got -0\.1"),
    (lambda: SGD(_one(), lr=float("nan")), r"lr must be .*got nan"),
    (lambda: SGD(_one(), lr=0.1, momentum=-0.5), r"momentum must be .*got -0\.5"),
    (lambda: SGD(_one(), lr=0.1, nesterov=True), r"nesterov=True needs momentum > 0"),
    (lambda: SGD(_one(), lr=0.1, weight_decay=-1), r"weight_decay must be .*got -1"),
    (lambda: Adam(_one(), betas=(1.0, 0.999)), r"betas\[0\] must be .*\[0.0, 1.0\).*got 1\.0"),
    (lambda: Adam(_one(), betas=(0.9, -0.1)), r"betas\[1\] must be .*got -0\.1"),
    (lambda: Adam(_one(), betas=(0.9,)), r"betas must be a pair"),
    (lambda: AdamW(_one(), eps=-1e-8), r"eps must be .*got -1e-08"),
    (lambda: AdamW([], lr=0.1), r"params is empty"),
    (lambda: AdamW([{"params": []}]), r"params is empty"),
    (lambda: AdamW([{"params": _one(), "weight_deacy": 0.1}]), r"unknown keys \['weight_deacy'\]"),
    (lambda: AdamW([{"params": _one(), "lr": -1.0}]), r"param_groups\[0\]: lr must be .*got -1\.0"),
    (lambda: clip_grad_norm(_one(), -1.0), r"max_norm must be .*got -1\.0"),
    (lambda: param_groups_no_decay(TinyClip(), -0.1), r"weight_decay must be .*got -0\.1"),
    (lambda: param_groups_no_decay(TinyClip(), 0.1, skip=("pos_embed",)), r"\['pos_embed'\]"),
    (lambda: warmup_cosine(-1, 10, 2, 1.0), r"step must be an int >= 0, got -1"),
    (lambda: warmup_cosine(0, 10, 11, 1.0), r"warmup_steps \(11\) must be <= total_steps \(10\)"),
    (lambda: warmup_cosine(0, 0, 0, 1.0), r"total_steps must be an int >= 1, got 0"),
    (lambda: warmup_cosine(0, 10, 2, 1.0, min_lr=2.0), r"min_lr \(2\.0\) must be <= base_lr \(1\.0\)"),
    (lambda: WarmupCosine(SGD(_one(), lr=0.1), total_steps=10, warmup_steps=2, min_lr=0.5), r"min_lr \(0\.5\)"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_parameter_in_two_groups_is_rejected():
    (p,) = _one()
    with pytest.raises(ValueError, match=r"appears twice, in param_groups\[0\] and param_groups\[1\]"):
        SGD([{"params": [p]}, {"params": [p], "lr": 1.0}], lr=0.1)


def test_common_params_mistakes_raise_type_error():
    model = TinyClip()
    with pytest.raises(TypeError, match=r"model\.parameters\(\)"):
        SGD(model.parameters, lr=0.1)
    with pytest.raises(TypeError, match="wrap it in a list"):
        SGD(model.logit_scale, lr=0.1)
    x = tv.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="not a leaf"):
        SGD([x * 2], lr=0.1)


# --- it actually trains ----------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_adamw_fits_a_linear_least_squares_problem(impl):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    true_w, true_b = rng.standard_normal((5, 2)), rng.standard_normal(2)
    y = (x @ true_w + true_b).astype(np.float32)
    layer = nn.Linear(5, 2, seed=0)
    opt = AdamW(param_groups_no_decay(layer, 1e-4), lr=0.05)
    scheduler = WarmupCosine(opt, total_steps=300, warmup_steps=20)
    first = None
    with running(impl) as calls:
        for _ in range(300):
            loss = F.mse_loss(layer(tv.Tensor(x)), tv.Tensor(y))
            first = first if first is not None else loss.item()
            opt.zero_grad()
            loss.backward()
            clip_grad_norm(layer.parameters(), 10.0)
            scheduler.step()
            opt.step()
    check_ran(impl, calls)
    assert first > 1.0 and loss.item() < 1e-3, f"loss went from {first} to {loss.item()}"


def test_clip_grad_norm_counts_a_repeated_parameter_once():
    from tinyvision import nn as _nn
    from tinyvision.optim import clip_grad_norm as _clip
    p = _nn.Parameter(np.zeros(2))
    p.grad = np.array([3.0, 4.0])
    assert _clip([p, p], 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(np.linalg.norm(p.grad), 1.0, rtol=1e-5)
