"""Lesson 09: video transformers, where time is a direction and not just more pixels.

Run:  python lessons/09_video.py            (full: about 3.2 minutes on 2 CPU cores)
      python lessons/09_video.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    A video is a stack of frames, so the first idea is to run an image model on each frame and average.
    That model sees every frame, and still cannot say which way a ball rolls: the frames in reverse
    order are another clip it scores the same. Motion lives in the ORDER of the frames. Attending to
    everything at once (all T N patches of a clip) does see the order, once the tokens carry their
    time, but costs (T N)^2 per layer. TimeSformer (Bertasius et al. 2021) splits attention in two:
    each patch attends to itself across time (T^2 per patch), then each frame to itself (N^2 per frame).

The idea (tinyvision/models/video.py)
    1. Tokens: each frame cut into N patches, + a position per patch, + a time per frame (learned,
       starting at zero).
    2. Four attentions: "space" (frames alone, averaged at the end), "joint" (all T N tokens),
       "divided" (time, then space, in each block), "factorised" (ViViT: a spatial transformer per frame,
       then a temporal one over one token per frame).
    3. A task where time matters (is the shape moving left or right?) and one where it does not (which
       shape is it?). The clips wrap around the canvas, so every single frame is an object at a uniformly
       random place: one frame tells nothing about the direction (tinyvision/data/motion.py).

What to look at
    - Space-only attention on the direction task: at chance, whatever it is trained for, because
      reversing a clip leaves its logits unchanged (tests/test_video.py proves it) and turns a left-mover
      into a right-mover. On the shape task it does as well as the others.
    - The time embedding: it starts at zero (TimeSformer's init), where joint and divided attention are
      as blind to frame order as space-only; how far training moved it is printed.
    - Whether joint and factorised attention learn the direction in the same number of steps as
      divided attention, which compares each patch with itself across frames directly. At zero the time
      embedding leaves every model blind to frame order, and training has to move it away from there;
      the accuracy every 2 epochs (printed, and 09_learning.png) shows how long each attention stays at
      chance before it leaves.
    - The cost table: query-key pairs per layer, measured time and peak memory per batch of clips, as
      the number of frames grows; where joint attention stops fitting the memory budget.

Exercises
    1. With time_embed = 0, compute the gradient of the loss with respect to time_embed on a batch, and
       on the same batch reversed in time (labels swapped). Compare their sum with the gradient of
       pos_embed. What does it say about training from zero?
    2. Make the clips NOT wrap (the object bounces off the walls). Can a single frame now hint at the
       direction? Measure space-only attention again.
    3. Swap the order inside DividedBlock: space first, then time. Does anything measurable change?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np

import tinyvision as tv
from tinyvision.data import SHAPES, motion_task, shape_task
from tinyvision.models.video import ATTENTIONS, VideoTransformer, attention_scores
from tinyvision.training import train_classifier

from _common import accuracy_margin, compare, one_blas_thread, parse_args, progress, pyplot, save_figure, ticking

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
FRAMES, CANVAS, SPEED, PATCH = 4, 16, 2, 4
N_TRAIN, N_TEST = (300, 200) if QUICK else (3000, 600)
EPOCHS = {"direction": 4 if QUICK else 20, "shape": 4}       # batches of 64: about 940 and 190 steps in full mode
DIM, DEPTH, HEADS = 32, 2, 2

# %% 1. Data
tasks = {}
for name, make in (("direction", motion_task), ("shape", shape_task)):
    x_train, y_train = make(N_TRAIN, FRAMES, CANVAS, SPEED, seed=args.seed)
    x_test, y_test = make(2 * N_TEST, FRAMES, CANVAS, SPEED, seed=args.seed + 1)
    # the clip space is small (3 shapes x 8 colours x 2 directions x 16 x 11 positions): test only on clips
    # that are not also training clips, so that the accuracy is not memory
    seen = {clip.tobytes() for clip in x_train}
    fresh = np.array([clip.tobytes() not in seen for clip in x_test])
    x_test, y_test = x_test[fresh][:N_TEST], y_test[fresh][:N_TEST]
    tasks[name] = (x_train, y_train, x_test, y_test)
print(f"== 1. clips of {FRAMES} frames, {CANVAS}x{CANVAS}, one shape sliding {SPEED} pixels a frame on a canvas that "
      f"wraps; {N_TRAIN} training clips and {len(tasks['direction'][2])} test clips (none also a training clip) per task")
x_show, y_show = tasks["direction"][2][:4], tasks["direction"][3][:4]
fig, axes = pyplot().subplots(4, FRAMES, figsize=(1.6 * FRAMES, 6.6))
for row in range(4):
    for k in range(FRAMES):
        axes[row, k].imshow(x_show[row, k].transpose(1, 2, 0))
        axes[row, k].set_xticks([])
        axes[row, k].set_yticks([])
        if row == 0:
            axes[row, k].set_title(f"frame {k}", fontsize=8)
    axes[row, 0].set_ylabel(("left", "right")[y_show[row]], fontsize=8)
save_figure(fig, args.out, "09_clips.png")


# %% 2. Train every attention on both tasks
def train(attention, task, epochs, val_every=0):
    """The project's classifier loop (tinyvision.training.train_classifier); returns (model, History)."""
    x_train, y_train, x_test, y_test = tasks[task]
    model = VideoTransformer(FRAMES, CANVAS, PATCH, in_chans=3, dim=DIM, depth=DEPTH, num_heads=HEADS,
                             num_classes=int(y_train.max()) + 1, attention=attention, seed=args.seed)
    steps = epochs * -(-len(x_train) // 64)
    with progress(desc=f"{attention}, {task}", total=steps, unit="step", leave=False) as bar:
        history = train_classifier(model, x_train, y_train, epochs=epochs, batch_size=64, lr=2e-3, weight_decay=0.0,
                                   warmup_fraction=0.1, seed=args.seed, augment=ticking(bar), x_val=x_test, y_val=y_test,
                                   val_every=val_every)
    return model, history


print(f"\n== 2. training: width {DIM}, {DEPTH} blocks, {HEADS} heads, patches of {PATCH} "
      f"(N = {(CANVAS // PATCH) ** 2} per frame), batches of 64 clips, AdamW 2e-3, {EPOCHS['direction']} epochs on the "
      f"direction task and {EPOCHS['shape']} on the shape task; test accuracy (+-{accuracy_margin(N_TEST):.2f} is noise)")
print(f"  {'attention':11s} {'parameters':>10s} {'direction':>10s} {'shape':>7s} {'|time embed|':>13s} {'seconds':>8s}")
results, curves = {}, {}
for attention in ATTENTIONS:
    model, hist = train(attention, "direction", EPOCHS["direction"], val_every=2)
    acc_dir, s_dir, curves[attention] = hist.val_accuracy[-1], hist.seconds, hist.val_accuracy
    _, hist = train(attention, "shape", EPOCHS["shape"])
    acc_shape, s_shape = hist.val_accuracy[-1], hist.seconds
    moved = float(np.abs(model.time_embed.numpy()).max())
    params = sum(p.size for p in model.parameters())
    results[attention] = {"direction": round(acc_dir, 4), "shape": round(acc_shape, 4), "parameters": params,
                          "time_embed_max": round(moved, 4), "seconds": round(s_dir + s_shape, 1)}
    print(f"  {attention:11s} {params:10d} {acc_dir:10.3f} {acc_shape:7.3f} "
          f"{moved if attention != 'space' else float('nan'):13.3f} {s_dir + s_shape:8.1f}")
margin = accuracy_margin(N_TEST)
print("  space-only on the direction task against chance: "
      + compare("space-only", results["space"]["direction"], "chance", 0.5, margin=margin, verb="is above", fmt=".3f"))
for attention in ("joint", "divided", "factorised"):
    print(f"  {attention} on the direction task against space-only: "
          + compare(attention, results[attention]["direction"], "space-only", results["space"]["direction"],
                    margin=margin, verb="beats", fmt=".3f"))
print("  (|time embed| is the largest entry of the learned time embedding, which starts at zero, where the model is\n"
      "   as blind to frame order as space-only; space-only has none)")
epochs_seen = list(range(2, EPOCHS["direction"] + 1, 2))
print("  direction test accuracy every 2 epochs (the time embedding starts at zero, where order is invisible):")
print("  " + f"{'epoch':11s}" + "".join(f"{e:6d}" for e in epochs_seen))
for attention in ATTENTIONS:
    print("  " + f"{attention:11s}" + "".join(f"{a:6.2f}" for a in curves[attention]))
fig, ax = pyplot().subplots(figsize=(6, 3.6))
for attention in ATTENTIONS:
    ax.plot(epochs_seen, curves[attention], marker="o", label=attention)
ax.axhline(0.5, color="grey", lw=0.8, ls="--")
ax.set(xlabel="epoch", ylabel="direction test accuracy", ylim=(0.3, 1.02), title="learning which way the shape moves")
ax.legend(fontsize=8)
save_figure(fig, args.out, "09_learning.png")

# %% 3. The cost of attending across time
print("\n== 3. cost per layer and head: query-key pairs scored, for N patches per frame and T frames; then the whole "
      "model's forward pass on a batch of 8 clips, on the CPU (median of 3), with its peak memory (tracemalloc)")
BUDGET_MB = 64
def measure(canvas, T):
    """One row of the table: per attention, the pairs it scores, ms per forward of 8 clips, peak MB."""
    n = (canvas // PATCH) ** 2
    x = np.random.default_rng(0).random((8, T, 3, canvas, canvas)).astype(np.float32)
    row = {"N": n, "T": T}
    for attention in ATTENTIONS:
        model = VideoTransformer(T, canvas, PATCH, dim=DIM, depth=DEPTH, num_heads=HEADS, attention=attention, seed=0)
        times = []
        with tv.no_grad():
            model(tv.Tensor(x))                     # warm-up
            for _ in range(3):
                t0 = time.perf_counter()
                model(tv.Tensor(x))
                times.append(time.perf_counter() - t0)
            tracemalloc.start()
            model(tv.Tensor(x))
            peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
            tracemalloc.stop()
        row[attention] = {"pairs": attention_scores(attention, T, n),
                          "ms_per_batch": round(1000 * float(np.median(times)), 2), "peak_mb": round(peak, 2)}
    return row


sizes = ((16, (1, 2, 4)), (32, (1, 2, 4, 8))) if QUICK else ((16, (1, 2, 4, 8)), (32, (1, 2, 4, 8, 16)))
with tv.use_device("cpu"):        # tracemalloc sees host memory only, so this table is measured on the CPU
    cost_rows = [measure(canvas, T) for canvas, frame_counts in sizes for T in frame_counts]
print(f"  {'N':>3s} {'T':>3s}  {'pairs: joint':>12s} {'divided':>8s} {'ratio':>6s}  "
      f"{'ms: joint':>9s} {'divided':>8s} {'ratio':>6s}  {'MB: joint':>9s} {'divided':>8s}")
for row in cost_rows:
    j, d = row["joint"], row["divided"]
    print(f"  {row['N']:3d} {row['T']:3d}  {j['pairs']:12d} {d['pairs']:8d} {j['pairs'] / d['pairs']:6.1f}  "
          f"{j['ms_per_batch']:9.1f} {d['ms_per_batch']:8.1f} {j['ms_per_batch'] / d['ms_per_batch']:6.1f}  "
          f"{j['peak_mb']:9.1f} {d['peak_mb']:8.1f}")
over = [r for r in cost_rows if r["joint"]["peak_mb"] > BUDGET_MB]
if over:
    first = over[0]
    print(f"  memory budget {BUDGET_MB} MB per batch: joint attention first exceeds it at N = {first['N']}, T = {first['T']} "
          f"({first['joint']['peak_mb']:.0f} MB), where divided attention needs {first['divided']['peak_mb']:.0f} MB")
else:
    print(f"  memory budget {BUDGET_MB} MB per batch: no measured size exceeds it (largest joint: "
          f"{max(r['joint']['peak_mb'] for r in cost_rows):.1f} MB)")
big = [r for r in cost_rows if r["N"] == cost_rows[-1]["N"]]
fig, axes = pyplot().subplots(1, 2, figsize=(11, 4))
for attention in ATTENTIONS:
    axes[0].plot([r["T"] for r in big], [r[attention]["ms_per_batch"] for r in big], marker="o", label=attention)
    axes[1].plot([r["T"] for r in big], [r[attention]["peak_mb"] for r in big], marker="o", label=attention)
axes[1].axhline(BUDGET_MB, color="gray", linestyle="--", label=f"budget {BUDGET_MB} MB")
for ax, label in zip(axes, ("forward, ms per batch of 8", "peak memory, MB")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(f"frames T (N = {big[0]['N']} patches per frame)")
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
save_figure(fig, args.out, "09_cost.png")

# %% The headline numbers
print("result: " + json.dumps({
    "lesson": "09_video", "quick": QUICK, "seed": args.seed, "frames": FRAMES, "train_clips": N_TRAIN,
    "epochs": EPOCHS, "accuracy": results, "cost": cost_rows, "budget_mb": BUDGET_MB,
}))
