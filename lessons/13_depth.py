"""Lesson 13: depth from one picture, and which cues a model uses to find it.

Run:  python lessons/13_depth.py            (full: about 3 minutes on 2 CPU cores)
      python lessons/13_depth.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    Two eyes measure depth by triangulation. One camera cannot: a small near object and a large far
    one make the same picture. Yet people, and monocular depth models (MiDaS, Depth Anything), judge
    depth from one picture well, because the world is regular: things of a kind have a size, near
    things cover far ones, ground texture crowds towards the horizon, and things standing farther
    away stand higher in the picture. Each regularity is a cue. Which ones does a model learn?

The idea (tinyvision/data/depth.py, tinyvision/models/depth.py)
    1. Scenes whose depth is geometry: a pinhole camera 1 m above a flat ground; objects 0.6 m tall
       standing 1.6-8 m away, drawn far to near; ground stripes one metre apart. Every pixel's depth
       is known exactly.
    2. A ViT reads the picture; a linear readout turns each patch token into 4x4 log depths (the core
       of DPT's reassembly).
    3. Loss: Eigen's scale-invariant log loss with lambda = 0.5 (lambda = 1 would forgive any global
       scale; 0.5 keeps some of it: this camera's scale can be learned).
    4. Scored as depth papers do: AbsRel and delta < 1.25, over every pixel and over object pixels
       alone. The ground's depth is a function of the row (the camera never moves), so a "rows only"
       predictor that knows nothing of objects is the baseline to beat.
    5. Cue ablation: the trained model is shown test scenes with one cue removed (random object
       sizes; no occlusion; a flat ground) and scored again. Removing a cue the model relies on costs
       accuracy; but such scenes also look unlike the training ones (random sizes even mislead), and
       a removal that costs nothing (scenes without overlaps are if anything easier) shows only that
       the model does not need the cue on these scenes, not that it never reads it.

Exercises
    1. Train with lambda = 1 and score with align="median" (depth_metrics). What changes, and why?
    2. Train on scenes with random sizes (cues=("occlusion", "texture")). Which cue takes over?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import time

import numpy as np

import tinyvision as tv
from tinyvision.data.depth import DEPTH_CUES, depth_scenes
from tinyvision.metrics import depth_metrics
from tinyvision.models.depth import DepthViT, scale_invariant_log_loss
from tinyvision.optim import AdamW, WarmupCosine, param_groups_no_decay

from _common import one_blas_thread, optimise, parse_args, pyplot, save_figure

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
N_TRAIN, N_TEST = (200, 40) if QUICK else (6000, 300)
STEPS = 20 if QUICK else 2500
BATCH = 32

# %% 1. Scenes with known depth
x_tr, d_tr = depth_scenes(N_TRAIN, 32, seed=args.seed)
x_te, d_te = depth_scenes(N_TEST, 32, seed=args.seed + 1)
print(f"== 1. {N_TRAIN} training and {N_TEST} test scenes, 32x32, 1-3 objects 0.6 m tall at 1.6-8 m; depth "
      f"{d_te.min():.1f}-{d_te.max():.1f} m (the sky is {d_te.max():.0f} m)")

# the baseline that knows the camera and nothing else: each row's median training depth
rows_only = np.median(d_tr, axis=(0, 2))                               # (H,)


def rows_prediction(n):
    return np.broadcast_to(rows_only[None, :, None], (n, 32, 32))


def object_pixels(depth):
    """Pixels whose depth differs from the bare ground and sky of their row."""
    return ~np.isclose(depth, rows_only[None, :, None])


# %% 2. Training: a ViT and a per-token readout, Eigen's loss with lambda = 0.5
model = DepthViT(img_size=32, patch_size=4, dim=64, depth=3, heads=4, seed=args.seed)
opt = AdamW(param_groups_no_decay(model, 0.05), lr=2e-3)
schedule = WarmupCosine(opt, total_steps=STEPS, warmup_steps=max(1, STEPS // 20))
rng = np.random.default_rng((args.seed, 13))


def batch_loss():
    idx = rng.integers(0, N_TRAIN, BATCH)
    return scale_invariant_log_loss(model(x_tr[idx]), d_tr[idx], lam=0.5)


start = time.perf_counter()
losses = optimise(batch_loss, opt, STEPS, "depth", schedule=schedule)
seconds = time.perf_counter() - start
n = min(100, STEPS)
print(f"\n== 2. DepthViT (4x4 patches, width 64, 3 blocks), {STEPS} steps of {BATCH} ({seconds:.0f} s); "
      f"loss first {n} steps {np.mean(losses[:n]):.4f}, last {n} {np.mean(losses[-n:]):.4f}")


def predict(images):
    with tv.no_grad():
        return np.exp(np.concatenate([model(images[i:i + 200]).numpy() for i in range(0, len(images), 200)]))


def scores(pred, depth):
    objects = object_pixels(depth)
    return {"all": depth_metrics(pred, depth), "objects": depth_metrics(pred[objects][None], depth[objects][None])}


# %% 3. Scores: every pixel, and object pixels alone, against the rows-only baseline
pred = predict(x_te)
model_scores, base_scores = scores(pred, d_te), scores(rows_prediction(N_TEST), d_te)
print(f"\n== 3. {N_TEST} test scenes ({object_pixels(d_te).mean():.0%} of pixels are objects)")
print(f"  {'':22s} {'AbsRel':>7s} {'d1':>6s}   objects: {'AbsRel':>7s} {'d1':>6s}")
for name, sc in (("the model", model_scores), ("rows only (baseline)", base_scores)):
    print(f"  {name:22s} {sc['all']['abs_rel']:7.3f} {sc['all']['d1']:6.3f}            {sc['objects']['abs_rel']:7.3f} "
          f"{sc['objects']['d1']:6.3f}")

# %% 4. Cue ablation: the same model, test scenes with one cue removed
print("\n== 4. cue ablation: the trained model on test scenes with one cue removed (object pixels)")
print(f"  {'test scenes':30s} {'AbsRel':>7s} {'d1':>6s} {'d1 lost':>8s}")
ablation = {"all cues": model_scores["objects"]}
print(f"  {'all cues':30s} {model_scores['objects']['abs_rel']:7.3f} {model_scores['objects']['d1']:6.3f}")
names = {"size": "random object sizes", "occlusion": "no occlusion", "texture": "flat ground (no texture)"}
for cue in DEPTH_CUES:
    x_ab, d_ab = depth_scenes(N_TEST, 32, seed=args.seed + 1, cues=tuple(c for c in DEPTH_CUES if c != cue))
    sc = scores(predict(x_ab), d_ab)["objects"]
    ablation[names[cue]] = sc
    print(f"  {names[cue]:30s} {sc['abs_rel']:7.3f} {sc['d1']:6.3f} {model_scores['objects']['d1'] - sc['d1']:8.3f}")

# %% 5. Figure: pictures, true and predicted depth
fig, axes = pyplot().subplots(3, 6, figsize=(12, 6))
for j in range(6):
    axes[0, j].imshow(x_te[j].transpose(1, 2, 0), interpolation="nearest")
    for ax, m in ((axes[1, j], d_te[j]), (axes[2, j], pred[j])):
        ax.imshow(np.log(m), vmin=np.log(d_te.min()), vmax=np.log(d_te.max()), cmap="magma_r", interpolation="nearest")
    for ax in axes[:, j]:
        ax.axis("off")
axes[0, 0].set_title("picture", fontsize=8, loc="left")
axes[1, 0].set_title("true log depth", fontsize=8, loc="left")
axes[2, 0].set_title("predicted", fontsize=8, loc="left")
save_figure(fig, args.out, "13_depth.png")

print("result: " + json.dumps({"lesson": "13_depth", "quick": QUICK, "seed": args.seed, "steps": STEPS,
                               "model": {k: {m: round(v, 4) for m, v in d.items()} for k, d in model_scores.items()},
                               "rows_only": {k: {m: round(v, 4) for m, v in d.items()} for k, d in base_scores.items()},
                               "ablation_objects_d1": {k: round(v["d1"], 4) for k, v in ablation.items()},
                               "train_seconds": round(seconds, 1)}))
