"""Lesson 09b: generating video that holds together: one denoiser run frame by frame, and across time.

Run:  python lessons/09b_video_generation.py            (full: about 3 minutes on 2 CPU cores)
      python lessons/09b_video_generation.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    An image generator can already draw every frame of a clip. Run it frame by frame, though, and each
    frame is a fresh picture: the red square of frame 0 is a blue triangle in frame 1 ("identity
    drift"), and whatever moves jumps about ("flicker"). A clip is one sample, not T samples; the
    denoiser has to see the frames together. The cheapest way to let it is lesson 09's divided
    attention: before each spatial block, every patch attends to itself in the other frames.

The idea (tinyvision/diffusion/video.py)
    1. Training clips: one shape crossing a 6x12 strip, 1 pixel a frame, left or right
       (tinyvision.data.sliding_shapes): 3 shapes x 4 colours.
    2. ONE DiT denoiser with divided space-time attention, trained on clips, but every other batch
       with its temporal attention switched off (model(x, t, alone=True)): those batches teach it to
       denoise frames as single images. Ho et al. (2022) train video diffusion models on images this
       way. Sampling with alone=True is the per-frame generator; without it, the space-time one. The
       two share every spatial weight, so the only difference between them is attention across time.
    3. Sample clips both ways from the same noise and read every frame: its colour off the pixels
       (read_object), its shape by a classifier trained on real frames, and the object's centre.

What to look at
    - Identity kept (the same shape and colour in every frame, read by the judges of section 1):
      per-frame sampling can only keep it by luck, about (1/4)^3 for colour alone; with attention
      across time it should be kept.
    - Steady motion (every step 1 pixel the same way) and the jerk (mean change of the step).
    - The strict figure: every frame read off its pixels alone (read_object), which one stray pixel
      spoils; and the share of clean frames: how well the network draws one frame, which is the same
      for both samplers (they share the spatial weights) and caps what either can keep.
    - lessons/out/09b_clips.png: real clips, per-frame samples, space-time samples (same noise).

Exercises
    1. Sample per-frame with the same noise x_T in every frame (np.repeat). Does identity survive?
       Does motion?
    2. Train with alone=True on every batch, then sample with alone=False: what does temporal attention
       that was never trained (its output layer is still zero) do?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import time

import numpy as np

from tinyvision import nn
from tinyvision.data import COLORS, SHAPES, motion_steadiness, object_centres, read_object, sliding_shapes
from tinyvision.diffusion import as_denoiser, diffusion_loss, make_schedule, sample
from tinyvision.diffusion.video import VideoDiT
from tinyvision.optim import AdamW, WarmupCosine
from tinyvision.tensor import Tensor, no_grad
from tinyvision.training import train_classifier

from _common import accuracy_margin, compare, one_blas_thread, optimise, parse_args, progress, pyplot, save_figure

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
FRAMES, CANVAS, SPEED, SIZE = 4, (6, 12), 1, 4
PALETTE = ("red", "green", "blue", "yellow")
N_TRAIN = 500 if QUICK else 4000
STEPS = 40 if QUICK else 2400
N_SAMPLES = 20 if QUICK else 200
DDIM_STEPS = 20 if QUICK else 100
PREDICTION = "v"

# %% 1. Data, and the judges that read a frame
clips, records = sliding_shapes(N_TRAIN, FRAMES, CANVAS, SPEED, SIZE, seed=args.seed, colors=PALETTE)
x_train = clips * 2 - 1                                  # pixels in [-1, 1]
print(f"== 1. {N_TRAIN} clips of {FRAMES} frames, {CANVAS[0]}x{CANVAS[1]}: one of {len(PALETTE)} colours x "
      f"{len(SHAPES)} shapes of {SIZE} pixels, crossing the strip {SPEED} pixel a frame, left or right")

# the judges of a generated frame. Colour: each bright pixel (a channel above 0.5) takes the nearest palette
# colour, and the frame the colour most of its pixels have (a stray pixel does not change it). Shape: a small
# MLP trained on real frames (other clips than the denoiser's), with pixel noise so that it also answers on
# imperfect frames. The strict reading (read_object) asks more: shape and colour from every bright pixel.
judge_clips, judge_records = sliding_shapes(1000 if QUICK else 3000, FRAMES, CANVAS, SPEED, SIZE, seed=args.seed + 1,
                                            colors=PALETTE)
frames_x = judge_clips.reshape((-1, 3) + CANVAS)
frames_y = np.repeat([SHAPES.index(r["shape"]) for r in judge_records], FRAMES)
n_fit = len(frames_x) * 4 // 5
shape_judge = nn.Sequential(nn.Flatten(), nn.Linear(3 * CANVAS[0] * CANVAS[1], 64, seed=args.seed), nn.ReLU(),
                            nn.Linear(64, len(SHAPES), seed=args.seed + 1))
history = train_classifier(shape_judge, frames_x[:n_fit], frames_y[:n_fit], epochs=3 if QUICK else 8, lr=3e-3,
                           weight_decay=0.0, seed=args.seed, x_val=frames_x[n_fit:], y_val=frames_y[n_fit:],
                           augment=lambda xb, rng: xb + rng.normal(0.0, 0.15, xb.shape).astype(xb.dtype))
shape_judge.eval()
print(f"  shape judge (MLP on real frames): held-out real-frame accuracy {history.val_accuracy[-1]:.3f}")


PALETTE_RGB = np.array([COLORS[c] for c in PALETTE])                  # (4, 3)


def frame_colours(frames, threshold=0.5):
    """The palette colour most bright pixels of each frame (n, 3, H, W) are nearest to; "" with no bright pixel."""
    rgb = frames.transpose(0, 2, 3, 1).reshape(len(frames), -1, 3)
    nearest = ((rgb[:, :, None] - PALETTE_RGB) ** 2).sum(-1).argmin(-1)             # (n, H W)
    bright = rgb.max(-1) > threshold
    votes = np.stack([(bright & (nearest == c)).sum(1) for c in range(len(PALETTE))], axis=1)
    return np.where(bright.any(1), np.array(PALETTE)[votes.argmax(1)], "")


def read_clips(clips):
    """Per clip: colour kept, shape kept, identity kept (both), identity kept by read_object alone (strict:
    shape and colour off the pixels of every frame), steady motion, jerk, and the share of clean frames
    (read_object sees one palette-coloured object of the drawn size). clips (n, T, 3, H, W) in [0, 1]."""
    n = len(clips)
    frames = clips.reshape((-1, 3) + clips.shape[-2:])
    with no_grad():
        shapes = shape_judge(Tensor(frames.astype(np.float32))).numpy().argmax(axis=1).reshape(n, -1)
    read = [read_object(f) for f in frames]
    colours = frame_colours(frames).reshape(n, -1)
    strict = np.array([f"{r['shape']} {r['color']}" if r else "" for r in read]).reshape(n, -1)
    empty = colours == ""
    same = lambda a: (a == a[:, :1]).all(axis=1) & ~empty.any(axis=1)      # noqa: E731 - one line, read below
    steady, jerk = motion_steadiness(object_centres(clips), SPEED)
    clean = np.array([r is not None and r["size_px"] == SIZE and r["color"] in PALETTE for r in read]).reshape(n, -1)
    return {"colour_kept": same(colours), "shape_kept": same(shapes), "identity_kept": same(colours) & same(shapes),
            "strict_identity_kept": same(strict) & (strict != "").all(axis=1), "steady_motion": steady, "jerk": jerk, "clean_frames": clean.mean(1)}


def summary(read):
    out = {k: round(float(np.mean(v)), 4) for k, v in read.items() if k != "jerk"}
    out["jerk"] = round(float(np.nanmean(read["jerk"])), 3) if not np.isnan(read["jerk"]).all() else None
    return out


real = summary(read_clips(clips[:N_SAMPLES]))
print(f"  on {N_SAMPLES} real clips (the ceiling): identity kept {real['identity_kept']:.2f}, strict "
      f"{real['strict_identity_kept']:.2f}, steady motion {real['steady_motion']:.2f}, jerk {real['jerk']:.2f} px")

# %% 2. One denoiser, trained on clips and, every other batch, on frames alone
sched = make_schedule("cosine", 1000)
model = VideoDiT(FRAMES, CANVAS, patch_size=2, in_chans=3, dim=48, depth=2, heads=4, temporal="divided",
                 seed=args.seed)
opt = AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
lr_schedule = WarmupCosine(opt, total_steps=STEPS, warmup_steps=max(1, STEPS // 10))
rng = np.random.default_rng((args.seed, 1))
step_count = [0]


def batch_loss():
    alone = step_count[0] % 2 == 1                       # odd steps: an image batch, temporal attention off
    step_count[0] += 1
    batch = x_train[rng.integers(0, N_TRAIN, 32)]
    return diffusion_loss(lambda x, t: model(x, t, alone=alone), sched, batch, rng, prediction=PREDICTION)


print(f"\n== 2. a DiT with divided space-time attention (patches of 2, width 48, 2 blocks), {PREDICTION}-prediction, "
      f"cosine schedule T = 1000, {STEPS} steps of 32 clips, every other step with the frames alone")
start = time.perf_counter()
losses = optimise(batch_loss, opt, STEPS, "video denoiser", schedule=lr_schedule)
train_seconds = time.perf_counter() - start
k = max(2, min(200, STEPS // 2)) // 2 * 2
print(f"  loss over the last {k} steps: clip batches {np.mean(losses[-k:][0::2]):.3f}, frame batches "
      f"{np.mean(losses[-k:][1::2]):.3f}; {train_seconds:.0f} s")

# %% 3. Sample clips both ways from the same noise, and read them
print(f"\n== 3. {N_SAMPLES} clips each way, from the same noise (DDIM {DDIM_STEPS} steps with eta = 1, x0_hat clipped to "
      f"[-1, 1]); "
      f"share of clips (+-{accuracy_margin(N_SAMPLES):.2f} is noise)")
results, samples = {}, {}
for name, alone in progress((("per-frame", True), ("space-time", False)), "sampling"):
    denoise = as_denoiser(lambda x, t, alone=alone: model(x, t, alone=alone), prediction=PREDICTION, schedule=sched)
    x = sample(denoise, sched, (N_SAMPLES, FRAMES, 3) + CANVAS, np.random.default_rng((args.seed, 9)), "ddim",
               DDIM_STEPS, eta=1.0, clip=1.0, clipped_eps=True)
    samples[name] = np.clip((x + 1) / 2, 0, 1)
    results[name] = summary(read_clips(samples[name]))
print(f"  {'':11s} {'colour':>7s} {'shape':>6s} {'identity':>9s} {'strict':>7s} {'steady':>7s} {'jerk px':>8s} "
      f"{'clean frames':>13s}")
for name, row in (("real", real),) + tuple(results.items()):
    jerk = f"{row['jerk']:8.2f}" if row["jerk"] is not None else f"{'-':>8s}"
    print(f"  {name:11s} {row['colour_kept']:7.2f} {row['shape_kept']:6.2f} {row['identity_kept']:9.2f} "
          f"{row['strict_identity_kept']:7.2f} {row['steady_motion']:7.2f} {jerk} {row['clean_frames']:13.2f}")
print("  (colour / shape / identity: kept in every frame, colour by most bright pixels and shape by the MLP; strict:\n"
      "   shape and colour both read off the pixels; steady: every step 1 pixel, one way; jerk: mean change of the\n"
      "   step, over clips with an object in every frame; clean frames: the share of frames whose pixels are one\n"
      "   object of the drawn size in a palette colour)")
margin = accuracy_margin(N_SAMPLES)
st, pf = results["space-time"], results["per-frame"]
print("  identity: " + compare("space-time", st["identity_kept"], "per-frame", pf["identity_kept"], margin=margin,
                               verb="keeps it more often than", fmt=".2f"))
print("  motion: " + compare("space-time", st["steady_motion"], "per-frame", pf["steady_motion"], margin=margin,
                             verb="moves steadily more often than", fmt=".2f"))
print(f"  by luck alone, per-frame sampling keeps a colour through {FRAMES} frames with chance about "
      f"(1/{len(PALETTE)})^{FRAMES - 1} = {(1 / len(PALETTE)) ** (FRAMES - 1):.3f}")
print("  frame quality: " + compare("space-time", st["clean_frames"], "per-frame", pf["clean_frames"], margin=margin,
                                    verb="draws clean frames more often than", fmt=".2f")
      + " (the same spatial weights draw both)")
if st["clean_frames"] < 0.9:
    p4 = st["clean_frames"] ** FRAMES
    print(f"  only {st['clean_frames']:.0%} of the space-time frames are clean. Were frames clean independently, all {FRAMES} "
          f"would be in {p4:.2f}\n  of the clips; identity (colour AND shape in every frame) was kept in "
          f"{st['identity_kept']:.2f}, colour alone in {st['colour_kept']:.2f}")
    if abs(st["identity_kept"] - p4) <= margin and st["colour_kept"] > st["identity_kept"] + margin:
        print(f"  so what caps identity here is how well this small denoiser draws one frame after {STEPS} steps (a blob\n"
              f"  of the right colour keeps the colour, not a readable shape), more than the agreement between frames")

rows = [("real", clips[:6])] + [(name, samples[name][:6]) for name in ("per-frame", "space-time")]
fig, axes = pyplot().subplots(1, len(rows), figsize=(3.2 * len(rows), 3.6))
for ax, (label, group) in zip(axes, rows):
    pad = lambda a, w, v: np.pad(a, w, constant_values=v)                  # noqa: E731
    strip = np.concatenate([pad(np.concatenate([pad(f.transpose(1, 2, 0), ((0, 0), (0, 1), (0, 0)), 0.35) for f in c],
                                               axis=1), ((1, 1), (1, 1), (0, 0)), 0.7) for c in group], axis=0)
    ax.imshow(strip, interpolation="nearest")
    ax.set_title(f"{label}: frames left to right", fontsize=9)
    ax.axis("off")
save_figure(fig, args.out, "09b_clips.png")

# %% The headline numbers
print("result: " + json.dumps({
    "lesson": "09b_video_generation", "quick": QUICK, "seed": args.seed, "train_clips": N_TRAIN, "steps": STEPS,
    "train_seconds": round(train_seconds, 1), "final_loss": round(float(np.mean(losses[-k:])), 4),
    "judge_accuracy": round(float(history.val_accuracy[-1]), 4), "real": real, "samples": results,
}))
