"""Lesson 11: DINO, a ViT that learns from pictures with no labels, and why it does not collapse.

Run:  python lessons/11_dino.py            (full: 3.1-3.6 minutes on 2 CPU cores)
      python lessons/11_dino.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    Labels are expensive; pictures are not. DINO (Caron et al. 2021) trains a ViT with no labels at
    all: a student learns to say, from any crop of a picture, what a teacher says about the whole
    picture, and the teacher is only an average of the student's past selves. The danger is obvious:
    both could agree to say the same thing about every picture. Two small devices prevent it, and this
    lesson shows each one failing alone.

The idea (tinyvision/models/dino.py, tinyvision/data/augment.py)
    1. Views: two large crops (global) and two small ones (local) of each picture, colours permuted
       and brightness jittered per view, so colour, place and scale are what the views disagree on.
    2. Student and teacher: the same ViT + head (MLP, L2-normalise, weight-normalised layer to K
       outputs). Teacher = EMA of the student; it sees only the global views.
    3. Loss: cross-entropy between the teacher's softmax((t - c) / tau_t) and the student's
       softmax(s / 0.1), for every pair of views but a view with itself.
    4. Centring (subtract c, a running mean of t) stops one output winning for every picture; a low
       tau_t (sharpening) stops the outputs spreading out evenly. Section 2 removes each in turn.
    5. Evaluation without training anything more: k-NN on the teacher's class tokens, with every
       training label or with 10 per class, against raw pixels, a random ViT, and a supervised ViT;
       and the class token's attention against the object's mask.

What to look at
    - Section 2: centring alone spreads every picture evenly over the K outputs (entropy ln K both
      ways); sharpening alone sends every picture to one output (0 both ways). With both, a short run
      still looks like the second; section 3's longer run shows the pictures spreading out.
    - Section 5: raw pixels fail at shape (the object moves and changes colour); a random ViT is already
      strong with many labels here; DINO's advantage is largest where features must carry the shape.
    - Section 6: whether the class token attends to the object, with no label ever given.

Exercises
    1. Raise tau_t to 0.04 (DINO's default for ImageNet). What does the teacher's entropy do here, and
       why might pictures this plain need a lower one? (wave 2 of the references: "lower the teacher
       temperature" is the advice for collapse on small custom data.)
    2. Take the colour jitter out of multi_crop. Which baseline does DINO then resemble?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import math
import time

import numpy as np

import tinyvision as tv
from tinyvision.data import SHAPES, sample_scenes
from tinyvision.data.augment import multi_crop
from tinyvision.models.dino import DINO, class_token_features, cosine_schedule
from tinyvision.models.vit import ViT
from tinyvision.optim import AdamW, WarmupCosine, param_groups_no_decay

from _common import accuracy_margin, compare, one_blas_thread, optimise, parse_args, progress, pyplot, save_figure

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
N_TRAIN, N_TEST = (300, 90) if QUICK else (4000, 1000)
STEPS = 6 if QUICK else 500
COLLAPSE_STEPS = 2 if QUICK else 100
BATCH, K, TAU_T, LR = 32, 64, 0.01, 5e-4
VIT = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0)

# %% 1. Pictures of one object; its shape is the label DINO never sees
sizes = ("small", 12, "large")
x_tr, a_tr = sample_scenes(N_TRAIN, 32, seed=args.seed, sizes=sizes)
x_te, a_te = sample_scenes(N_TEST, 32, seed=args.seed + 1, sizes=sizes)
y_tr = np.array([SHAPES.index(a["shape"]) for a in a_tr])
y_te = np.array([SHAPES.index(a["shape"]) for a in a_te])
draws = np.random.default_rng((args.seed, 11, 4))
FEW = [np.concatenate([draws.choice(np.nonzero(y_tr == c)[0], 10, replace=False) for c in range(len(SHAPES))])
       for _ in range(5)]                                       # five draws of 10 labelled pictures per class
print(f"== 1. {N_TRAIN} training and {N_TEST} test pictures of one shape ({', '.join(SHAPES)}), 8-16 pixels, any colour, "
      f"anywhere on 32x32; the shape is used only to score")


def knn(f_train, labels, f_test, k=20):
    """DINO's weighted k-NN: cosine similarity, the k nearest vote with weight exp(sim / 0.07)."""
    a = f_train / np.linalg.norm(f_train, axis=1, keepdims=True)
    b = f_test / np.linalg.norm(f_test, axis=1, keepdims=True)
    sim = b @ a.T
    k = min(k, len(a))
    nearest = np.argsort(-sim, axis=1)[:, :k]
    votes = np.zeros((len(b), len(SHAPES)))
    np.add.at(votes, (np.repeat(np.arange(len(b)), k), labels[nearest].ravel()),
              np.exp(np.take_along_axis(sim, nearest, 1) / 0.07).ravel())
    return float(np.mean(votes.argmax(1) == y_te))


def knn_both(f_train, f_test):
    few = [knn(f_train[idx], y_tr[idx], f_test, k=5) for idx in FEW]
    return {"all_labels": knn(f_train, y_tr, f_test), "10_per_class": float(np.mean(few)),
            "10_per_class_min": min(few), "10_per_class_max": max(few)}


# %% 2. The two collapses: centring alone, sharpening alone, both
def entropy(p):
    return -(p * np.log(p + 1e-30)).sum(-1)


def teacher_distributions(trial, images, tau_t):
    z = (trial.teacher_out(images) - trial.center.numpy()) / tau_t
    q = np.exp(z - z.max(-1, keepdims=True))
    return q / q.sum(-1, keepdims=True)


print(f"\n== 2. {COLLAPSE_STEPS} DINO steps three ways, then the teacher on 256 test pictures: the entropy of each "
      f"picture's distribution\n   (ln K = {math.log(K):.2f} when uniform, 0 when sure) and of their mean (ln K when the "
      f"pictures spread over all K outputs, 0 when all pick one)")
print(f"  {'':46s} {'per picture':>11s} {'of the mean':>11s}")
collapse = {}
for name, tau_t, centre in (("centring alone (tau_t = 0.1, no sharpening)", 0.1, 0.9),
                            ("sharpening alone (tau_t = 0.01, no centre)", TAU_T, None),
                            ("both (tau_t = 0.01, centre)", TAU_T, 0.9)):
    trial = DINO(VIT, out_dim=K, seed=args.seed)
    opt = AdamW(param_groups_no_decay(trial, 0.04), lr=LR)
    rng = np.random.default_rng((args.seed, 11, 1))
    for _ in progress(range(COLLAPSE_STEPS), name.split(" (")[0], unit="step"):
        views = multi_crop(x_tr[rng.integers(0, N_TRAIN, BATCH)], rng, n_local=2, local_scale=(0.2, 0.5))
        trial.train_step(views, opt, teacher_temp=tau_t, momentum=0.99, center_momentum=centre)
    q = teacher_distributions(trial, x_te[:256], tau_t)
    collapse[name.split(" (")[0]] = {"per_picture": round(float(entropy(q).mean()), 4),
                                     "of_mean": round(float(entropy(q.mean(0))), 4)}
    print(f"  {name:46s} {entropy(q).mean():11.2f} {entropy(q.mean(0)):11.2f}")

# %% 3. DINO, trained with no labels
model = DINO(VIT, out_dim=K, seed=args.seed)
random_vit = DINO(VIT, out_dim=K, seed=args.seed).backbone             # the same weights, never trained
opt = AdamW(param_groups_no_decay(model, 0.04), lr=LR)
lrs = cosine_schedule(LR, 1e-6, STEPS, warmup_steps=max(1, STEPS // 10))
momenta = cosine_schedule(0.99, 1.0, STEPS)
rng = np.random.default_rng((args.seed, 11, 2))
entropies = []
start = time.perf_counter()
for step in (bar := progress(range(STEPS), "DINO", unit="step")):
    for group in opt.param_groups:
        group["lr"] = lrs[step]
    views = multi_crop(x_tr[rng.integers(0, N_TRAIN, BATCH)], rng, n_local=2, local_scale=(0.2, 0.5))
    stats = model.train_step(views, opt, teacher_temp=TAU_T, momentum=momenta[step], freeze_last_layer=step < STEPS // 10)
    entropies.append(stats["teacher_entropy"])
dino_seconds = time.perf_counter() - start
q = teacher_distributions(model, x_te[:256], TAU_T)
trained = {"per_picture": round(float(entropy(q).mean()), 4), "of_mean": round(float(entropy(q.mean(0))), 4),
           "outputs_used": int(len(np.unique(q.argmax(1))))}
print(f"\n== 3. DINO: ViT (4x4 patches, width 64, 2 blocks) + head to K = {K}, {STEPS} steps of {BATCH} pictures "
      f"x 4 views ({dino_seconds:.0f} s), tau_t {TAU_T}, EMA momentum 0.99 -> 1, centre 0.9")
print(f"  the teacher's entropy per batch, first 50 steps {np.mean(entropies[:50]):.2f}, last 50 {np.mean(entropies[-50:]):.2f}; "
      f"on 256 test pictures at the end: per picture {trained['per_picture']:.2f}, of the mean {trained['of_mean']:.2f}, "
      f"{trained['outputs_used']} of {K} outputs someone's most likely")

# %% 4. The ceiling: the same ViT trained with the labels
supervised = ViT(**VIT, num_classes=len(SHAPES), seed=args.seed)
opt = AdamW(param_groups_no_decay(supervised, 0.05), lr=2e-3)
sup_steps = 6 if QUICK else 400
schedule = WarmupCosine(opt, total_steps=sup_steps, warmup_steps=max(1, sup_steps // 10))
rng = np.random.default_rng((args.seed, 11, 3))


def supervised_loss():
    idx = rng.integers(0, N_TRAIN, 64)
    return tv.ops.cross_entropy(supervised(x_tr[idx]), y_tr[idx])


optimise(supervised_loss, opt, sup_steps, "supervised ViT", schedule=schedule)


# %% 5. k-NN on frozen features
rows = {"raw pixels": (x_tr.reshape(N_TRAIN, -1), x_te.reshape(N_TEST, -1)),
        "random ViT": (class_token_features(random_vit, x_tr), class_token_features(random_vit, x_te)),
        "DINO (no labels)": (model.features(x_tr), model.features(x_te)),
        "supervised ViT (labels)": (class_token_features(supervised, x_tr), class_token_features(supervised, x_te))}
knn_scores = {name: knn_both(*f) for name, f in rows.items()}
print(f"\n== 5. k-NN shape accuracy on {N_TEST} test pictures (+-{accuracy_margin(N_TEST):.2f}; a guess is "
      f"{1 / len(SHAPES):.2f}): with all {N_TRAIN} training labels (k = 20), and with 10 per class (k = 5; the mean "
      f"and range over 5 draws of the labelled pictures)")
for name, sc in knn_scores.items():
    print(f"  {name:26s} {sc['all_labels']:6.3f} {sc['10_per_class']:8.3f}  ({sc['10_per_class_min']:.3f}-"
          f"{sc['10_per_class_max']:.3f})")
d, r = knn_scores["DINO (no labels)"], knn_scores["random ViT"]
print("  " + compare("DINO", d["all_labels"], "the random ViT", r["all_labels"], margin=accuracy_margin(N_TEST),
                     verb="beat", fmt=".3f") + " (all labels)")
spread = max(d["10_per_class_max"] - d["10_per_class_min"], r["10_per_class_max"] - r["10_per_class_min"])
print("  " + compare("DINO", d["10_per_class"], "the random ViT", r["10_per_class"],
                     margin=accuracy_margin(N_TEST) + spread, verb="beat", fmt=".3f")
      + " (10 per class; the margin adds the spread between draws)")


# %% 6. Where the class token looks: attention of the last block against the object's mask
def attention_iou(vit, images, masks, mass=0.6):
    """Mean IoU between the patches holding `mass` of the class token's last-block attention (mean over heads)
    and the patches the object touches."""
    with tv.no_grad():
        out = vit(tv.Tensor(images), return_all=True)
    att = np.asarray(out.attention[-1])[:, :, 0, 1:].mean(1)                # (B, N) class token -> patches
    ious, maps = [], []
    for a, m in zip(att, masks):
        order = np.argsort(-a)
        keep = np.zeros_like(a, dtype=bool)
        keep[order[:np.searchsorted(np.cumsum(a[order]) / a.sum(), mass) + 1]] = True
        ious.append((keep & m).sum() / (keep | m).sum())
        maps.append(a)
    return float(np.mean(ious)), np.array(maps)


grid, n_att = 32 // VIT["patch_size"], min(200, N_TEST)
masks = (x_te[:n_att].max(1) > 0).reshape(n_att, grid, VIT["patch_size"], grid, VIT["patch_size"]).any((2, 4))
masks = masks.reshape(n_att, -1)
teacher_backbone, _ = model.teacher
attention = {name: attention_iou(vit, x_te[:n_att], masks) for name, vit in
             (("random ViT", random_vit), ("DINO (no labels)", teacher_backbone), ("supervised ViT (labels)", supervised))}
print(f"\n== 6. the last block's class-token attention: IoU of the patches holding 60 % of it with the object's patches "
      f"({n_att} test pictures; the object covers {masks.mean():.0%} of the patches)")
for name, (iou, _) in attention.items():
    print(f"  {name:26s} {iou:.3f}")

fig, axes = pyplot().subplots(4, 6, figsize=(9, 6.4))
for j in range(6):
    axes[0, j].imshow(x_te[j].transpose(1, 2, 0), interpolation="nearest")
    for row, (name, (_, maps)) in enumerate(attention.items(), start=1):
        axes[row, j].imshow(maps[j].reshape(grid, grid), cmap="viridis", interpolation="nearest")
        if j == 0:
            axes[row, j].set_title(name, fontsize=7, loc="left")
for ax in axes.ravel():
    ax.axis("off")
save_figure(fig, args.out, "11_attention.png")

print("result: " + json.dumps({"lesson": "11_dino", "quick": QUICK, "seed": args.seed, "steps": STEPS,
                               "collapse": collapse, "trained_teacher": trained, "knn": {k: {m: round(v, 4) for m, v in s.items()}
                                                             for k, s in knn_scores.items()},
                               "attention_iou": {k: round(v[0], 4) for k, v in attention.items()},
                               "dino_seconds": round(dino_seconds, 1)}))
