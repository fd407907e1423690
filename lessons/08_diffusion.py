"""Lesson 08: diffusion on points in the plane: add noise until nothing is left, learn to undo one step.

Run:  python lessons/08_diffusion.py            (full: about a minute on 2 CPU cores)
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

What to look at
    - The schedule pitfall: a linear schedule with few steps, unscaled, never reaches pure noise.
    - The distance between samples and data (energy distance; 0 for identical laws), against two
      references: fresh data (the floor) and pure noise.
    - DDPM with all steps against DDIM with fewer: time and quality side by side.
    - The arrows of the score field near the data.

Exercises
    1. Train with T = 20 steps instead of 100. Where do the samples go wrong?
    2. Use the unscaled linear schedule (betas 1e-4..0.02 at T = 100) and sample from N(0, I): why are
       the samples too tight? (abar_T is printed in section 1.)
    3. Predict x_0 instead of eps (the loss on x_0). Which one trains faster here?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import time

import numpy as np

from tinyvision.diffusion import MLPDenoiser, as_denoiser, diffusion_loss, make_schedule, sample
from tinyvision.models.judge import energy_distance
from tinyvision.optim import AdamW

from _common import compare, one_blas_thread, parse_args, progress, pyplot, save_figure

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

# %% The headline numbers
print("result: " + json.dumps({
    "lesson": "08_diffusion", "quick": QUICK, "seed": args.seed, "T": T, "train_steps": STEPS,
    "train_seconds": round(train_seconds, 1), "final_loss": round(float(np.mean(losses[-100:])), 4),
    "alpha_bar_T": float(f"{sched.alpha_bar[-1]:.3e}"), "alpha_bar_T_unscaled": round(float(unscaled), 4),
    "energy_floor": round(floor, 4), "energy_noise": round(noise, 4), "samplers": results,
    "score_points_towards_data": round(float((cosine[far] > np.cos(np.pi / 4)).mean()), 4),
}))
