"""Lesson 03: training a Vision Transformer, and measuring what the papers claim about it.

Run:  python lessons/03_vit.py            (full: under 4 minutes on 2 CPU cores)
      python lessons/03_vit.py --quick    (CI: well under a minute)      options: --seed N  --out DIR

Motivation
    Lessons 01 and 02 built the pieces: patches become tokens, attention mixes them, position
    embeddings say where each token came from. Here a whole ViT (tinyvision/models/vit.py) learns
    to read handwritten digits on a laptop CPU, and then we test four claims you will meet in
    every discussion of ViTs, by measurement rather than by quotation.

The idea
    1. Training. Image -> 16 patch tokens -> 4 pre-norm transformer blocks -> mean of the tokens ->
       a linear head. AdamW, warm-up then cosine learning rate, label smoothing, small random shifts.
    2. Data hunger. A ViT has no built-in notion that nearby pixels belong together or that a
       shifted digit is the same digit: a CNN's 3x3 sliding kernels assume both. Those assumptions
       (inductive biases) are worth a lot when data is scarce; a ViT must learn them from examples
       (Dosovitskiy et al. 2021, sec. 4.2-4.3). We train both on growing slices of the data.
    3. Patch size. Halving the patch size multiplies the tokens by 4 and the attention pairs by
       16. What does that buy in accuracy, and what does it cost in time?
    4. Tiny objects. A patch embedding is one linear map of all the pixels of a patch. An object much
       smaller than the patch is a small part of that vector; with a narrow model some of it may be
       lost. The run measures whether it is, at its own budget.
    5. Resolution. A learned position table has one row per patch slot of the training grid. A larger
       image has more slots; the table is resampled on its 2-D grid (ViT sec. 3.2) so the model can
       run at all, then a short fine-tune adapts it.

What to look at
    The printed tables and the sentences under them, which are computed from this run's numbers
    (two accuracies closer than about two standard errors are called "about equal"; --quick trains
    for seconds on a slice, so its sentences often report ties or no trend). In lessons/out/:
    03_training.png (loss and test accuracy), 03_data_hunger.png (ViT vs CNN as the training set
    grows), 03_patch_size.png (accuracy and time per step for each patch size), 03_tiny_objects.png
    (examples and accuracy per patch size).

Exercises
    1. Train with init="timm" (std 0.02) instead of init="xavier". What happens in the first
       epochs, and why does 0.02 suit a width of 768 better than a width of 64?
    2. Remove the random shifts (augment=None). Which gets worse, train or test accuracy? Why does
       augmentation matter more for the ViT than for the CNN?
    3. Replace global_pool="avg" by a class token (class_token=True, global_pool="token").
    4. In the tiny-object experiment, double the width D. How does the accuracy of the largest
       patch size change?
    5. Sections 2 and 3 train for ABLATION_EPOCHS = 15 passes over the data, to keep the lesson short.
       Raise it to 22 (about 500 steps). How close does the ViT come to the CNN with all the data?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import re

import tinyvision as tv
from tinyvision.data import load_digits, random_shift, tiny_object_task
from tinyvision.models import SmallCNN, ViT
from tinyvision.training import accuracy, train_classifier

from _common import accuracy_margin, compare, one_blas_thread, parse_args, progress, pyplot, save_figure, ticking, trend

args = parse_args(__doc__)
one_blas_thread()  # small matrices: one BLAS thread is as fast, and immune to a busy machine
QUICK = args.quick

# Digits upsampled 2x to 16x16: no new information, but a 1-pixel random shift is now half an
# original pixel, a gentle augmentation (a whole-pixel shift of an 8x8 digit hurts even a CNN).
UPSAMPLE, IMG, PATCH = 2, 16, 4
VIT = dict(img_size=IMG, patch_size=PATCH, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4,
           mlp_ratio=2.0, class_token=False, global_pool="avg", dropout=0.0, init="xavier")
RECIPE = dict(lr=3e-3, weight_decay=0.05, label_smoothing=0.1, batch_size=64)


def shift(xb, rng):
    return random_shift(xb, rng, max_shift=1)


def steps_per_epoch(n):
    return -(-n // RECIPE["batch_size"])


x_train, y_train = load_digits("train", seed=args.seed, upsample=UPSAMPLE)
x_test, y_test = load_digits("test", seed=args.seed, upsample=UPSAMPLE)
if QUICK:  # a slice of the data: CI checks that everything runs, not the final numbers
    x_train, y_train, x_test, y_test = x_train[:300], y_train[:300], x_test[:200], y_test[:200]
print(f"digits: {len(x_train)} train / {len(x_test)} test images of 1x{IMG}x{IMG}, 10 classes"
      f"{' (quick: a slice)' if QUICK else ''}")
# Two test accuracies closer than this are reported as about equal (two standard errors, at worst).
margin = accuracy_margin(len(x_test))
print(f"  accuracies on {len(x_test)} test images within {margin:.3f} of each other count as about equal")

# %% 1. Train the ViT
epochs = 3 if QUICK else 50   # the loss has levelled off by then (03_training.png)
print(f"\n== 1. a ViT on digits: {IMG}x{IMG} image, patch {PATCH} -> {(IMG // PATCH) ** 2} tokens, D {VIT['embed_dim']}, "
      f"depth {VIT['depth']}, {VIT['num_heads']} heads; {epochs} epochs")
vit = ViT(**VIT, seed=args.seed)
print(f"  {vit.num_parameters():,} parameters")
with progress(desc="ViT", total=epochs * steps_per_epoch(len(x_train)), unit="step") as bar:
    def log(line):   # each validation: a line of narrative, and its loss and accuracy on the bar
        bar.write("  " + line)
        bar.set_postfix_str(", ".join(re.findall(r"(?:loss|val accuracy) [\d.]+", line)))
    hist = train_classifier(vit, x_train, y_train, epochs=epochs, augment=ticking(bar, shift), seed=args.seed,
                            x_val=x_test, y_val=y_test, val_every=1 if QUICK else 10, log=log, **RECIPE)
test_accuracy = hist.val_accuracy[-1]
train_accuracy = accuracy(vit, x_train, y_train)
print(f"  test accuracy {test_accuracy:.4f} (train {train_accuracy:.4f}) in {hist.seconds:.0f} s, "
      f"{1000 * hist.seconds / len(hist.loss):.0f} ms per step")

plt = pyplot()
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
a1.plot(hist.steps, hist.loss, lw=0.6)
a1.set(xlabel="step", ylabel="training loss (label smoothing 0.1)", title="loss")
a2.plot(hist.val_steps, hist.val_accuracy, "o-")
a2.set(xlabel="step", ylabel="test accuracy", title=f"test accuracy, final {test_accuracy:.3f}")
save_figure(fig, args.out, "03_training.png")


# %% 2. Data hunger: ViT vs a small CNN as the training set grows
# Sections 2 and 3 share one budget, ABLATION_EPOCHS passes over the full training set. Then the ViT that
# section 2 trains on all the images is exactly section 3's patch-4 model (same seed, data and steps):
# it is trained once and used in both.
ABLATION_EPOCHS = 1 if QUICK else 15


def train_on_slice(model, n, steps, desc):
    """Train `model` on the first n training images for about `steps` steps; its History."""
    epochs_needed = max(1, round(steps / steps_per_epoch(n)))
    with progress(desc=desc, total=epochs_needed * steps_per_epoch(n), unit="step", leave=False) as bar:
        return train_classifier(model, x_train[:n], y_train[:n], epochs=epochs_needed, augment=ticking(bar, shift),
                                seed=args.seed, **RECIPE)


sizes = [50, 150, len(x_train)] if QUICK else [100, 300, len(x_train)]
budget = ABLATION_EPOCHS * steps_per_epoch(len(x_train))
print(f"\n== 2. data hunger: test accuracy after ~{budget} steps ({ABLATION_EPOCHS} epochs of all {len(x_train)}) "
      "on the first n training images")
print(f"  {'n':>6}  {'ViT':>7}  {'CNN':>7}")
hunger = {"n": sizes, "vit": [], "cnn": []}
for n in sizes:
    vit_n = ViT(**VIT, seed=args.seed)
    vit_n_hist = train_on_slice(vit_n, n, budget, f"ViT on {n}")
    cnn = SmallCNN(img_size=IMG, in_chans=1, num_classes=10, width=16, seed=args.seed)
    train_on_slice(cnn, n, budget, f"CNN on {n}")
    hunger["vit"].append(accuracy(vit_n, x_test, y_test))
    hunger["cnn"].append(accuracy(cnn, x_test, y_test))
    print(f"  {n:6d}  {hunger['vit'][-1]:7.3f}  {hunger['cnn'][-1]:7.3f}")
vit_params, cnn_params = vit_n.num_parameters(), cnn.num_parameters()
vit_all_data = (vit_n, vit_n_hist)   # the last slice is all the data: section 3's patch-4 run
print(f"  (ViT {vit_params:,} parameters, CNN {cnn_params:,})")
for i in (0, -1):
    print(f"  {sizes[i]} images: {compare('the CNN', hunger['cnn'][i], 'the ViT', hunger['vit'][i], margin)}")
TREND_WORDS = {"rises": "rises", "falls": "falls", "flat": f"stays within {margin:.3f}", "mixed": "goes up and down"}
print(f"  from {sizes[0]} to {sizes[-1]} images the ViT's accuracy {TREND_WORDS[trend(hunger['vit'], margin)]}, "
      f"the CNN's {TREND_WORDS[trend(hunger['cnn'], margin)]}")
gap_small = hunger["cnn"][0] - hunger["vit"][0]
gap_large = hunger["cnn"][-1] - hunger["vit"][-1]
if gap_large < gap_small - margin:
    gap_verdict = "the difference moves in the ViT's favour as the data grows."
elif gap_large > gap_small + margin:
    gap_verdict = "the difference moves in the CNN's favour as the data grows."
else:
    gap_verdict = f"it changes by less than {margin:.3f}: no trend in the gap at these sizes."
print(f"  CNN minus ViT: {gap_small:+.3f} with {sizes[0]} images, {gap_large:+.3f} with {sizes[-1]}: {gap_verdict}")
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(sizes, hunger["vit"], "o-", label="ViT")
ax.plot(sizes, hunger["cnn"], "s-", label="small CNN")
ax.set(xscale="log", xlabel="training images", ylabel="test accuracy", title="data hunger")
ax.legend()
save_figure(fig, args.out, "03_data_hunger.png")

# %% 3. Patch size: accuracy and time
patch_sizes = [2, 4, 8]
p_epochs = ABLATION_EPOCHS
print(f"\n== 3. patch size on {IMG}x{IMG} digits, {p_epochs} epochs each (patch {PATCH}: section 2's ViT on all "
      f"{len(x_train)} images)")
print(f"  {'patch':>5}  {'tokens':>6}  {'pairs':>6}  {'accuracy':>8}  {'ms/step':>7}")
ablation = {"patch": patch_sizes, "tokens": [], "accuracy": [], "ms_per_step": []}
for p in patch_sizes:
    if p == PATCH:
        model, h = vit_all_data
    else:
        model = ViT(**{**VIT, "patch_size": p}, seed=args.seed)
        h = train_on_slice(model, len(x_train), budget, f"ViT patch {p}")
    tokens = (IMG // p) ** 2
    ablation["tokens"].append(tokens)
    ablation["accuracy"].append(accuracy(model, x_test, y_test))
    ablation["ms_per_step"].append(1000 * h.seconds / len(h.loss))
    print(f"  {p:5d}  {tokens:6d}  {tokens ** 2:6d}  {ablation['accuracy'][-1]:8.3f}  {ablation['ms_per_step'][-1]:7.1f}")
fine, coarse = patch_sizes[0], patch_sizes[-1]
ms, acc = ablation["ms_per_step"], ablation["accuracy"]
cost = ms[0] / ms[-1]
speed = compare(f"patch {coarse}", ms[-1], f"patch {fine}", ms[0], higher_is_better=False, verb="is faster than",
                fmt=".1f", unit=" ms")
print(f"  time per step: {speed} ({cost:.1f}x)")
rival = max(range(1, len(patch_sizes)), key=lambda i: acc[i])   # the most accurate of the larger patches
print(f"  accuracy after {p_epochs} epochs: "
      f"{compare(f'patch {fine}', acc[0], f'patch {patch_sizes[rival]}', acc[rival], margin)}")
if acc[0] > acc[rival] + margin:
    print(f"  here the finer detail of patch {fine} was worth its {cost:.1f}x time per step.")
else:
    print(f"  more, smaller tokens give the model finer detail but a larger attention problem to learn from the "
          f"same {len(x_train):,} images: at this fixed budget, patch {fine}'s detail bought no accuracy.")
fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
a1.plot(patch_sizes, ablation["accuracy"], "o-")
a1.set(xlabel="patch size (px)", ylabel="test accuracy", xticks=patch_sizes, title="accuracy")
a2.plot(patch_sizes, ablation["ms_per_step"], "o-")
a2.set(xlabel="patch size (px)", ylabel="ms per training step", xticks=patch_sizes, yscale="log", title="cost")
save_figure(fig, args.out, "03_patch_size.png")

# %% 4. Tiny objects: which shape is the 4-pixel object, as the patch grows?
canvas, obj = 32, 4
n_tiny = (300, 200) if QUICK else (3000, 600)
t_epochs = 1 if QUICK else 6
xs_train, ys_train = tiny_object_task(n_tiny[0], canvas, obj, seed=args.seed)
xs_test, ys_test = tiny_object_task(n_tiny[1], canvas, obj, seed=args.seed + 1000)
TINY = dict(img_size=canvas, in_chans=3, num_classes=3, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
            class_token=False, global_pool="avg", init="xavier")
print(f"\n== 4. tiny objects: a {obj}x{obj} circle, square or triangle anywhere on a {canvas}x{canvas} canvas; "
      f"D {TINY['embed_dim']}, {t_epochs} epochs")
tiny = {"patch": [4, 8, 16], "accuracy": []}
tiny_chance = 1 / TINY["num_classes"]
for p in tiny["patch"]:
    model = ViT(**TINY, patch_size=p, seed=args.seed)
    with progress(desc=f"patch {p}", total=t_epochs * steps_per_epoch(len(xs_train)), unit="step", leave=False) as bar:
        train_classifier(model, xs_train, ys_train, epochs=t_epochs, augment=ticking(bar), seed=args.seed, **RECIPE)
    tiny["accuracy"].append(accuracy(model, xs_test, ys_test))
    print(f"  patch {p:2d}: object covers {obj * obj / (p * p):6.1%} of its patch's pixels, "
          f"{(canvas // p) ** 2:3d} tokens, test accuracy {tiny['accuracy'][-1]:.3f} (chance {tiny_chance:.3f})")
tiny_margin = accuracy_margin(n_tiny[1])
first, last, p_big = tiny["accuracy"][0], tiny["accuracy"][-1], tiny["patch"][-1]
growth = f"{first:.3f} -> {last:.3f} as the patch grows from {tiny['patch'][0]} to {p_big} px"
tiny_trend = trend(tiny["accuracy"], tiny_margin)
if max(abs(a - tiny_chance) for a in tiny["accuracy"]) <= tiny_margin:
    print(f"  every patch size is within {tiny_margin:.3f} of chance ({growth}): at this budget the model has not "
          "learned the task, so the patch size cannot show its effect.")
elif tiny_trend == "falls":
    print(f"  accuracy falls, {growth}: one linear map squeezes a {p_big}x{p_big}x3 patch into {TINY['embed_dim']} "
          f"numbers, and a {obj}x{obj} shape anywhere inside it is a small part of what they must keep.")
elif tiny_trend == "rises":
    print(f"  accuracy rises, {growth}: at this budget the larger patches did not lose the small object.")
elif tiny_trend == "flat":
    print(f"  accuracy stays within {tiny_margin:.3f}, {growth}: no measurable effect of the patch size here.")
else:
    print(f"  accuracy goes up and down ({', '.join(f'{a:.3f}' for a in tiny['accuracy'])}): no trend to read.")
fig, axes = plt.subplots(1, 4, figsize=(11, 2.8))
for i in range(3):
    axes[i].imshow(xs_test[i].transpose(1, 2, 0))
    axes[i].set(title=["circle", "square", "triangle"][ys_test[i]], xticks=[], yticks=[])
axes[3].plot(tiny["patch"], tiny["accuracy"], "o-")
axes[3].axhline(tiny_chance, ls="--", c="grey")
axes[3].set(xlabel="patch size", ylabel="test accuracy", xticks=tiny["patch"], title="tiny-object accuracy")
save_figure(fig, args.out, "03_tiny_objects.png")

# %% 5. A larger input: resample the position table, then fine-tune briefly
big = 2 * IMG
x_big_train, _ = load_digits("train", seed=args.seed, upsample=2 * UPSAMPLE)
x_big_test, _ = load_digits("test", seed=args.seed, upsample=2 * UPSAMPLE)
if QUICK:
    x_big_train, x_big_test = x_big_train[:300], x_big_test[:200]
print(f"\n== 5. resolution {IMG} -> {big}: the {IMG // PATCH}x{IMG // PATCH} position table meets an "
      f"{big // PATCH}x{big // PATCH} patch grid")
try:
    vit(tv.Tensor(x_big_test[:1]))
except ValueError as err:
    print(f"  without resampling: ValueError: {err}")
before = test_accuracy
vit.set_image_size(big, interpolation="bicubic")
after = accuracy(vit, x_big_test, y_test)
ft_epochs = 1 if QUICK else 3
with progress(desc="fine-tune", total=ft_epochs * steps_per_epoch(len(x_big_train)), unit="step", leave=False) as bar:
    train_classifier(vit, x_big_train, y_train, epochs=ft_epochs, augment=ticking(bar), seed=args.seed,
                     **{**RECIPE, "lr": 3e-4})
after_finetune = accuracy(vit, x_big_test, y_test)
print(f"  accuracy at {IMG}x{IMG}: {before:.3f}; at {big}x{big} with the bicubic-resampled table: {after:.3f}; "
      f"after {ft_epochs} fine-tuning epochs at {big}x{big}: {after_finetune:.3f}")
print(f"  the resampled table lets the model run at {big}x{big}: "
      f"{compare(f'the model at {big}x{big}', after, f'the model at {IMG}x{IMG}', before, margin)}")
print(f"  after fine-tuning: {compare('the fine-tuned model', after_finetune, 'the resampled one', after, margin)}")
print(f"  (the patch size stays {PATCH} px, so each patch now covers {(IMG / big) ** 2:.0%} of the digit area it "
      "covered before; the fine-tune lets the patch embedding adapt to that)")

# %% Result
print("result: " + json.dumps({
    "lesson": "03_vit", "quick": QUICK, "seed": args.seed,
    "test_accuracy": round(test_accuracy, 4), "train_accuracy": round(train_accuracy, 4),
    "train_seconds": round(hist.seconds, 1), "epochs": epochs,
    "data_hunger": {"n": sizes, "vit": [round(a, 4) for a in hunger["vit"]], "cnn": [round(a, 4) for a in hunger["cnn"]]},
    "patch_ablation": {str(p): {"accuracy": round(a, 4), "ms_per_step": round(t, 1)}
                       for p, a, t in zip(patch_sizes, ablation["accuracy"], ablation["ms_per_step"])},
    "tiny_object_accuracy": {str(p): round(a, 4) for p, a in zip(tiny["patch"], tiny["accuracy"])},
    "resample_accuracy": {"before": round(before, 4), "after_resample": round(after, 4),
                          "after_finetune": round(after_finetune, 4)},
}))
