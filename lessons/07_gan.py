"""Lesson 07: generative adversarial networks, a game between two networks, and how it goes wrong.

Run:  python lessons/07_gan.py            (full: under 4 minutes on 2 CPU cores)
      python lessons/07_gan.py --quick    (CI: well under 30 seconds)      options: --seed N  --out DIR

Motivation
    A classifier learns p(label | image). A generative model learns to produce new images, without
    ever writing down a density. A GAN (Goodfellow et al. 2014) does it with two networks: a
    generator G turns noise z into samples, a discriminator D tells real samples from G's. Each is
    trained against the other. It is the model family that first made sharp, realistic samples, and
    the one whose training most often fails, in ways you can measure. This lesson measures them.

The idea
    1. The game. D outputs a logit l; its loss is L_D = mean softplus(-l_real) + mean softplus(l_fake),
       the binary cross-entropy with real = 1, fake = 0. G is trained to make D call its samples real,
       with the non-saturating loss L_G = mean softplus(-l_fake) (tinyvision/models/gan.py). The test
       bed is the ring of 8 Gaussians of VEEGAN and PacGAN (radius 1, std 0.01): every mode is known,
       so we can count which ones G finds. A sample is "high quality" if it lies within 3 standard
       deviations of its nearest mode; a mode is covered if some high-quality sample lands on it.
    2. The optimal discriminator. For a fixed G, the best D is D*(x) = p(x) / (p(x) + q(x)), with p the
       data density and q the generator's (Goodfellow et al. 2014, Prop. 1). Train a D against a known
       q and compare it with that formula point by point.
    3. The saturating trap. The original minimax loss for G, -softplus(l_fake), has the gradient
       -sigma(l) per sample, which vanishes when D confidently says "fake" (l << 0): the state G is in
       once D has out-learned it (section 3 gives D a head start to get there). The non-saturating loss has -sigma(-l), close to -1 there.
    4. Mode collapse. G can fool D by putting all its samples in one place, if D cannot see that the
       place is over-full. We make it happen with a discriminator too narrow to keep up, then apply
       one remedy, packing (PacGAN, Lin et al. 2018): D judges pairs of samples, and a pair from a
       collapsed G looks like two copies of one point.
    5. Digits. A small DCGAN (Radford et al. 2016) on the 8x8 digits, judged the way FID judges
       ImageNet samples: by a classifier trained on real digits (tinyvision/models/judge.py), which
       says which classes the samples look like, how sure it is, and how far its features of the
       samples are from its features of real held-out digits (the Frechet distance).

What to look at
    The printed tables and the sentences under them, which come from this run's numbers (--quick
    trains for seconds, so its numbers only show that the lesson runs). In lessons/out/:
    07_ring_training.png (samples of one run as training goes on), 07_optimal_discriminator.png
    (D* from the formula, the trained D, their difference), 07_generator_gradient.png (the gradient
    each loss gives G, and where a confident D puts the fake logits), 07_mode_collapse.png (a
    collapsed run and the packed one), 07_digit_samples.png (generated digits and the judge's labels).
    digit_judge_e30_s0.npz (in the same folder) caches the judge, shared with lesson 06; delete it to
    retrain it.

Exercises
    1. Train section 1 with loss="saturating" from the start (D is not confident at step 0). Does it
       still work? Then give D a 300-step head start, as section 3 does, and compare.
    2. Use betas=(0.9, 0.999) instead of (0.5, 0.999) in section 1 (the DCGAN paper's warning). Count
       the modes and the high-quality share over the 3 seeds.
    3. In section 4, pack 4 samples instead of 2. Does coverage improve further? Does precision?
    4. Make q in section 2 a ring too, with radius 1.2: where is D* far from 1/2, and where does the
       trained D miss it most?
    5. Replace the DCGAN in section 5 by MLPGenerator / MLPDiscriminator with hidden=256 and output
       "tanh". Which score moves first: classes present, confidence, or Frechet distance?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import math
import time

import numpy as np

import tinyvision as tv
from tinyvision import ops as F
from tinyvision.data import load_digits
from tinyvision.data.mixtures import GaussianMixture2D, mode_coverage, ring_of_gaussians
from tinyvision.ops.elementwise import sigmoid_array
from tinyvision.models.gan import (GENERATOR_LOSSES, DCGANDiscriminator, DCGANGenerator, MLPDiscriminator,
                                   MLPGenerator, discriminator_loss, fit_discriminator, generate, generator_loss,
                                   train_gan)
from tinyvision.models.judge import class_coverage, frechet_distance, judge_digits

from _common import accuracy_margin, compare, digit_judge, one_blas_thread, parse_args, progress, pyplot, save_figure

args = parse_args(__doc__)
one_blas_thread()  # small matrices: one BLAS thread is as fast, and immune to a busy machine
QUICK = args.quick
lesson_start = time.perf_counter()
plt = pyplot()

RING = ring_of_gaussians()                 # PacGAN's ring: 8 modes, radius 1, std 0.01
N_EVAL = 2500                              # generated samples per evaluation, as in the protocol
SEEDS = [args.seed + k for k in range(1 if QUICK else 3)]   # --quick: one seed, only to run the code
# The recipe of section 1, found by trying a few on this ring: D twice as wide as G, a large learning rate
# lowered to 0 along a cosine (the last, small steps sharpen the modes), DCGAN's betas.
RECIPE = dict(latent_dim=8, g_hidden=128, d_hidden=256, batch_size=128, lr=3e-3, betas=(0.5, 0.999),
              schedule="cosine", steps=60 if QUICK else 3000)


def ring_data(n, rng):
    return RING.sample(n, seed=rng)[0]


def ring_gan(seed, d_hidden=RECIPE["d_hidden"], pack=1):
    """G, D and the Generator that trains them, all drawn from one seed."""
    rng = np.random.default_rng(seed)
    g = MLPGenerator(RECIPE["latent_dim"], (2,), RECIPE["g_hidden"], seed=rng)
    d = MLPDiscriminator((2,), d_hidden, pack=pack, seed=rng)
    return g, d, rng


def train_ring(seed, steps, desc, d_hidden=RECIPE["d_hidden"], pack=1, snapshot_at=()):
    g, d, rng = ring_gan(seed, d_hidden, pack)
    recipe = {k: RECIPE[k] for k in ("batch_size", "lr", "betas", "schedule")}
    with progress(desc=desc, total=steps, unit="step", leave=False) as bar:
        hist = train_gan(g, d, ring_data, steps=steps, seed=rng, snapshot_at=sorted({*snapshot_at, steps}),
                         snapshot_n=N_EVAL, log=bar_logger(bar, 50), log_every=50, **recipe)
    coverage = mode_coverage(hist.snapshots[steps], RING)
    return g, hist, coverage


def bar_logger(bar, every):
    """A train_gan `log` that advances a progress bar by `every` steps and shows the latest losses on it."""
    def log(line):
        bar.update(every)
        bar.set_postfix_str(line.split(": ", 1)[1])
    return log


def median(values):
    return float(np.median(values))


hq_margin = accuracy_margin(N_EVAL)   # two shares of 2,500 samples closer than this count as equal
if QUICK:
    print("--quick: every section trains for a small fraction of its steps; the targets are those of the full lesson")

# %% 1. The ring of 8 Gaussians: the non-saturating recipe over 3 seeds
steps = RECIPE["steps"]
print(f"\n== 1. ring of {RING.num_modes} Gaussians (radius 1, std {RING.std}): non-saturating loss, G {RECIPE['g_hidden']} "
      f"wide, D {RECIPE['d_hidden']} wide, batch {RECIPE['batch_size']}, Adam lr {RECIPE['lr']} (cosine to 0), "
      f"{steps} steps; seeds {SEEDS}")
print(f"  scored on {N_EVAL} samples: modes covered (of {RING.num_modes}) and the high-quality share (within 3 std)")
snapshot_steps = [0, steps // 10, steps // 3, steps]
ring_runs = []
print(f"  {'seed':>4}  {'modes':>5}  {'high quality':>12}  {'D(real)':>7}  {'D(fake)':>7}  {'seconds':>7}")
for seed in SEEDS:
    g, hist, cov = train_ring(seed, steps, f"ring, seed {seed}", snapshot_at=snapshot_steps)
    d_real, d_fake = float(np.mean(hist.d_real[-100:])), float(np.mean(hist.d_fake[-100:]))
    ring_runs.append(dict(seed=seed, hist=hist, coverage=cov, d_real=d_real, d_fake=d_fake))
    print(f"  {seed:4d}  {cov['modes_covered']:5d}  {cov['high_quality']:12.3f}  {d_real:7.3f}  {d_fake:7.3f}  "
          f"{hist.seconds:7.1f}")
ring_modes = median([r["coverage"]["modes_covered"] for r in ring_runs])
ring_hq = median([r["coverage"]["high_quality"] for r in ring_runs])
ring_target = ring_modes == RING.num_modes and ring_hq >= 0.80
print(f"  median over {len(SEEDS)} seeds: {ring_modes:.0f} modes, {ring_hq:.3f} high quality; target (all "
      f"{RING.num_modes} modes, >= 0.80 high quality): {'met' if ring_target else 'MISSED'}")
near_half = all(abs(r["d_real"] - 0.5) <= 0.1 and abs(r["d_fake"] - 0.5) <= 0.1 for r in ring_runs)
print("  D's mean probability over the last 100 steps is within 0.1 of 1/2 on real and on fake samples in every run: "
      "on average D cannot tell them apart, as at the equilibrium (D* = 1/2 when p_g = p_data). That alone does not "
      "show p_g = p_data (a weak D is also unsure): the mode counts above do" if near_half else
      "  D's mean probabilities over the last 100 steps are not all within 0.1 of 1/2: D still tells real from fake")

first = ring_runs[0]
real_points = ring_data(N_EVAL, np.random.default_rng(1))
fig, axes = plt.subplots(1, len(snapshot_steps), figsize=(3.2 * len(snapshot_steps), 3.3))
for ax, s in zip(axes, snapshot_steps):
    pts = first["hist"].snapshots[s]
    cov = mode_coverage(pts, RING)
    ax.scatter(real_points[:, 0], real_points[:, 1], s=2, c="tab:orange", alpha=0.5, label="data")
    ax.scatter(pts[:, 0], pts[:, 1], s=1, c="k", alpha=0.3, label="G(z)")
    ax.set(xlim=(-1.6, 1.6), ylim=(-1.6, 1.6), aspect="equal", xticks=[], yticks=[],
           title=f"step {s}: {cov['modes_covered']} modes, HQ {cov['high_quality']:.2f}")
axes[0].legend(loc="lower left", fontsize=7, markerscale=4)
fig.suptitle(f"seed {first['seed']}: the same {N_EVAL} z as training goes on")
save_figure(fig, args.out, "07_ring_training.png")

# %% 2. The optimal discriminator D* = p / (p + q), against a known q
# p: the ring blurred to std 0.2 (a std of 0.01 makes D* a step function, 1 on 8 dots and 0 elsewhere);
# q: N(0, 0.7^2 I), what a generator that has not found the ring yet might produce.
P_DATA = ring_of_gaussians(std=0.2)
Q_FAKE = GaussianMixture2D("q = N(0, 0.7^2 I)", [[0.0, 0.0]], 0.7)
d_steps = 80 if QUICK else 3000
print(f"\n== 2. the optimal discriminator: p = ring with std {P_DATA.std}, q = N(0, {Q_FAKE.std}^2 I); a D of 2x128 "
      f"trained alone for {d_steps} steps")
rng = np.random.default_rng(args.seed)
d_opt = MLPDiscriminator((2,), 128, seed=rng)
d_losses = fit_discriminator(d_opt, lambda n, r: P_DATA.sample(n, seed=r)[0], lambda n, r: Q_FAKE.sample(n, seed=r)[0],
                             steps=d_steps, batch_size=256, lr=1e-3, seed=rng)
axis = np.linspace(-2, 2, 81)
grid = np.stack(np.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
p_grid, q_grid = P_DATA.density(grid), Q_FAKE.density(grid)
d_star = p_grid / (p_grid + q_grid)
with tv.no_grad():
    d_grid = F.sigmoid(d_opt(tv.Tensor(grid.astype(np.float32)))).numpy().astype(np.float64)
# Compared where there are samples to learn from: grid points where (p + q)/2 is at least 1% of its peak.
# Far outside, D has never seen a sample, and D* is the ratio of two Gaussian tails.
mixture = (p_grid + q_grid) / 2
where = mixture >= 0.01 * mixture.max()
mae = float(np.abs(d_grid - d_star)[where].mean())
print(f"  mean |D(x) - D*(x)| on the {int(where.sum())} of {len(grid)} grid points (81x81 over [-2, 2]^2) where "
      f"(p + q)/2 is at least 1% of its peak: {mae:.4f}; target <= 0.05: {'met' if mae <= 0.05 else 'MISSED'}")
print(f"  (largest there: {np.abs(d_grid - d_star)[where].max():.3f}; a D that says 1/2 everywhere: "
      f"{np.abs(0.5 - d_star)[where].mean():.3f})")
# Against D*, L_D = log 4 - 2 JSD(p || q) (Goodfellow et al. 2014, Thm. 1): JSD by Monte Carlo on the densities.
mc = np.random.default_rng(args.seed + 1)
xp, xq = P_DATA.sample(20_000, seed=mc, dtype=np.float64)[0], Q_FAKE.sample(20_000, seed=mc, dtype=np.float64)[0]


def log_ratio_to_m(x, own):
    return np.log(own.density(x)) - np.log((P_DATA.density(x) + Q_FAKE.density(x)) / 2)


jsd = 0.5 * log_ratio_to_m(xp, P_DATA).mean() + 0.5 * log_ratio_to_m(xq, Q_FAKE).mean()
with tv.no_grad():
    trained_loss = discriminator_loss(d_opt(tv.Tensor(xp.astype(np.float32))), d_opt(tv.Tensor(xq.astype(np.float32)))).item()
best_loss = math.log(4) - 2 * jsd
print(f"  loss of the trained D on 20,000 fresh samples of each: {trained_loss:.4f}; the minimum, log 4 - 2 JSD(p||q): "
      f"{best_loss:.4f} (JSD = {jsd:.4f} nats); a D that says 1/2 everywhere: log 4 = {math.log(4):.4f}")
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
fig.subplots_adjust(wspace=0.4)
extent = (-2, 2, -2, 2)
for ax, values, title, cmap in ((axes[0], d_star, "D*(x) = p / (p + q)", "RdBu_r"),
                                (axes[1], d_grid, f"trained D(x), {d_steps} steps", "RdBu_r"),
                                (axes[2], np.abs(d_grid - d_star), f"|D - D*|: mean {mae:.3f} inside the grey line", "magma")):
    im = ax.imshow(values.reshape(81, 81), origin="lower", extent=extent, cmap=cmap,
                   vmin=0, vmax=1 if cmap == "RdBu_r" else None)
    ax.contour(axis, axis, where.reshape(81, 81).astype(float), levels=[0.5], colors="grey", linewidths=0.7)
    ax.set(title=title, xticks=[-2, 0, 2], yticks=[-2, 0, 2])
    fig.colorbar(im, ax=ax, fraction=0.046)
axes[0].scatter(xp[:300, 0], xp[:300, 1], s=1, c="k", alpha=0.4)
save_figure(fig, args.out, "07_optimal_discriminator.png")

# %% 3. What each generator loss gives G when D is confident
head_start = 40 if QUICK else 300
print(f"\n== 3. the generator's gradient when D is confident: a fresh G, and a D trained against it for {head_start} steps")
for l_value in (-8.0, 0.0):
    grads = []
    for kind in GENERATOR_LOSSES:
        t = tv.Tensor(np.array([l_value]), requires_grad=True, dtype=np.float64)
        generator_loss(t, kind).backward()
        grads.append(float(t.grad[0]))
    print(f"  dL_G/dl at l = {l_value:+.0f} (autograd, float64): non-saturating {grads[0]:.4f}, saturating {grads[1]:.4f}")
g0, d0, rng = ring_gan(args.seed)
fit_discriminator(d0, ring_data, lambda n, r: generate(g0, n, seed=r), steps=head_start, lr=1e-3, seed=rng)
start_g, start_d = g0.state_dict(), d0.state_dict()
z = tv.Tensor(rng.standard_normal((512, RECIPE["latent_dim"])).astype(np.float32))
with tv.no_grad():
    fake_logits = d0(g0(z)).numpy().astype(np.float64)
print(f"  D's logits on 512 fresh fakes: median {np.median(fake_logits):.2f} (5%-95%: {np.percentile(fake_logits, 5):.2f} to "
      f"{np.percentile(fake_logits, 95):.2f}); mean D(G(z)) = {np.mean(sigmoid_array(fake_logits)):.4f}")
grad_norm = {}
for kind in GENERATOR_LOSSES:
    g0.zero_grad()
    generator_loss(d0(g0(z)), kind).backward()
    grad_norm[kind] = math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in g0.parameters()))
d0.zero_grad()
g0.zero_grad()
ratio = grad_norm["non_saturating"] / grad_norm["saturating"]
print("  norm of dL_G / d(G's weights) on those fakes: "
      + compare("the non-saturating loss", grad_norm["non_saturating"], "the saturating one", grad_norm["saturating"],
                verb="gives G a larger gradient than", fmt=".4g") + f" ({ratio:.0f}x)")
# Where each loss's gradient comes from: per sample it is weighted by sigma(l) (saturating) or sigma(-l).
top = np.sort(fake_logits)[::-1][:max(1, len(fake_logits) // 20)]           # the 5% of fakes D is least sure of
top_share = {"saturating": float(sigmoid_array(top).sum() / sigmoid_array(fake_logits).sum()),
             "non_saturating": float(sigmoid_array(-top).sum() / sigmoid_array(-fake_logits).sum())}
print(f"  share of the per-sample weights carried by the {len(top)} fakes with the highest logits (5%): saturating "
      f"{top_share['saturating']:.2f}, non-saturating {top_share['non_saturating']:.2f}")
# Then train from that same start with each loss, the same batches for both.
race_steps = 20 if QUICK else 600
race = {}
for kind in GENERATOR_LOSSES:
    g0.load_state_dict(start_g)
    d0.load_state_dict(start_d)
    hist = train_gan(g0, d0, ring_data, steps=race_steps, batch_size=RECIPE["batch_size"], lr=RECIPE["lr"],
                     betas=RECIPE["betas"], schedule="cosine", loss=kind, seed=args.seed, snapshot_at=(race_steps,),
                     snapshot_n=N_EVAL)
    race[kind] = mode_coverage(hist.snapshots[race_steps], RING)
for kind in GENERATOR_LOSSES:
    print(f"  {race_steps} GAN steps from that start with the {kind.replace('_', '-')} loss: "
          f"{race[kind]['modes_covered']} modes, {race[kind]['high_quality']:.3f} high quality")
print("  modes covered: " + compare("the non-saturating loss", race["non_saturating"]["modes_covered"], "the saturating one",
                                     race["saturating"]["modes_covered"], verb="covers more than", fmt=".0f"))
if (race["saturating"]["modes_covered"] < race["non_saturating"]["modes_covered"]
        and top_share["saturating"] > top_share["non_saturating"]):
    print("  (Adam divides each step by the running size of the gradient, so the saturating loss's small gradient still\n"
          f"   moves G; but {top_share['saturating']:.0%} of its per-sample weight sits on 5% of the fakes, against "
          f"{top_share['non_saturating']:.0%} for the non-saturating loss)")
curve = np.linspace(-10, 5, 301)
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(curve, -sigmoid_array(-curve), label="non-saturating: -sigma(-l)")
ax.plot(curve, -sigmoid_array(curve), label="saturating: -sigma(l)")
ax2 = ax.twinx()
ax2.hist(fake_logits, bins=40, color="grey", alpha=0.35)
ax2.set(ylabel="fakes (count)")
ax.set(xlabel="D's logit l on a fake sample", ylabel="dL_G / dl per sample",
       title=f"grey: a confident D's logits on fresh fakes (after {head_start} D steps)")
ax.legend(loc="center left", fontsize=8)
save_figure(fig, args.out, "07_generator_gradient.png")

# %% 4. Mode collapse, and packing as a remedy
narrow = 32
collapse_steps = 60 if QUICK else 2000
print(f"\n== 4. mode collapse: section 1's recipe with D {narrow} wide instead of {RECIPE['d_hidden']}, {collapse_steps} steps; "
      "then the same with D judging pairs of samples (PacGAN2)")
spread_data = float(real_points.std(0).mean())
print(f"  spread = the samples' standard deviation per axis, averaged (data: {spread_data:.3f})")
print(f"  {'seed':>4}  {'D':>18}  {'modes':>5}  {'high quality':>12}  {'spread':>6}")
collapse = {1: [], 2: []}
collapse_samples = {1: [], 2: []}
for seed in SEEDS:
    for pack in (1, 2):
        _, hist, cov = train_ring(seed, collapse_steps, f"D {narrow}, pack {pack}, seed {seed}", d_hidden=narrow, pack=pack)
        pts = hist.snapshots[collapse_steps]
        cov["spread"] = float(pts.std(0).mean())
        collapse[pack].append(cov)
        collapse_samples[pack].append(pts)
        label = f"{narrow} wide" + (", pairs" if pack == 2 else "")
        print(f"  {seed:4d}  {label:>18}  {cov['modes_covered']:5d}  {cov['high_quality']:12.3f}  {cov['spread']:6.3f}")
med = {pack: {key: median([c[key] for c in collapse[pack]]) for key in ("modes_covered", "high_quality", "spread")}
       for pack in (1, 2)}
print(f"  medians: single samples {med[1]['modes_covered']:.0f} modes, {med[1]['high_quality']:.3f} HQ, spread "
      f"{med[1]['spread']:.3f}; pairs {med[2]['modes_covered']:.0f} modes, {med[2]['high_quality']:.3f} HQ, spread "
      f"{med[2]['spread']:.3f}")
print("  modes covered: " + compare("packing", med[2]["modes_covered"], "single samples", med[1]["modes_covered"],
                                     verb="covers more than", fmt=".0f"))
print("  high-quality share: " + compare("packing", med[2]["high_quality"], "single samples", med[1]["high_quality"],
                                          margin=hq_margin, verb="beats"))
precision = compare(f"the {RECIPE['d_hidden']}-wide D", ring_hq, f"the {narrow}-wide D with pairs",
                    med[2]["high_quality"], margin=hq_margin, verb="has a higher high-quality share than")
lead = "precision needs a strong D, pairs or not: " if ring_hq - med[2]["high_quality"] > hq_margin else ""
print("  " + lead + precision)
collapsed_any = med[1]["spread"] < 0.5 * spread_data
print(f"  without packing the median spread is {med[1]['spread'] / spread_data:.0%} of the data's: "
      + ("the generator has squeezed its samples into a small region, the signature of mode collapse" if collapsed_any
         else "no collapse of the spread in this run"))
fig, axes = plt.subplots(2, len(SEEDS), figsize=(3.2 * len(SEEDS), 6.4), squeeze=False)
for row, pack in enumerate((1, 2)):
    for col, seed in enumerate(SEEDS):
        ax, pts, cov = axes[row, col], collapse_samples[pack][col], collapse[pack][col]
        ax.scatter(real_points[:, 0], real_points[:, 1], s=2, c="tab:orange", alpha=0.5)
        ax.scatter(pts[:, 0], pts[:, 1], s=1, c="k", alpha=0.3)
        ax.set(xlim=(-1.6, 1.6), ylim=(-1.6, 1.6), aspect="equal", xticks=[], yticks=[],
               title=f"{'pairs' if pack == 2 else 'single'}, seed {seed}: {cov['modes_covered']} modes, "
                     f"HQ {cov['high_quality']:.2f}", )
        ax.title.set_fontsize(9)
fig.suptitle(f"a {narrow}-wide D, {collapse_steps} steps: single samples (top) vs pairs (PacGAN2, bottom)")
save_figure(fig, args.out, "07_mode_collapse.png")

# %% 5. A DCGAN on 8x8 digits, scored by a judge trained on real digits
print("\n== 5. a DCGAN on the 8x8 digits")
# The judge of lesson 06, from the same cache (lessons/_common.py: digit_judge), so the two lessons' scores compare.
judge = digit_judge(args.out, epochs=3 if QUICK else 30, seed=0)
x_train, _ = load_digits("train", normalize=False)
x_test, y_test = load_digits("test", normalize=False)
n_fd = len(x_test)
test_probs, test_feats = judge_digits(judge, x_test)
_, train_feats = judge_digits(judge, x_train)
judge_accuracy = float((test_probs.argmax(1) == y_test).mean())
real_conf = class_coverage(test_probs)["confidence"]
floor_rng = np.random.default_rng(args.seed)
floors = [frechet_distance(train_feats[floor_rng.choice(len(x_train), n_fd, replace=False)], test_feats) for _ in range(5)]
print(f"  judge: accuracy {judge_accuracy:.3f} on the {n_fd} test digits, mean confidence there {real_conf:.3f}")
print(f"  the floor: Frechet distance between {n_fd} real training digits and the {n_fd} test digits, over 5 draws: "
      f"{np.mean(floors):.2f} (from {min(floors):.2f} to {max(floors):.2f})")

gan_steps = 40 if QUICK else 1500
DIGIT_GAN = dict(latent_dim=32, width=16)
rng = np.random.default_rng(args.seed)
g_digits = DCGANGenerator(DIGIT_GAN["latent_dim"], DIGIT_GAN["width"], seed=rng)
d_digits = DCGANDiscriminator(DIGIT_GAN["width"], seed=rng)
print(f"  DCGAN: G {g_digits.num_parameters():,} and D {d_digits.num_parameters():,} parameters, z of "
      f"{DIGIT_GAN['latent_dim']}; pixels scaled to [-1, 1]; Adam lr 2e-4, betas (0.5, 0.999), batch 64, {gan_steps} steps")
with progress(desc="DCGAN", total=gan_steps, unit="step", leave=False) as bar:
    digit_hist = train_gan(g_digits, d_digits, x_train * 2 - 1, steps=gan_steps, batch_size=64, lr=2e-4,
                           betas=(0.5, 0.999), seed=rng, log=bar_logger(bar, 50), log_every=50)
print(f"  trained in {digit_hist.seconds:.0f} s ({1000 * digit_hist.seconds / gan_steps:.0f} ms per step); "
      f"D over the last 100 steps: D(real) {np.mean(digit_hist.d_real[-100:]):.3f}, D(fake) {np.mean(digit_hist.d_fake[-100:]):.3f}")
g_digits.eval()                               # batch norm with its running statistics, as at test time
samples = (generate(g_digits, n_fd, seed=args.seed + 7) + 1) / 2
gen_probs, gen_feats = judge_digits(judge, samples)
cov_digits = class_coverage(gen_probs)
fd = frechet_distance(gen_feats, test_feats)
print(f"  {n_fd} samples: {cov_digits['classes_present']} of 10 classes present (>= 2% of the samples each); "
      f"target >= 9: {'met' if cov_digits['classes_present'] >= 9 else 'MISSED'}")
print(f"  judge's shares per class: {' '.join(f'{k}:{s:.2f}' for k, s in enumerate(cov_digits['shares']))}")
print("  mean confidence: " + compare("real test digits", real_conf, "generated ones", cov_digits["confidence"],
                                   verb="convince the judge more than"))
print(f"  Frechet distance to the {n_fd} test digits: generated {fd:.2f} vs the real-vs-real floor {np.mean(floors):.2f} "
      f"({fd / np.mean(floors):.1f}x; both at {n_fd} samples, as the distance is biased upward at small sizes)")
labels = gen_probs.argmax(1)
fig, axes = plt.subplots(5, 12, figsize=(9, 4.4))
for row in range(5):
    for col in range(12):
        ax = axes[row, col]
        ax.axis("off")
        if col < 10:                                   # column k: the first samples the judge calls k
            of_class = np.flatnonzero(labels == col)
            if row < len(of_class):
                k = of_class[row]
                ax.imshow(samples[k, 0], cmap="gray_r", vmin=0, vmax=1)
                ax.set_title(f"{col} ({gen_probs[k].max():.2f})", fontsize=6)
        else:
            ax.imshow(x_test[row * 2 + col - 10, 0], cmap="gray_r", vmin=0, vmax=1)
            ax.set_title("real", fontsize=6)
fig.suptitle("generated digits in columns by the judge's label (its confidence in brackets); right: real test digits")
save_figure(fig, args.out, "07_digit_samples.png")

# %% Result
total_seconds = time.perf_counter() - lesson_start
print(f"\nlesson time: {total_seconds:.0f} s")
print("result: " + json.dumps({
    "lesson": "07_gan", "quick": QUICK, "seed": args.seed,
    "ring": {"seeds": SEEDS, "steps": steps,
             "modes": [r["coverage"]["modes_covered"] for r in ring_runs],
             "high_quality": [round(r["coverage"]["high_quality"], 4) for r in ring_runs],
             "median_modes": ring_modes, "median_high_quality": round(ring_hq, 4), "target_met": bool(ring_target)},
    "optimal_discriminator": {"mae": round(mae, 4), "target_met": bool(mae <= 0.05),
                              "loss": round(trained_loss, 4), "min_loss": round(best_loss, 4)},
    "generator_gradient": {"norm_non_saturating": round(grad_norm["non_saturating"], 4),
                           "norm_saturating": round(grad_norm["saturating"], 6),
                           "modes_after_race": {k: race[k]["modes_covered"] for k in GENERATOR_LOSSES}},
    "mode_collapse": {"d_hidden": narrow, "steps": collapse_steps,
                      "modes": {"single": [c["modes_covered"] for c in collapse[1]],
                                "pairs": [c["modes_covered"] for c in collapse[2]]},
                      "high_quality": {"single": [round(c["high_quality"], 4) for c in collapse[1]],
                                       "pairs": [round(c["high_quality"], 4) for c in collapse[2]]}},
    "digits": {"steps": gan_steps, "samples": n_fd, "classes_present": cov_digits["classes_present"],
               "confidence": round(cov_digits["confidence"], 4), "frechet": round(fd, 3),
               "frechet_floor": round(float(np.mean(floors)), 3), "judge_accuracy": round(judge_accuracy, 4)},
    "seconds": round(total_seconds, 1),
}))
