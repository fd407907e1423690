"""Lesson 12: DETR, detection as set prediction, and the Hungarian matching that makes it work.

Run:  python lessons/12_detr.py            (full: about 2.8 minutes on 2 CPU cores)
      python lessons/12_detr.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    A classic detector predicts boxes at thousands of fixed places (anchors) and then deletes the
    duplicates with non-maximum suppression, a hand-tuned step outside the network. DETR (Carion et
    al. 2020) asks the network for a SET instead: Q object queries, each saying "an object of class c
    in box b" or "no object". Training needs an answer to one question first: which query should have
    found which object? The Hungarian algorithm answers it, once per picture, at the lowest total cost;
    every query not matched is taught to say "no object". Duplicates are then a loss to pay, not a step
    to clean up.

The idea (tinyvision/models/detr.py, boxes.py)
    1. A ViT reads the picture into 64 patch tokens (4x4 pixels each).
    2. Eight learned queries go through a decoder: self-attention among the queries, cross-attention
       to the patch tokens, an MLP. Each query ends in class logits (3 shapes + "no object") and a box
       (cx, cy, w, h) in [0, 1].
    3. Matching cost of query j for object i:  -p_j(class_i) + 5 |b_j - b_i|_1 - 2 GIoU(b_j, b_i).
       linear_sum_assignment (written out in boxes.py) picks the cheapest one-to-one pairing.
    4. Loss: cross-entropy of every query against its matched class or "no object" (weight 0.1), plus
       L1 and 1 - GIoU of the matched boxes; repeated after every decoder layer (auxiliary losses).
    5. Scored as detectors are: mean average precision at IoU 0.5 (tinyvision/metrics), and counting
       read off the predicted set (the queries whose object score passes a threshold chosen on
       validation scenes), to set beside lesson 05's VLM answering "how many ... are there ?".

What to look at
    - The matching of section 2 against every possible assignment: the same minimum.
    - Which shape is hardest to detect, and whether the misses are boxes or classes (the class-blind AP).
    - Which region of the picture each query learned to cover (the figure's right panel).

Exercises
    1. Drop the auxiliary losses (pass only the last layer's output to set_loss). How much slower?
    2. Set eos_coef=1.0. What happens to the number of objects the model predicts?
    3. Match by the L1 cost alone: set_loss(..., match_weights=(0, 5, 0)). Which score suffers?
"""
# %% Imports and the command line
from __future__ import annotations

import itertools
import json
import time

import numpy as np

import tinyvision as tv
from tinyvision.data import SHAPES
from tinyvision.data.detection import detection_scenes
from tinyvision.metrics import mean_average_precision
from tinyvision.models.boxes import box_cxcywh_to_xyxy, linear_sum_assignment
from tinyvision.models.detr import DETR, matching_cost, set_loss
from tinyvision.optim import AdamW, WarmupCosine, param_groups_no_decay

from _common import accuracy_margin, one_blas_thread, optimise, parse_args, pyplot, save_figure

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
N_TRAIN, N_TEST = (300, 60) if QUICK else (8000, 400)
STEPS = 20 if QUICK else 1600
BATCH = 32
NO_OBJECT = len(SHAPES)

# %% 1. Data: scenes of 1-4 shapes with their true boxes
x_tr, t_tr = detection_scenes(N_TRAIN, 32, seed=args.seed)
x_te, t_te = detection_scenes(N_TEST, 32, seed=args.seed + 1)
print(f"== 1. {N_TRAIN} training and {N_TEST} test scenes of 1-4 objects (shapes {', '.join(SHAPES)}; any colour; "
      f"8 or 12 pixels on 32x32); boxes as (cx, cy, w, h) / 32")
labels, boxes = t_te[0]
for c, b in zip(labels, boxes):
    print(f"  test scene 0: {SHAPES[c]:8s} box {np.round(b, 3)}")

# %% 2. The matching, on an untrained model: the Hungarian algorithm against every assignment
model = DETR(len(SHAPES), dim=64, encoder_depth=2, decoder_depth=2, heads=4, num_queries=8, seed=args.seed)
with tv.no_grad():
    logits, pred = model(x_te[:1])[-1]
cost = matching_cost(logits.numpy()[0], pred.numpy()[0], labels, boxes)          # (queries, objects)
start = time.perf_counter()
brute = min(itertools.permutations(range(cost.shape[0]), cost.shape[1]),
            key=lambda qs: sum(cost[qq, i] for i, qq in enumerate(qs)))
brute_s = time.perf_counter() - start
start = time.perf_counter()
rows, cols = linear_sum_assignment(cost.T)                      # objects x queries: every object gets a query
hungarian_s = time.perf_counter() - start
print(f"\n== 2. matching {cost.shape[1]} objects to 8 queries of the untrained model (cost: -p(class) + 5 L1 - 2 GIoU)")
print(f"  Hungarian: object -> query {dict(zip(rows.tolist(), cols.tolist()))}, total cost {cost[cols, rows].sum():.4f} "
      f"({hungarian_s * 1e3:.2f} ms)")
print(f"  every assignment ({len(list(itertools.permutations(range(8), cost.shape[1])))} of them): object -> query "
      f"{dict(enumerate(brute))}, total cost {sum(cost[qq, i] for i, qq in enumerate(brute)):.4f} ({brute_s * 1e3:.2f} ms)")

# %% 3. Training: the set loss on every decoder layer's output
opt = AdamW(param_groups_no_decay(model, 1e-4), lr=2e-3)
schedule = WarmupCosine(opt, total_steps=STEPS, warmup_steps=max(1, STEPS // 20))
rng = np.random.default_rng((args.seed, 12))


def batch_loss():
    idx = rng.integers(0, N_TRAIN, BATCH)
    return set_loss(model(x_tr[idx]), [t_tr[i] for i in idx])[0]


start = time.perf_counter()
losses = optimise(batch_loss, opt, STEPS, "DETR", schedule=schedule)
seconds = time.perf_counter() - start
n = min(100, STEPS)
print(f"\n== 3. {STEPS} steps of {BATCH} scenes ({seconds:.0f} s), AdamW 2e-3, warm-up cosine; set loss of both decoder "
      f"layers, first {n} steps {np.mean(losses[:n]):.2f}, last {n} {np.mean(losses[-n:]):.2f}")

# %% 4. Scores: mAP at IoU 0.5, per class and class-blind; counting from the predicted set
model.eval()


def detect(images):
    """Per query: class probabilities (n, Q, K+1) and boxes (n, Q, 4), float64."""
    with tv.no_grad():
        outs = [model(images[i:i + 200])[-1] for i in range(0, len(images), 200)]
    lg = np.concatenate([o[0].numpy() for o in outs]).astype(np.float64)
    p = np.exp(lg - lg.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True), np.concatenate([o[1].numpy() for o in outs]).astype(np.float64)


prob, pred = detect(x_te)
classes, scores = prob[..., :NO_OBJECT].argmax(-1), prob[..., :NO_OBJECT].max(-1)
predictions = [(classes[i], scores[i], pred[i]) for i in range(N_TEST)]
m_ap, per_class = mean_average_precision(predictions, t_te, len(SHAPES))
blind, _ = mean_average_precision([(np.zeros_like(c), s, b) for c, s, b in predictions],
                                  [(np.zeros_like(lab), b) for lab, b in t_te], 1)
print(f"\n== 4. {N_TEST} test scenes: mAP@0.5 {m_ap:.3f} (" + ", ".join(f"{SHAPES[c]} {v:.3f}" for c, v in per_class.items())
      + f"); class-blind AP@0.5 {blind:.3f}: the boxes alone")

# counting: the queries whose best object score passes a threshold, the threshold chosen on validation scenes
x_val, t_val = detection_scenes(N_TEST, 32, seed=args.seed + 2)
prob_val, _ = detect(x_val)
val_scores = prob_val[..., :NO_OBJECT].max(-1)
val_counts = np.array([len(lab) for lab, _ in t_val])
thresholds = np.round(np.arange(0.30, 0.96, 0.05), 2)
val_acc = [float(np.mean((val_scores > th).sum(1) == val_counts)) for th in thresholds]
threshold = float(thresholds[int(np.argmax(val_acc))])
true_counts = np.array([len(lab) for lab, _ in t_te])
said = scores > threshold
counted = said.sum(1)
count_acc = float(np.mean(counted == true_counts))
argmax_acc = float(np.mean((prob.argmax(-1) != NO_OBJECT).sum(1) == true_counts))
print(f"  counting from the set: queries whose best object score > {threshold:.2f} (chosen on {N_TEST} validation scenes "
      f"from {thresholds[0]:.2f}-{thresholds[-1]:.2f}): {count_acc:.2f} of test scenes exact (+-{accuracy_margin(N_TEST):.2f});"
      f"\n  every query whose most likely class is an object: {argmax_acc:.2f}; a guess among 1-4: 0.25")
for k in range(1, 5):
    sel = true_counts == k
    print(f"    {k} object{'s' if k > 1 else ' '}: {np.mean(counted[sel] == k):.2f} exact, mean predicted "
          f"{counted[sel].mean():.2f} ({sel.sum()} scenes)")

# %% 5. Figure: detections on test scenes, and where each query looks
fig, axes = pyplot().subplots(1, 6, figsize=(15, 2.8))
colours = pyplot().cm.tab10(np.arange(8))
for ax, i in zip(axes[:5], range(5)):
    ax.imshow(x_te[i].transpose(1, 2, 0), interpolation="nearest", extent=(0, 1, 1, 0))
    for lab, b in zip(*t_te[i]):
        x0, y0, x1, y1 = box_cxcywh_to_xyxy(b)
        ax.add_patch(pyplot().Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", lw=1, ls="--"))
    for qq in np.nonzero(said[i])[0]:
        x0, y0, x1, y1 = box_cxcywh_to_xyxy(pred[i, qq])
        ax.add_patch(pyplot().Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colours[qq], lw=1.5))
        ax.text(x0, y0, f"{SHAPES[classes[i, qq]][:3]} {scores[i, qq]:.2f}", color=colours[qq], fontsize=6, va="bottom")
    ax.set_title(f"scene {i}: {len(t_te[i][0])} objects, {said[i].sum()} said", fontsize=8)
    ax.axis("off")
for qq in range(8):                                             # every box each query predicted, by its centre
    axes[5].scatter(pred[:, qq, 0], pred[:, qq, 1], s=2, color=colours[qq], label=f"query {qq}")
axes[5].set(xlim=(0, 1), ylim=(1, 0), title="box centres per query", aspect="equal")
axes[5].legend(fontsize=5, markerscale=3, loc="upper right")
save_figure(fig, args.out, "12_detections.png")

print("result: " + json.dumps({"lesson": "12_detr", "quick": QUICK, "seed": args.seed, "steps": STEPS,
                               "map50": round(m_ap, 4), "ap50": {SHAPES[c]: round(v, 4) for c, v in per_class.items()},
                               "class_blind_ap50": round(blind, 4), "count_accuracy": round(count_acc, 4),
                               "count_threshold": threshold, "count_accuracy_argmax": round(argmax_acc, 4),
                               "train_seconds": round(seconds, 1)}))
