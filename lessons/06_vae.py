"""Lesson 06: the variational autoencoder, a latent space learned by compressing and sampling.

Run:  python lessons/06_vae.py            (full: about 2 minutes on 2 CPU cores)
      python lessons/06_vae.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    Recognition maps an image to a label. Generation goes the other way, and needs somewhere to start:
    a space of codes z, each of which decodes to a plausible image. An autoencoder squeezes each image
    through a small code and learns to rebuild it, a zip file of visual meaning; but its codes sit
    wherever training put them, and a random z decodes to nothing in particular. The VAE (Kingma &
    Welling 2014) makes the code space itself simple: every image is encoded as a small Gaussian
    cloud q(z|x), and the training objective pulls those clouds towards one standard normal p(z).
    Then z ~ N(0, I) lands where images were, and decodes to a new one.

The idea (tinyvision/models/vae.py has every formula)
    1. Encoder: x -> (mu, log sigma^2). Sample z = mu + sigma * eps, eps ~ N(0, I): the noise is an
       input, so gradients flow into mu and sigma (the reparameterisation trick).
    2. Decoder: z -> the 64 pixel probabilities of an 8x8 binary digit, p(x|z) Bernoulli.
    3. Maximise the ELBO = E_q[log p(x|z)] - KL(q(z|x) || N(0, I)), a lower bound of log p(x), in nats
       per image. The KL is what costs information: every nat z carries about x is paid for in KL.
    4. Report the model with the IWAE bound (Burda et al. 2016), k = 500 importance samples: tighter
       than the ELBO, still below log p(x).

What to look at
    - The test ELBO and the IWAE bound in nats, and how much tighter the second is.
    - Samples from z ~ N(0, I), scored by a CNN trained on real digits (the same judge as lesson 07):
      how many of the 10 classes appear, and the Frechet distance of their features to real ones.
    - Why a VAE blurs: the decoder predicts a probability per pixel, the average of every digit the
      code could have come from; the sample means shown are those averages.
    - beta: more weight on the KL (beta-VAE) buys a smoother code at the price of reconstruction;
      too much, and whole latents stop carrying anything (posterior collapse: count the active units).
    - A 2-D latent space, drawn: the classes sort themselves into regions nobody labelled.
    - On shapes whose factors are known, whether any one latent owns a factor (the mutual information gap).

Exercises
    1. Train on grey digits instead of binarised ones. Why are the "nats" then no longer a likelihood?
    2. Replace the sum of the BCE over pixels by its mean (keeping the KL summed). What happens to the
       active units, and why? (models.md: the pytorch/examples bug.)
    3. Give the decoder a second hidden layer of 512. Does collapse come earlier as beta grows?
    4. Interpolate between two digits in pixel space and in latent space; which one looks like digits?
"""
# %% Imports and the command line
from __future__ import annotations

import json

import numpy as np

import tinyvision as tv
from tinyvision.data import batches, load_digits
from tinyvision.models.judge import class_coverage, frechet_distance, judge_digits
from tinyvision.models.vae import VAE, active_units, iwae_bound, mutual_information_gap, negative_elbo
from tinyvision.optim import Adam

from _common import compare, digit_judge, one_blas_thread, parse_args, progress, pyplot, save_figure, trend

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
EPOCHS = 4 if QUICK else 60
BETA_EPOCHS = 2 if QUICK else 30
IWAE_K = 20 if QUICK else 500
LATENT = 8

x_grey, y_train = load_digits("train", seed=args.seed, normalize=False)
x_test_grey, y_test = load_digits("test", seed=args.seed, normalize=False)
if QUICK:
    x_grey, y_train, x_test_grey, y_test = x_grey[:300], y_train[:300], x_test_grey[:100], y_test[:100]
# Binary pixels, so that the Bernoulli likelihood is a true probability and the nats mean something
x_train, x_test = (x_grey > 0.5).astype(np.float32), (x_test_grey > 0.5).astype(np.float32)
print(f"digits: {len(x_train)} train / {len(x_test)} test images of 8x8, binarised at 0.5 "
      f"({x_train.mean():.2f} of pixels on)")


def train_vae(beta=1.0, latent=LATENT, epochs=EPOCHS, desc="VAE"):
    model = VAE(image_shape=(1, 8, 8), latent_dim=latent, hidden=256, seed=args.seed)
    opt, rng = Adam(model.parameters(), lr=1e-3), np.random.default_rng(args.seed)
    history = []
    for epoch in (bar := progress(range(epochs), desc, unit="epoch", leave=False)):
        total = []
        for (xb,) in batches(x_train, batch_size=64, seed=args.seed, epoch=epoch):
            loss, recon, kl = negative_elbo(model, xb, rng, beta=beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total.append((recon, kl))
        history.append(np.mean(total, axis=0))
        bar.set_postfix(recon=f"{history[-1][0]:.1f}", kl=f"{history[-1][1]:.1f}")
    return model, np.array(history)


def test_numbers(model, k):
    """(-ELBO, reconstruction, KL, -IWAE_k) on the test set, nats per image (ELBO with 10 z per image)."""
    rng = np.random.default_rng(1)
    recon, kl = np.mean([negative_elbo(model, x_test, rng)[1:] for _ in range(10)], axis=0)
    iwae = iwae_bound(model, x_test, k, np.random.default_rng(2)).mean()
    return recon + kl, recon, kl, -iwae


# %% 1. Train a VAE on binary digits; the ELBO and the IWAE bound
print(f"\n== 1. a VAE: 64 pixels -> 256 -> {LATENT}-d Gaussian latent -> 256 -> 64 Bernoulli pixels; "
      f"{EPOCHS} epochs, Adam 1e-3, batch 64")
vae, hist = train_vae()
nelbo, recon, kl, niwae = test_numbers(vae, IWAE_K)
print(f"  test negative ELBO {nelbo:.2f} nats per image = reconstruction {recon:.2f} + KL {kl:.2f}")
print(f"  IWAE bound, k = {IWAE_K}: -log p(x) <= {niwae:.2f} nats ({nelbo - niwae:.2f} tighter than the ELBO)")
print(f"  for scale: 64 independent fair coins cost 64 ln 2 = {64 * np.log(2):.1f} nats")
print(f"  train ELBO over epochs: {-hist[0].sum():.1f} -> {-hist[-1].sum():.1f}")
n_active, variances = active_units(vae, x_test)
print(f"  active latents (Var_x E[z_j|x] > 0.01): {n_active} of {LATENT}")

fig, axes = pyplot().subplots(2, 10, figsize=(10, 2.3))
recons = vae.decode_mean(vae.encode(tv.Tensor(x_test[:10]))[0])
for i in range(10):
    axes[0, i].imshow(x_test[i, 0], cmap="gray_r", vmin=0, vmax=1)
    axes[1, i].imshow(recons[i, 0], cmap="gray_r", vmin=0, vmax=1)
for ax in axes.ravel():
    ax.set_axis_off()
axes[0, 0].set_title("test digits (top) and the decoder's pixel probabilities at z = mu (bottom)", loc="left", fontsize=9)
save_figure(fig, args.out, "06_reconstructions.png")

# %% 2. Samples from the prior, judged
n_samples = len(x_test)
z = np.random.default_rng(3).standard_normal((n_samples, LATENT)).astype(np.float32)
samples = vae.decode_mean(tv.Tensor(z))                  # pixel probabilities: the decoder's mean image
judge = digit_judge(args.out, epochs=3 if QUICK else 30, seed=0)
p_real, f_real = judge_digits(judge, x_test)
acc_judge = float((p_real.argmax(1) == y_test).mean())
p_vae, f_vae = judge_digits(judge, samples)
cover = class_coverage(p_vae)
f_floor = judge_digits(judge, x_train[:n_samples])[1]
fd_vae, fd_floor = frechet_distance(f_vae, f_real), frechet_distance(f_floor, f_real)
print(f"\n== 2. {n_samples} samples z ~ N(0, I), decoded to pixel probabilities, judged by a CNN trained on real digits")
print(f"  the judge's accuracy on the binarised test digits: {acc_judge:.3f}")
print(f"  classes present (at least 2% of the samples): {cover['classes_present']} of 10; "
      f"mean judge confidence {cover['confidence']:.3f} (on real test digits {p_real.max(1).mean():.3f})")
print(f"  Frechet distance to the test digits' features ({n_samples} vs {len(x_test)} images): VAE samples "
      f"{fd_vae:.2f}; real training digits {fd_floor:.2f} (the floor at this sample size)")
f_grey = judge_digits(judge, x_test_grey)[1]
fd_vae_grey, fd_floor_grey = frechet_distance(f_vae, f_grey), frechet_distance(judge_digits(judge, x_grey[:n_samples])[1], f_grey)
print(f"  the same against the grey (not binarised) test digits, the scale lesson 07's GAN is measured on: "
      f"VAE {fd_vae_grey:.2f}, real grey training digits {fd_floor_grey:.2f}")
soft_samples, soft_real = float(((samples > 0.1) & (samples < 0.9)).mean()), float(((x_test > 0.1) & (x_test < 0.9)).mean())
print(f"  pixels between 0.1 and 0.9 (neither off nor on): {soft_samples:.1%} of the samples', {soft_real:.1%} of the "
      "binarised test digits'")
if soft_samples > soft_real:
    print("  the samples are per-pixel probabilities, averages over every digit a code could be: grey and soft")
    print("  where real digits are binary and sharp, which is what 'a VAE blurs' means here.")

fig, axes = pyplot().subplots(4, 10, figsize=(10, 4.2))
for ax, img, p in zip(axes.ravel(), samples, p_vae):
    ax.imshow(img[0], cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(f"{p.argmax()} ({p.max():.2f})", fontsize=7)
    ax.set_axis_off()
fig.suptitle("VAE samples z ~ N(0, I): the judge's class and confidence above each", fontsize=9)
save_figure(fig, args.out, "06_samples.png")

# %% 3. Interpolation in the latent space
mu_test = vae.encode(tv.Tensor(x_test))[0].numpy()
a, b = int(np.argmax(y_test == 1)), int(np.argmax(y_test == 7))
steps = np.linspace(0, 1, 9)[:, None]
path_latent = vae.decode_mean(tv.Tensor(((1 - steps) * mu_test[a] + steps * mu_test[b]).astype(np.float32)))
path_pixels = (1 - steps[:, :, None, None]) * x_test[a] + steps[:, :, None, None] * x_test[b]
fig, axes = pyplot().subplots(2, 9, figsize=(9, 2.3))
for i in range(9):
    axes[0, i].imshow(path_pixels[i, 0], cmap="gray_r", vmin=0, vmax=1)
    axes[1, i].imshow(path_latent[i, 0], cmap="gray_r", vmin=0, vmax=1)
for ax in axes.ravel():
    ax.set_axis_off()
axes[0, 0].set_title(f"a {y_test[a]} to a {y_test[b]}: blending pixels (top) vs walking the latent space (bottom)",
                     loc="left", fontsize=9)
save_figure(fig, args.out, "06_interpolation.png")
mid_class = judge_digits(judge, path_latent)[0].argmax(1)
print(f"\n== 3. walking from a {y_test[a]} to a {y_test[b]} in latent space, the judge reads: {mid_class.tolist()}")

# %% 4. beta: the price of information, and posterior collapse
betas = [0.5, 1.0, 4.0, 16.0]
print(f"\n== 4. beta-VAE: loss = reconstruction + beta KL, beta in {betas} ({BETA_EPOCHS} epochs each)")
print(f"  {'beta':>5}  {'recon':>7}  {'KL':>6}  {'-ELBO':>7}  {'active':>6}")
beta_rows = {}
for beta in betas:
    model, _ = train_vae(beta=beta, epochs=BETA_EPOCHS, desc=f"beta {beta}")
    nelbo_b, recon_b, kl_b, _ = test_numbers(model, 1)
    active_b = active_units(model, x_test)[0]
    beta_rows[str(beta)] = {"recon": round(float(recon_b), 2), "kl": round(float(kl_b), 2),
                            "neg_elbo": round(float(nelbo_b), 2), "active_units": active_b}
    print(f"  {beta:5.1f}  {recon_b:7.2f}  {kl_b:6.2f}  {nelbo_b:7.2f}  {active_b:6d}")
kls = [beta_rows[str(b)]["kl"] for b in betas]
actives = [beta_rows[str(b)]["active_units"] for b in betas]
print(f"  as beta grows the KL {trend(kls, 0.5)} ({kls[0]:.1f} -> {kls[-1]:.1f} nats) and the active latents go "
      f"from {actives[0]} to {actives[-1]} of {LATENT}")
if actives[-1] < actives[0]:
    print(f"  at beta {betas[-1]:g}, {LATENT - actives[-1]} latents carry nothing: their q(z_j|x) is the prior for "
          "every x (posterior collapse); the decoder ignores them")

fig, ax = pyplot().subplots(figsize=(4.5, 3))
ax.plot(betas, kls, "o-", label="KL (nats)")
ax.plot(betas, [beta_rows[str(b)]["recon"] for b in betas], "s-", label="reconstruction (nats)")
ax2 = ax.twinx()
ax2.plot(betas, actives, "^--", color="gray", label="active latents")
ax.set_xscale("log")
ax.set_xlabel("beta")
ax.legend(fontsize=7, loc="upper center")
ax2.set_ylabel("active latents")
save_figure(fig, args.out, "06_beta.png")

# %% 5. A 2-D latent space
print("\n== 5. a VAE with a 2-D latent space: where the test digits land")
vae2, _ = train_vae(latent=2, epochs=BETA_EPOCHS, desc="2-D VAE")
mu2 = vae2.encode(tv.Tensor(x_test))[0].numpy()
centres = np.array([mu2[y_test == c].mean(0) for c in range(10)])
spread = np.mean([np.linalg.norm(mu2[y_test == c] - centres[c], axis=1).mean() for c in range(10)])
between = np.mean([np.linalg.norm(centres[i] - centres[j]) for i in range(10) for j in range(i + 1, 10)])
print(f"  mean distance of a digit to its class centre {spread:.2f}; mean distance between class centres "
      f"{between:.2f}: {compare('between classes', between, 'within a class', spread, verb='exceeds', fmt='.2f')}")
fig, axes = pyplot().subplots(1, 2, figsize=(9, 4))
sc = axes[0].scatter(mu2[:, 0], mu2[:, 1], c=y_test, cmap="tab10", s=8)
fig.colorbar(sc, ax=axes[0], ticks=range(10))
axes[0].set_title("test digits' mu(x), coloured by their (unused) label", fontsize=9)
grid = np.linspace(-2.5, 2.5, 12)
tiles = vae2.decode_mean(tv.Tensor(np.array([[u, v] for v in grid[::-1] for u in grid], np.float32)))
canvas = np.block([[tiles[r * 12 + c, 0] for c in range(12)] for r in range(12)])
axes[1].imshow(canvas, cmap="gray_r", extent=(-2.5, 2.5, -2.5, 2.5))
axes[1].set_title("the decoder over a grid of z", fontsize=9)
save_figure(fig, args.out, "06_latent_map.png")

# %% 6. Which latent knows which factor? Shapes whose generating factors are known
COLS = ("red", "green", "blue")
FACTORS = ("shape", "colour", "size", "x (4 bins)", "y (4 bins)")


def shape_data(n, seed):
    """One shape per 16x16 RGB image; its five factors: shape, colour, size (4 or 7 px), x and y bins."""
    from tinyvision.data import SHAPES, sample_scenes
    images, attrs = sample_scenes(n, 16, seed=seed, colors=COLS, sizes=(4, 7))
    return images, np.array([[SHAPES.index(a["shape"]), COLS.index(a["color"]), a["size_px"], int(a["x"] // 4),
                              int(a["y"] // 4)] for a in attrs])


xs, fs = shape_data(300 if QUICK else 3000, args.seed + 10)
xs_test, fs_test = shape_data(100 if QUICK else 1000, args.seed + 11)
print(f"\n== 6. disentanglement: {len(xs)} shapes (3 shapes x 3 colours x 2 sizes, anywhere on 16x16); which latent "
      "carries which factor (mutual information gap, Chen et al. 2018: 1 = one latent alone, 0 = none or several)")
print(f"  {'beta':>5}  " + "  ".join(f"{f:>10s}" for f in FACTORS) + "     MIG")
mig_rows = {}
for beta in (1.0, 4.0):
    model = VAE(image_shape=(3, 16, 16), latent_dim=LATENT, hidden=256, seed=args.seed)
    opt, rng = Adam(model.parameters(), lr=1e-3), np.random.default_rng(args.seed)
    for epoch in (bar := progress(range(2 if QUICK else 30), f"shapes beta {beta}", unit="epoch", leave=False)):
        for (xb,) in batches(xs, batch_size=64, seed=args.seed, epoch=epoch):
            loss, _, _ = negative_elbo(model, xb, rng, beta=beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
    mig, info = mutual_information_gap(model.encode(tv.Tensor(xs_test))[0].numpy(), fs_test)
    mig_rows[str(beta)] = {"mig": round(mig, 4), "gaps": [round(float(g), 3) for g in info["gap"]],
                           "best_latent": info["best"].tolist()}
    print(f"  {beta:5.1f}  " + "  ".join(f"{g:10.3f}" for g in info["gap"]) + f"  {mig:6.3f}")
print(f"  best latent per factor at beta 1: {mig_rows['1.0']['best_latent']}; at beta 4: {mig_rows['4.0']['best_latent']}")
print(f"  MIG: {compare('beta 4', mig_rows['4.0']['mig'], 'beta 1', mig_rows['1.0']['mig'], margin=0.02, fmt='.3f')}")
largest = max(max(row["gaps"]) for row in mig_rows.values())
if largest < 0.3:
    print(f"  every gap is below 0.3 (largest {largest:.3f}): no single latent owns any factor; the VAE spreads each")
    print("  over several latents. Nothing in the ELBO asks for one factor per latent; a larger beta only pushes")
    print("  towards it (and Locatello et al. 2019 show it cannot be guaranteed without supervision).")
else:
    print(f"  the largest gap is {largest:.3f}: some factor is carried mostly by one latent (see the table)")

# %% The headline numbers
print("result: " + json.dumps({
    "lesson": "06_vae", "quick": QUICK, "seed": args.seed, "latent_dim": LATENT, "epochs": EPOCHS,
    "test_neg_elbo_nats": round(float(nelbo), 2), "test_recon_nats": round(float(recon), 2),
    "test_kl_nats": round(float(kl), 2), f"test_neg_iwae{IWAE_K}_nats": round(float(niwae), 2),
    "active_units": n_active, "judge_accuracy": round(acc_judge, 4),
    "samples_classes_present": cover["classes_present"], "samples_confidence": round(cover["confidence"], 4),
    "frechet_vae": round(fd_vae, 3), "frechet_real_floor": round(fd_floor, 3), "frechet_sample_size": n_samples,
    "frechet_vae_vs_grey": round(fd_vae_grey, 3), "frechet_grey_floor": round(fd_floor_grey, 3),
    "beta": beta_rows, "latent2_within_vs_between": [round(float(spread), 3), round(float(between), 3)],
    "shapes_mig": mig_rows,
}))
