"""Lesson 08: diffusion, on points in the plane and then on digits drawn to order (classifier-free guidance).

Run:  python lessons/08_diffusion.py            (full: about 2.5 minutes on 2 CPU cores)
      python lessons/08_diffusion.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    A GAN paints in one shot and a VAE decodes a code; both must get the whole picture right at once.
    Diffusion (Sohl-Dickstein et al. 2015; Ho et al. 2020) splits painting into many small, easy steps.
    Destroying data is trivial: add a little Gaussian noise, again and again, until only noise is left.
    Undoing ONE small step is a simple regression: guess the noise that was added. Chain the learned
    small steps from pure noise backwards, and noise becomes data. Here the data are 2-D points (two
    moons), so every step can be drawn.

The idea (tinyvision/diffusion: schedules.py, sampling.py, denoisers.py)
    1. Forward: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, in one jump for any t; abar_t, the signal
       left, falls from ~1 to ~0 over T steps (the schedule).
    2. Train eps_theta(x_t, t) to predict eps: mean squared error, t drawn uniformly (L_simple).
    3. Sample: start from x_T ~ N(0, I); DDPM takes all T steps, each adding fresh noise; DDIM (Song et
       al. 2021) takes a deterministic path through a subset of the steps, so far fewer network calls.
    4. What the network learned is a score: -eps_theta / sqrt(1 - abar_t) is the gradient of log p(x_t),
       an arrow field pointing from noise towards the data.
    5. Asking for a class (Ho & Salimans 2022): one network, a DiT (tinyvision/diffusion/unet.py: the
       ViT's blocks, steered by adaptive layer norm), learns eps(x_t, t, label) and, with the label
       dropped 10 % of the time, eps(x_t, t) too. At sampling, classifier-free guidance mixes them:
           eps = eps_uncond + w (eps_cond - eps_uncond)
       w = 0 ignores the label, w = 1 is the conditional model, w > 1 pushes further along the
       direction "more like this class". Our digit judge (lessons 06, 07) says which digit each sample is.

What to look at
    - The schedule pitfall: a linear schedule with few steps, unscaled, never reaches pure noise.
    - The distance between samples and data (energy distance; 0 for identical laws), against two
      references: fresh data (the floor) and pure noise.
    - DDPM with all steps against DDIM with fewer: time and quality side by side.
    - The arrows of the score field near the data.
    - Digits: the share of "draw a 7" samples judged a 7, for w = 0 .. 5; and a trap: clipping x0_hat to
      the pixel range while keeping the model's eps (diffusers' default) breaks strongly guided DDIM.
    - DDPM's 1000 steps against DDIM with 10, 25, 50, 100: seconds, accuracy and the judge's Frechet
      distance side by side, at w = 1 (with stronger guidance every sampler scores near 100 %).

Exercises
    1. Train with T = 20 steps instead of 100. Where do the samples go wrong?
    2. Use the unscaled linear schedule (betas 1e-4..0.02 at T = 100) and sample from N(0, I): why are
       the samples too tight? (abar_T is printed in section 1.)
    3. Predict x_0 instead of eps: diffusion_loss(..., prediction="x0") and as_denoiser(model,
       prediction="x0", schedule=sched). Which one trains faster here? And "v"?
    4. Train the digit model with P_UNCOND = 0 and sample with w = 3. What does the "unconditional"
       half of guidance then compute, and what happens to the samples?
    5. Sample digits with eta = 1 in DDIM (fresh noise at every step) at 50 steps. Closer to DDPM?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import time

import numpy as np

from tinyvision.data import load_digits
from tinyvision.diffusion import (DiT, MLPDenoiser, as_denoiser, ddpm_step, diffusion_loss, guided_denoiser,
                                  make_schedule, sample)
from tinyvision.models.judge import energy_distance, frechet_distance, judge_digits
from tinyvision.optim import AdamW, WarmupCosine

from _common import (accuracy_margin, compare, digit_judge, one_blas_thread, optimise, parse_args, progress, pyplot,
                     save_figure)

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
T = 100
STEPS = 300 if QUICK else 4000
N_EVAL = 300 if QUICK else 2000


def moons(n, seed):
    """Two interleaved half circles (scikit-learn's make_moons), centred and scaled to about unit spread."""
    from sklearn.datasets import make_moons
    x, _ = make_moons(n, noise=0.05, random_state=seed)
    return (x - [0.5, 0.25]) / 0.8


data = moons(20_000 if not QUICK else 2000, args.seed)
print(f"data: {len(data)} points of two moons, std {data.std(0).round(2).tolist()} per axis")

# %% 1. The forward process and its schedule
sched = make_schedule("linear", T)
unscaled = np.cumprod(1 - np.linspace(1e-4, 0.02, T))[-1]
print(f"\n== 1. the forward process: linear schedule, T = {T}, betas rescaled by 1000 / T")
print(f"  signal left at the last step: abar_T = {sched.alpha_bar[-1]:.2e} (sqrt: {np.sqrt(sched.alpha_bar[-1]):.4f} "
      f"of x_0); the unscaled betas 1e-4..0.02 would leave abar_T = {unscaled:.3f}, "
      f"{np.sqrt(unscaled):.0%} of x_0's scale, where sampling assumes none")
rng = np.random.default_rng(args.seed)
snap_t = [0, 10, 25, 50, T - 1]
x0 = data[:1000]
fig, axes = pyplot().subplots(1, len(snap_t), figsize=(13, 2.8))
for ax, t in zip(axes, snap_t):
    xt = sched.q_sample(x0, t, rng.standard_normal(x0.shape))
    ax.scatter(xt[:, 0], xt[:, 1], s=2)
    ax.set_title(f"t = {t}: sqrt(abar) = {np.sqrt(sched.alpha_bar[t]):.2f}", fontsize=9)
    ax.set_xlim(-3.5, 3.5)
    ax.set_ylim(-3.5, 3.5)
    ax.set_aspect("equal")
save_figure(fig, args.out, "08_forward.png")

# %% 2. Train the denoiser
print(f"\n== 2. an MLP denoiser (sinusoidal embeddings of x, y and t; 3 residual GELU blocks of 128), "
      f"{STEPS} steps of 256 points, AdamW 1e-3")
model = MLPDenoiser(seed=args.seed)
opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
losses, start = [], time.perf_counter()
for step in (bar := progress(range(STEPS), "denoiser", unit="step")):
    loss = diffusion_loss(model, sched, data[rng.integers(0, len(data), 256)], rng)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
    if step % 100 == 0:
        bar.set_postfix(loss=f"{np.mean(losses[-100:]):.3f}")
train_seconds = time.perf_counter() - start
print(f"  loss (mean squared error of the noise; predicting 0 scores 1): first 100 steps {np.mean(losses[:100]):.3f}, "
      f"last 100 {np.mean(losses[-100:]):.3f}; {train_seconds:.0f} s")

# %% 3. Sampling: DDPM against DDIM with fewer steps
floor = energy_distance(moons(N_EVAL, args.seed + 1), moons(N_EVAL, args.seed + 2))
noise = energy_distance(np.random.default_rng(5).standard_normal((N_EVAL, 2)), moons(N_EVAL, args.seed + 2))
reference = moons(N_EVAL, args.seed + 2)
print(f"\n== 3. {N_EVAL} samples from x_T ~ N(0, I); energy distance to {N_EVAL} fresh data points "
      f"(fresh data: {floor:.4f}; pure noise: {noise:.4f})")
runs = [("DDPM", "ddpm", None), ("DDIM", "ddim", 100), ("DDIM", "ddim", 20), ("DDIM", "ddim", 10), ("DDIM", "ddim", 5)]
results, samples = {}, {}
denoise = as_denoiser(model)
for name, kind, steps in runs:
    t0 = time.perf_counter()
    x = sample(denoise, sched, (N_EVAL, 2), np.random.default_rng(7), kind, steps)
    seconds = time.perf_counter() - t0
    label = f"{name} {steps or T} steps"
    results[label] = {"energy_distance": round(energy_distance(x, reference), 4), "seconds": round(seconds, 3)}
    samples[label] = x
    print(f"  {label:16s} distance {results[label]['energy_distance']:.4f}   {seconds * 1000:7.1f} ms")
ddpm, ddim20 = results["DDPM 100 steps"], results["DDIM 20 steps"]
print(f"  DDIM at 20 steps against DDPM at {T}: "
      + compare("DDIM 20", ddim20["energy_distance"], "DDPM", ddpm["energy_distance"], margin=2 * floor,
                higher_is_better=False, verb="is closer to the data than", fmt=".4f")
      + f" (the margin is twice the fresh-data floor); {ddpm['seconds'] / ddim20['seconds']:.1f}x faster")
fig, axes = pyplot().subplots(1, len(runs) + 1, figsize=(16, 2.8))
axes[0].scatter(reference[:, 0], reference[:, 1], s=2, color="gray")
axes[0].set_title("data", fontsize=9)
for ax, (label, x) in zip(axes[1:], samples.items()):
    ax.scatter(x[:, 0], x[:, 1], s=2)
    ax.set_title(f"{label}: {results[label]['energy_distance']:.3f}", fontsize=9)
for ax in axes:
    ax.set_xlim(-2, 2)
    ax.set_ylim(-1.6, 1.6)
    ax.set_aspect("equal")
save_figure(fig, args.out, "08_samples.png")

# The reverse process, step by step: DDPM's loop written out (sample() runs the same loop), keeping snapshots
x = np.random.default_rng(8).standard_normal((1000, 2))
snapshots = {}
for t in range(T - 1, -1, -1):
    if t in (T - 1, 50, 25, 10, 0):
        snapshots[t] = x
    x = ddpm_step(sched, x, t, denoise(x, t), rng)
snapshots["x_0"] = x
fig, axes = pyplot().subplots(1, len(snapshots), figsize=(16, 2.8))
for ax, (t, xt) in zip(axes, snapshots.items()):
    ax.scatter(xt[:, 0], xt[:, 1], s=2, color="tab:orange")
    ax.set_title(f"x_{t}" if t != "x_0" else "x_0 (the sample)", fontsize=9)
    ax.set_xlim(-3.5, 3.5)
    ax.set_ylim(-3.5, 3.5)
    ax.set_aspect("equal")
save_figure(fig, args.out, "08_reverse.png")
print("  the reverse process, noise to moons in DDPM's steps: 08_reverse.png")

# %% 4. The score field
t_show = 5
grid = np.stack(np.meshgrid(np.linspace(-2, 2, 21), np.linspace(-1.5, 1.5, 17)), -1).reshape(-1, 2)
score = -denoise(grid, t_show) / np.sqrt(1 - sched.alpha_bar[t_show])
towards = ((reference[None] - grid[:, None]) ** 2).sum(-1).argmin(1)
to_data = reference[towards] - grid
cosine = (score * to_data).sum(1) / (np.linalg.norm(score, axis=1) * np.linalg.norm(to_data, axis=1) + 1e-12)
far = np.linalg.norm(to_data, axis=1) > 0.3
print(f"\n== 4. the score -eps_theta / sqrt(1 - abar_t) at t = {t_show} on a grid: where a grid point is over 0.3 "
      f"from the data, the arrow points towards the nearest data point within 45 degrees at "
      f"{(cosine[far] > np.cos(np.pi / 4)).mean():.0%} of the {far.sum()} points")
fig, ax = pyplot().subplots(figsize=(6, 4.5))
ax.scatter(reference[:, 0], reference[:, 1], s=1, color="lightgray")
ax.quiver(grid[:, 0], grid[:, 1], score[:, 0], score[:, 1], angles="xy", color="tab:blue")
ax.set_title(f"the learned score at t = {t_show}: arrows towards the data", fontsize=9)
save_figure(fig, args.out, "08_score.png")

# %% 5. Digits on request: a class-conditional DiT with classifier-free guidance
T_DIGITS = 100 if QUICK else 1000
SWEEP_STEPS = 20 if QUICK else 50      # DDIM steps of the guidance sweep
SAMPLER_STEPS = (50, 25, 10) if QUICK else (100, 50, 25, 10)
DIGIT_STEPS = 60 if QUICK else 1200
P_UNCOND = 0.1
N_DIGITS = 30 if QUICK else 200        # samples per guidance setting, 3 (20) of each digit
N_DDPM = 10 if QUICK else 100          # DDPM's T network calls per sample are the expensive part
x_digits, y_digits = load_digits("train", normalize=False, seed=args.seed)
x_digits = x_digits * 2 - 1            # pixels in [-1, 1], the range the noise scale assumes
digit_sched = make_schedule("cosine", T_DIGITS)
print(f"\n== 5. digits to order: a DiT (8x8 digits as 16 patches of 2x2, width 48, 3 blocks, adaLN-Zero), cosine "
      f"schedule T = {T_DIGITS}, {DIGIT_STEPS} steps of 128 digits, each label dropped with p = {P_UNCOND}")
dit = DiT(img_size=8, patch_size=2, in_chans=1, dim=48, depth=3, heads=4, num_classes=10, seed=args.seed)
opt = AdamW(dit.parameters(), lr=2e-3, weight_decay=0.0)
lr_schedule = WarmupCosine(opt, total_steps=DIGIT_STEPS, warmup_steps=min(100, DIGIT_STEPS // 5))
start = time.perf_counter()


def digit_batch_loss():
    idx = rng.integers(0, len(x_digits), 128)
    return diffusion_loss(dit, digit_sched, x_digits[idx], rng, y=y_digits[idx], p_uncond=P_UNCOND)


digit_losses = optimise(digit_batch_loss, opt, DIGIT_STEPS, "digit DiT", schedule=lr_schedule)
digit_seconds = time.perf_counter() - start
k = max(1, min(100, DIGIT_STEPS // 2))
print(f"  loss: first {k} steps {np.mean(digit_losses[:k]):.3f}, last {k} {np.mean(digit_losses[-k:]):.3f}; "
      f"{digit_seconds:.0f} s")
judge = digit_judge(args.out, epochs=3 if QUICK else 30, seed=0)


def draw_digits(wanted, w, sampler="ddim", steps=SWEEP_STEPS, clipped_eps=True, seed=11):
    """Samples of the digits `wanted` (one per entry) under guidance w, judged:
    (images in [0, 1], accuracy, seconds, the judge's features of the images)."""
    t0 = time.perf_counter()
    denoise = guided_denoiser(as_denoiser(dit, wanted), as_denoiser(dit), w)
    x = sample(denoise, digit_sched, (len(wanted), 1, 8, 8), np.random.default_rng(seed), sampler,
               steps if sampler == "ddim" else None, clip=1.0, clipped_eps=clipped_eps)
    seconds = time.perf_counter() - t0
    images = np.clip((x + 1) / 2, 0, 1)
    probs, features = judge_digits(judge, images)
    return images, float((probs.argmax(1) == wanted).mean()), seconds, features


wanted = np.arange(N_DIGITS) % 10
W_VALUES = (0.0, 1.0, 2.0, 3.0, 5.0)
print(f"\n  {N_DIGITS} samples per w ({N_DIGITS // 10} of each digit), DDIM {SWEEP_STEPS} steps, x0_hat clipped to [-1, 1] with "
      f"eps recomputed from it; share judged to be the digit asked for (chance: 0.10; +-{accuracy_margin(N_DIGITS):.2f} "
      "is noise):")
by_w, grid_images = {}, {}
for w in W_VALUES:
    images, acc, seconds, _ = draw_digits(wanted, w)
    by_w[w], grid_images[w] = acc, images
    label = {0.0: "  (unconditional)", 1.0: "  (conditional)"}.get(w, "")
    print(f"    w = {w:3.1f}: {acc:.2f}{label}")
best_w = max(W_VALUES, key=lambda w: by_w[w])
TRAP_W = 3.0
trap_acc = draw_digits(wanted, TRAP_W, clipped_eps=False)[1]
print(f"  best w = {best_w:g}: {by_w[best_w]:.2f} of samples are the digit asked for; w = 1 alone gives {by_w[1.0]:.2f}.")
trap = compare(f"keeping the model's eps", trap_acc, "recomputing it", by_w[TRAP_W], margin=accuracy_margin(N_DIGITS),
               verb="is more accurate than", fmt=".2f")
print(f"  the clipping trap, at w = {TRAP_W:g}: x0_hat clipped to [-1, 1] and the model's own eps kept in the step "
      f"(diffusers' default) against eps recomputed from the clipped x0_hat: {trap}")
if by_w[TRAP_W] - trap_acc > accuracy_margin(N_DIGITS):
    print("  guided eps overshoots, so the clipped x0_hat and the step's noise term disagree, and each DDIM step "
          "writes the disagreement back into x; recomputing eps makes the two agree")
fig, axes = pyplot().subplots(10, len(W_VALUES), figsize=(1.6 * len(W_VALUES), 11))
for col, w in enumerate(W_VALUES):
    for digit in range(10):
        ax = axes[digit, col]
        ax.imshow(np.concatenate(list(grid_images[w][wanted == digit][:4, 0]), axis=1), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if digit == 0:
            ax.set_title(f"w = {w:g}\n{by_w[w]:.2f} right", fontsize=8)
        if col == 0:
            ax.set_ylabel(str(digit))
save_figure(fig, args.out, "08_guidance.png")

# %% 6. DDPM against DDIM: time and quality
# At w = 1, the plain conditional model, accuracy is below its ceiling, so a worse sampler can show.
wanted_ddpm = np.arange(N_DDPM) % 10
x_real, _ = load_digits("test", normalize=False, seed=args.seed)
real_features = judge_digits(judge, x_real)[1]
x_train_grey, y_train_grey = load_digits("train", normalize=False, seed=args.seed)
balanced = np.concatenate([np.flatnonzero(y_train_grey == d)[:N_DDPM // 10] for d in range(10)])   # as the samples
fd_floor = frechet_distance(judge_digits(judge, x_train_grey[balanced])[1], real_features)
print(f"\n== 6. samplers at w = 1, {N_DDPM} samples each from the same x_T; accuracy +-{accuracy_margin(N_DDPM):.2f} "
      f"is noise; FD: the judge's Frechet distance to the {len(x_real)} test digits ({len(balanced)} real training "
      f"digits, {N_DDPM // 10} of each, score {fd_floor:.1f}; with so few images FD is biased, so compare the samplers "
      "with each other)")
samplers = {}
for sampler, steps in (("ddpm", T_DIGITS),) + tuple(("ddim", n) for n in SAMPLER_STEPS):
    _, acc, seconds, features = draw_digits(wanted_ddpm, 1.0, sampler, steps)
    fd = frechet_distance(features, real_features)
    samplers[f"{sampler.upper()} {steps}"] = {"accuracy": round(acc, 4), "fd": round(fd, 2), "seconds": round(seconds, 2)}
    print(f"  {sampler.upper()} {steps:4d} steps: accuracy {acc:.2f}   FD {fd:6.1f}   {seconds:6.1f} s")
ddpm_row, ddim50 = samplers[f"DDPM {T_DIGITS}"], samplers["DDIM 50"]
print("  " + compare("DDIM 50", ddim50["accuracy"], f"DDPM {T_DIGITS}", ddpm_row["accuracy"],
                     margin=accuracy_margin(N_DDPM), verb="is more accurate than", fmt=".2f")
      + f"; DDIM 50 took {ddpm_row['seconds'] / ddim50['seconds']:.0f}x less time")

# %% The headline numbers
print("result: " + json.dumps({
    "lesson": "08_diffusion", "quick": QUICK, "seed": args.seed, "T": T, "train_steps": STEPS,
    "train_seconds": round(train_seconds, 1), "final_loss": round(float(np.mean(losses[-100:])), 4),
    "alpha_bar_T": float(f"{sched.alpha_bar[-1]:.3e}"), "alpha_bar_T_unscaled": round(float(unscaled), 4),
    "energy_floor": round(floor, 4), "energy_noise": round(noise, 4), "samplers": results,
    "score_points_towards_data": round(float((cosine[far] > np.cos(np.pi / 4)).mean()), 4),
    "digits": {"T": T_DIGITS, "train_steps": DIGIT_STEPS, "train_seconds": round(digit_seconds, 1),
               "accuracy_by_w": {f"{w:g}": round(a, 4) for w, a in by_w.items()}, "best_w": best_w,
               "accuracy_clip_without_clipped_eps_w3": round(trap_acc, 4), "samplers_w1": samplers,
               "fd_floor": round(fd_floor, 2)},
}))
