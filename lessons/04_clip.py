"""Lesson 04: CLIP, one embedding space for pictures and words, and where it breaks.

Run:  python lessons/04_clip.py            (full: under 4 minutes on 2 CPU cores)
      python lessons/04_clip.py --quick    (CI: well under a minute)      options: --seed N  --out DIR

Motivation
    A classifier knows a fixed list of labels. CLIP (Radford et al. 2021) learns from (image, caption)
    pairs instead: an image encoder and a text encoder map both into one space where a picture lands
    next to the sentences that describe it. Then classification needs no new training ("zero-shot":
    embed a sentence per class, pick the nearest), and search works both ways (text -> image and
    image -> text). Here both towers are trained from scratch on captioned coloured shapes.

The idea
    1. A batch of B pairs gives a B x B matrix of cosine similarities, scaled by a learned temperature
       s = exp(logit_scale). The CLIP loss is cross-entropy along each row (which caption is mine?)
       and each column (which image is mine?): the B - 1 other captions in the batch are the negatives.
    2. SigLIP (Zhai et al. 2023) scores every pair on its own with a sigmoid: is this a match, yes or
       no? No softmax over the batch, so it needs no large batch to have many negatives; a bias
       b = -10 starts the model off saying "no", as almost all pairs are non-matches.
    3. Zero-shot: for each class, embed a few prompts, average them (prompt ensembling), and classify
       an image by its nearest class vector.
    4. Compositional generalisation: some colour-shape pairs (a blue triangle, ...) never appear in
       training. If the space is really built from colours and shapes, they should still be found.
    5. Failure modes. The training signal only asks "which caption in this batch is mine?". A caption
       detail that rarely decides that question (the number of objects, left vs right, a tiny object)
       need not be learned, and the seed texts warn that CLIP-style models are weak at exactly these.
       Whether it is learned depends on the data: the probes measure it here, and say which it was.

What to look at
    The printed accuracies and recalls, and the sentences under them, computed from this run's
    numbers (--quick trains for seconds, so its numbers only show that the lesson runs);
    lessons/out/04_similarity.png (a test batch's similarity matrix: a bright diagonal means pairs
    found each other), 04_probes.png (the failure-mode probes against chance),
    04_clip_vs_siglip.png.

Exercises
    1. Train on complete captions only (P_DROP = 0). How do retrieval with full captions and zero-shot
       accuracy with short prompts change, and why?
    2. Remove the clamp of logit_scale, and weight-decay it with the other weights. Plot s over training.
    3. Give the side its own drop probability in partial_caption and raise it to 0.9, then 0.99 (web
       captions rarely say where things are). At what rate does the left/right probe fall to chance?
    4. Zero-shot with a single prompt per class instead of the ensemble. How much does ensembling give?
    5. SigLIP's bias b = -10 was chosen for batches of thousands (open_clip #650). Train section 6's
       SigLIP with init_logit_bias=siglip_bias_init(16) = log(1/15) instead. How does it now compare
       with CLIP at that batch size?
    6. Section 6 trains each model for 4 epochs, to keep the lesson short. Train them for 8: which of
       its comparisons change?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import math
import time

import numpy as np

import tinyvision as tv
from tinyvision.data import (COLORS, DEFAULT_HELD_OUT, SHAPES, captioned_shapes, count_probe, partial_caption,
                             side_probe, tiny_probe, unique_caption_batches)
from tinyvision.models import CLIP
from tinyvision.models.contrastive import clamp_logit_scale, clip_loss, siglip_bias_init, siglip_loss
from tinyvision.models.retrieval import recall_at_k, similarity_matrix, zero_shot_predict, zero_shot_weights
from tinyvision.optim import AdamW, WarmupCosine, clip_grad_norm, param_groups_no_decay
from tinyvision.text import Tokenizer

from _common import accuracy_margin, compare, one_blas_thread, parse_args, progress, pyplot, save_figure

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
CANVAS, CONTEXT, EMBED = 32, 12, 64
P_DROP = 0.3   # how often a training caption leaves out each of size, colour and side

# %% 1. Data: captioned shapes, some colour-shape combinations held out of training
n_train, n_test = (600, 300) if QUICK else (6000, 1000)


def captioned_set(n, seed, split, combos):
    """Single objects (tiny, small, large; on the left or right) plus a quarter of scenes with 2-3 alike objects."""
    n_multi = n // 4
    common = dict(held_out_combos=DEFAULT_HELD_OUT, split=split, combos=combos)
    x1, c1, a1 = captioned_shapes(n - n_multi, CANVAS, seed=seed, sizes=("tiny", "small", "large"), **common)
    x2, c2, a2 = captioned_shapes(n_multi, CANVAS, seed=seed + 1, count=(2, 3), sizes=("small",), placement="anywhere",
                                  **common)
    return np.concatenate([x1, x2]), c1 + c2, a1 + a2




x_train, _, attr_train = captioned_set(n_train, args.seed, "train", "seen")
rng_caption = np.random.default_rng((args.seed, 44))
cap_train = [partial_caption(a, rng_caption, P_DROP) for a in attr_train]
# the test set: single small or large objects, every colour-shape pair including the held-out ones,
# with complete captions
x_test, cap_test, attr_test = captioned_shapes(n_test, CANVAS, seed=args.seed + 2, split="test", combos="all",
                                               held_out_combos=DEFAULT_HELD_OUT, sizes=("small", "large"),
                                               templates=("{}",))
tokenizer = Tokenizer.train(cap_train)
ids_train = tokenizer.encode_batch(cap_train, CONTEXT)
ids_test = tokenizer.encode_batch(cap_test, CONTEXT)
print(f"== 1. data: {n_train} training pairs, {n_test} test pairs, {len(set(cap_train))} distinct training captions, "
      f"vocabulary {tokenizer.vocab_size} words")
for c in cap_train[:4]:
    print(f"  {c!r:40s} -> {tokenizer.encode(c)}")
print(f"  held out of training: {', '.join(f'{c} {s}' for c, s in DEFAULT_HELD_OUT)}")


def make_model(loss: str, seed: int) -> CLIP:
    vision = dict(img_size=CANVAS, patch_size=8, in_chans=3, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0,
                  class_token=False, global_pool="avg", init="xavier")
    text = dict(vocab_size=tokenizer.vocab_size, context_length=CONTEXT, width=64, depth=2, heads=4,
                eot_id=tokenizer.eot_id, mlp_ratio=2.0)
    if loss == "clip":
        return CLIP(EMBED, vision, text, seed=seed)
    return CLIP(EMBED, vision, text, init_logit_scale=math.log(10), init_logit_bias=siglip_bias_init(), seed=seed)


def train(loss: str, batch_size: int, epochs: int, seed: int, narrate: bool = True):
    """Contrastive training; returns the model, the loss history and the seconds it took."""
    model = make_model(loss, seed)
    opt = AdamW(param_groups_no_decay(model, 0.05), lr=2e-3)
    steps_per_epoch = math.ceil(n_train / batch_size) + 2
    schedule = WarmupCosine(opt, total_steps=epochs * steps_per_epoch, warmup_steps=steps_per_epoch)
    rng = np.random.default_rng((seed, 4))
    # every epoch's batches, drawn up front (the same draws in the same order), so the bar knows its length
    epoch_batches = [[idx for idx in unique_caption_batches(cap_train, batch_size, rng) if len(idx) >= 2]
                     for _ in range(epochs)]
    history, start = [], time.perf_counter()
    with progress(desc=f"{loss}, batch {batch_size}", total=sum(map(len, epoch_batches)), unit="step",
                  leave=narrate) as bar:
        for epoch, batches in enumerate(epoch_batches):
            for idx in batches:
                img, txt = model(tv.Tensor(x_train[idx]), ids_train[idx])
                if loss == "clip":
                    value = clip_loss(img, txt, model.logit_scale)
                else:
                    value = siglip_loss(img, txt, model.logit_scale, model.logit_bias)
                opt.zero_grad()
                value.backward()
                clip_grad_norm(model.parameters(), 1.0)
                schedule.step()   # this step's learning rate, then the step
                opt.step()
                clamp_logit_scale(model.logit_scale)
                history.append(value.item())
                bar.update()
                bar.set_postfix(loss=f"{history[-1]:.3f}", refresh=False)
            if narrate and (epoch + 1) % max(1, epochs // 5) == 0:
                bar.write(f"  epoch {epoch + 1:3d}/{epochs}  loss {np.mean(history[-steps_per_epoch:]):.4f}  "
                          f"s = exp(logit_scale) = {math.exp(float(model.logit_scale.numpy())):.1f}  "
                          f"({time.perf_counter() - start:.0f} s)")
    return model, history, time.perf_counter() - start


def embed(model, images=None, ids=None, batch=256):
    model.eval()
    with tv.no_grad():
        if images is not None:
            return np.concatenate([model.encode_image(tv.Tensor(images[i:i + batch])).numpy()
                                   for i in range(0, len(images), batch)])
        return np.concatenate([model.encode_text(ids[i:i + batch]).numpy() for i in range(0, len(ids), batch)])


def embed_texts(model, texts):
    return embed(model, ids=tokenizer.encode_batch(texts, CONTEXT))


# %% 2. Train CLIP
epochs = 2 if QUICK else 30
print(f"\n== 2. training CLIP (ViT image tower + causal text transformer, joint width {EMBED}), batch 64, {epochs} epochs")
clip, clip_history, clip_seconds = train("clip", 64, epochs, args.seed)
print(f"  trained in {clip_seconds:.0f} s")


# %% 3. Zero-shot classification with prompt ensembles
def class_prompts(kind, ensemble=True):
    """Prompts per class: a short phrase for each, or (ensemble) that phrase in several contexts.

    As CLIP averages 80 templates per ImageNet class ("a photo of a {}", "a drawing of a {}", ...),
    the ensemble averages the class word in contexts that do not decide the class.
    """
    if kind == "shape":
        contexts = ["a {}", "a small {}", "a large {}", "a {} on the left", "a {} on the right"]
        return {s: [c.format(s) for c in (contexts if ensemble else contexts[:1])] for s in SHAPES}
    contexts = [f"a {{}} {s}" for s in SHAPES] + [f"a {size} {{}} {s}" for size in ("small", "large") for s in SHAPES]
    prompts = {c: [t.format(c).replace("a orange", "an orange") for t in contexts] for c in COLORS}
    return prompts if ensemble else {c: p[:1] for c, p in prompts.items()}


def zero_shot_accuracy(model, kind, images, attrs, ensemble=True):
    prompts = class_prompts(kind, ensemble)
    classes = list(prompts)
    weights = zero_shot_weights([embed_texts(model, prompts[c]) for c in classes])
    _, pred = zero_shot_predict(embed(model, images), weights)
    truth = np.array([classes.index(a[kind]) for a in attrs])
    return float((pred == truth).mean()), len(classes), len(prompts[classes[0]])


print("\n== 3. zero-shot classification of the test images (no classifier was trained)")
zs = {}
for kind in ("shape", "color"):
    acc, n_classes, n_prompts = zero_shot_accuracy(clip, kind, x_test, attr_test)
    bare, _, n_bare = zero_shot_accuracy(clip, kind, x_test, attr_test, ensemble=False)
    zs[kind] = acc
    print(f"  {kind:5s}: {acc:.3f} accuracy over {n_classes} classes with an ensemble of {n_prompts} prompts per class "
          f"({bare:.3f} with {n_bare} prompt per class; chance {1 / n_classes:.3f})")

# %% 4. Retrieval in both directions
unique_caps = sorted(set(cap_test))
img_emb = embed(clip, x_test)
txt_emb = embed_texts(clip, unique_caps)
sim = similarity_matrix(img_emb, txt_emb)                                # (images, unique captions)
relevant = np.array([[c == u for u in unique_caps] for c in cap_test])  # image i matches caption u
r_i2t = recall_at_k(sim, relevant, ks=(1, 5, 10))
r_t2i = recall_at_k(sim.T, relevant.T, ks=(1, 5, 10))
print(f"\n== 4. retrieval among {len(x_test)} test images and their {len(unique_caps)} distinct captions")
print(f"  image -> text recall@1/5/10: {r_i2t[1]:.3f} / {r_i2t[5]:.3f} / {r_i2t[10]:.3f}")
print(f"  text -> image recall@1/5/10: {r_t2i[1]:.3f} / {r_t2i[5]:.3f} / {r_t2i[10]:.3f}")

plt = pyplot()
show = np.arange(10)
fig, ax = plt.subplots(figsize=(7, 6))
ax.imshow(similarity_matrix(img_emb[show], embed_texts(clip, [cap_test[i] for i in show])), cmap="viridis")
ax.set(yticks=range(10), xticks=range(10), xticklabels=[cap_test[i] for i in show], title="test pairs: cosine similarity")
ax.set_yticklabels([f"image {i}" for i in show])
ax.tick_params(axis="x", rotation=90)
save_figure(fig, args.out, "04_similarity.png")

# %% 5. Held-out colour-shape combinations
held = [i for i, a in enumerate(attr_test) if (a["color"], a["shape"]) in set(DEFAULT_HELD_OUT)]
combos = [(c, s) for c in sorted({a["color"] for a in attr_train}) for s in sorted({a["shape"] for a in attr_train})]
combo_prompts = [[f"a small {c} {s} on the left", f"a large {c} {s} on the right",
                  f"a small {c} {s} on the right", f"a large {c} {s} on the left"] for c, s in combos]
weights = zero_shot_weights([embed_texts(clip, p) for p in combo_prompts])
_, pred = zero_shot_predict(img_emb[held], weights)
heldout_acc = float(np.mean([combos[p] == (attr_test[i]["color"], attr_test[i]["shape"]) for p, i in zip(pred, held)]))
print(f"\n== 5. {len(held)} test images of colour-shape pairs never seen in training: the right pair among "
      f"{len(combos)} in {heldout_acc:.3f} of them (chance {1 / len(combos):.3f})")

# %% 6. CLIP vs SigLIP at a small batch
small_batch, cmp_epochs = 16, (1 if QUICK else 4)
print(f"\n== 6. CLIP vs SigLIP at batch {small_batch}, {cmp_epochs} epochs each")
comparison = {}
for loss in ("clip", "siglip"):
    model, _, secs = train(loss, small_batch, cmp_epochs, args.seed, narrate=False)
    e_img, e_txt = embed(model, x_test), embed_texts(model, unique_caps)
    comparison[loss] = {"shape": zero_shot_accuracy(model, "shape", x_test, attr_test)[0],
                        "color": zero_shot_accuracy(model, "color", x_test, attr_test)[0],
                        "recall_at_1_i2t": recall_at_k(similarity_matrix(e_img, e_txt), relevant, ks=(1,))[1]}
    print(f"  {loss:6s}: zero-shot shape {comparison[loss]['shape']:.3f}, colour {comparison[loss]['color']:.3f}, "
          f"image->text recall@1 {comparison[loss]['recall_at_1_i2t']:.3f}  ({secs:.0f} s)")
test_margin = accuracy_margin(n_test)    # about two standard errors of a rate measured on the test images
for metric, label in (("shape", "zero-shot shape"), ("color", "zero-shot colour"), ("recall_at_1_i2t", "recall@1")):
    clip_value, siglip_value = comparison["clip"][metric], comparison["siglip"][metric]
    print(f"  {label}: {compare('CLIP', clip_value, 'SigLIP', siglip_value, test_margin)}")
fig, ax = plt.subplots(figsize=(6, 3.2))
metrics = ["shape", "color", "recall_at_1_i2t"]
for j, loss in enumerate(("clip", "siglip")):
    ax.bar(np.arange(3) + 0.38 * j, [comparison[loss][m] for m in metrics], width=0.38, label=loss)
ax.set(xticks=np.arange(3) + 0.19, xticklabels=metrics, ylim=(0, 1), title=f"batch {small_batch}")
ax.legend()
save_figure(fig, args.out, "04_clip_vs_siglip.png")


# %% 7. Failure-mode probes: counting, left / right, tiny objects
def probe_accuracy(model, probe):
    images, candidates, correct = probe
    e_img = embed(model, images)
    hits = [int(np.argmax(e_txt @ e)) == k for e, cands, k in zip(e_img, candidates, correct)
            for e_txt in [embed_texts(model, cands)]]
    return float(np.mean(hits)), 1 / len(candidates[0])


n_probe = 60 if QUICK else 300
seen = dict(held_out_combos=DEFAULT_HELD_OUT, combos="seen")
probes = {"count (two vs three)": count_probe(n_probe, seed=args.seed + 7, **seen),
          "left vs right": side_probe(n_probe, seed=args.seed + 8, **seen),
          "tiny object's shape": tiny_probe(n_probe, seed=args.seed + 9, **seen)}
print("\n== 7. failure-mode probes: pick the right caption among candidates that differ in one detail")
probe_results = {}
probe_margin = accuracy_margin(n_probe)
for name, probe in probes.items():
    acc, chance = probe_accuracy(clip, probe)
    probe_results[name] = acc
    where = "near" if abs(acc - chance) <= probe_margin else ("above" if acc > chance else "below")
    print(f"  {name:22s} {acc:.3f}  (chance {chance:.3f}: {where} chance, margin {probe_margin:.3f})")
WEAK = 0.8   # a probe below this accuracy is called weak
weak = [name for name, acc in probe_results.items() if acc < WEAK]
if weak:
    print(f"  weak here (below {WEAK}): {', '.join(weak)}.")
    print("  The contrastive objective rewards a detail only when it separates captions within a batch.")
else:
    states = np.mean([a["count"] > 1 or " on the " in c for c, a in zip(cap_train, attr_train)])
    print(f"  none is weak here (all at least {WEAK}). {states:.0%} of the training captions state the count or the\n"
          f"  side (partial_caption drops the side with probability {P_DROP}), the shape is always named and the\n"
          "  pictures are clean, so the contrastive loss can reward these details. The seed texts' warning is about\n"
          "  web captions, which seldom mention count or position: exercise 3 makes them rare.")
if QUICK:
    print("  (--quick trains for seconds: these numbers only show the lesson runs; run the full lesson)")
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.bar(range(3), list(probe_results.values()))
for k, (name, probe) in enumerate(probes.items()):
    ax.hlines(1 / len(probe[1][0]), k - 0.4, k + 0.4, colors="k", linestyles="--")
ax.set(xticks=range(3), xticklabels=list(probe_results), ylim=(0, 1), ylabel="accuracy", title="probes (dashed: chance)")
save_figure(fig, args.out, "04_probes.png")

# %% Result
print("result: " + json.dumps({
    "lesson": "04_clip", "quick": QUICK, "seed": args.seed, "train_seconds": round(clip_seconds, 1),
    "zero_shot_shape_accuracy": round(zs["shape"], 4), "zero_shot_color_accuracy": round(zs["color"], 4),
    "recall_at_1_image_to_text": round(r_i2t[1], 4), "recall_at_1_text_to_image": round(r_t2i[1], 4),
    "recall_at_5_image_to_text": round(r_i2t[5], 4), "recall_at_5_text_to_image": round(r_t2i[5], 4),
    "heldout_combo_accuracy": round(heldout_acc, 4),
    "clip_vs_siglip_batch16": {k: {m: round(v, 4) for m, v in d.items()} for k, d in comparison.items()},
    "probes": {k: round(v, 4) for k, v in probe_results.items()},
}))
