"""Lesson 05: a vision-language model that answers questions about pictures, and why it gets some wrong.

Run:  python lessons/05_vlm.py            (full: 3 min 39 s on 2 CPU cores, 44 s of it the eye, cached in --out)
      python lessons/05_vlm.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    A model that describes a photo fluently can still miss the one thing that matters. Asking "why?"
    needs the model in parts: an eye (a vision encoder), a translator (the connector that turns the
    eye's patch vectors into tokens a language model can read) and a language model that talks. Each
    can fail, and each failure can be measured on its own.

The idea (tinyvision/models/vlm.py)
    1. The eye: lesson 04's CLIP image tower, trained here on captions (or loaded from --out), frozen,
       read at its second-to-last block as LLaVA does: 16 patch vectors per picture.
    2. The translator: a connector to the language model's width (LLaVA-1.5's Linear-GELU-Linear).
    3. The language model: a small causal transformer reading [16 visual tokens | question] and
       predicting the answer; the loss is on the answer tokens only (every other target ignored).
       Trained in LLaVA's two stages: captions first ("what is in the picture ?" -> every object, left
       to right), then the questions.
    4. Questions generated from the scenes (tinyvision/data/vqa.py): colour, shape, counting, left /
       right, presence ("is there a blue triangle?"), a tiny object's colour, a handwritten digit.

The four questions of a diagnosis
    the eye         a linear probe on the frozen eye's features: is the answer in them at all?
    the translator  the same probe on the visual tokens the connector hands the language model
    the language    the answers with the picture blanked: what the language prior alone gets right;
    model           and how often it says "yes" about an object that is not there (hallucination)
    the workflow    crop the picture around the tiny object and ask again: does zooming help?

Exercises
    1. Read the eye at its last block (layer=-1). Which question kinds change?
    2. Swap the connector for Connector("perceiver", 64, 64, num_tokens=4): 4 visual tokens instead of
       16. Which question kinds suffer first?
"""
# %% Imports and the command line
from __future__ import annotations

import json

import numpy as np

import tinyvision as tv
from tinyvision.data.vqa import QUESTION_KINDS, answer_vocabulary, scene_captions, vqa_pairs

import _vlm
from _common import accuracy_margin, compare, one_blas_thread, parse_args, pyplot, save_figure
from _vlm import CANVAS, HELD_OUT, by_kind, clip_eye, qa_data

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
VLM_STEPS = 20 if QUICK else 1200
CAPTION_STEPS = 8 if QUICK else 300

# %% 1. Data: questions about scenes (tinyvision/data/vqa.py; the set-up is in lessons/_vlm.py, shared with 05b)
d = qa_data(args.seed, QUICK)
x_qa, q_qa, a_qa, k_qa, x_te, q_te, a_te, k_te = d.x_qa, d.q_qa, d.a_qa, d.k_qa, d.x_te, d.q_te, d.a_te, d.k_te
ids_qa, start_qa, ids_te, start_te, tokenizer = d.ids_qa, d.start_qa, d.ids_te, d.start_te, d.tokenizer
print(f"== 1. {len(q_qa)} training questions and {len(q_te)} test questions about {CANVAS}x{CANVAS} scenes (test scenes "
      f"drawn apart; pairs never in a training scene: {', '.join(' '.join(p) for p in HELD_OUT)}); vocabulary "
      f"{tokenizer.vocab_size} words, sequences of at most {d.context} tokens")
for kind in QUESTION_KINDS:
    i = k_qa.index(kind)
    print(f"  {kind:9s} {q_qa[i]!r:52s} -> {a_qa[i]}")
print(f"  and {len(d.cap)} captions of other scenes for the first stage, e.g. {d.cap[0]!r}")

# %% 2. The eye: lesson 04's CLIP, trained on captions of the same kind of scenes (or loaded from --out)
eye, loaded, eye_seconds, (x_cap, attr_cap) = clip_eye(args.out, args.seed, QUICK)
print(f"\n== 2. the eye: lesson 04's CLIP image tower (4x4 patches of 8 pixels, width 64, 3 blocks), "
      f"{f'loaded from {args.out}' if loaded else 'trained ' + ('1 epoch on 800' if QUICK else '8 epochs on 6,000') + ' captions'} ({eye_seconds:.0f} s); "
      f"frozen, read after block 2 of 3")


# %% 3. The VLM, trained in two stages as LLaVA is: captions first, then questions and answers
def features_of(images, model):
    return _vlm.features_of(model, images)


def build():
    return _vlm.build(eye, d, seed=args.seed)


def train_vlm(model, feats, ids, starts, steps, desc):
    return _vlm.train_vlm(model, feats, ids, starts, steps, desc, args.seed)


def first_answer_words(model, feats, ids, starts, blank=False):
    return _vlm.first_answer_words(model, d, feats, ids, starts, blank)


model = build()
feats_qa, feats_te, feats_cap = (features_of(x, model) for x in (x_qa, x_te, d.x_cap))
_, cap_seconds = train_vlm(model, feats_cap, d.ids_cap, d.start_cap, CAPTION_STEPS, "stage 1: captions")
after_captions = model.state_dict()                       # section 5 starts its second model from here
print("\n== 3. the VLM: 16 visual tokens (mlp connector, 64 -> 64) + a 2-block causal language model of width 64")
print(f"  stage 1, {CAPTION_STEPS} steps of 64 captions of other scenes ({cap_seconds:.0f} s): {_vlm.CAPTION_PROMPT!r} -> "
      f"every object, left to right. (LLaVA trains only the connector here, its language model already\n"
      f"  speaks; ours starts from nothing, so both learn: lesson 05b measures LLaVA's way.) On test pictures:")
x_new, cap_new = scene_captions(3, CANVAS, seed=args.seed + 3, held_out=HELD_OUT, split="test")
prompt = np.repeat([tokenizer.encode(_vlm.CAPTION_PROMPT)[:-1]], 3, axis=0)
replies = model.answer(x_new, prompt, max_new=12, stop_id=tokenizer.eot_id)
for reply, truth in zip(replies, cap_new):
    print(f"    {tokenizer.decode(list(reply))!r:50s} (truth: {truth!r})")
losses, vlm_seconds = train_vlm(model, feats_qa, ids_qa, start_qa, VLM_STEPS, "stage 2: questions")
print(f"  stage 2, {VLM_STEPS} steps of 64 questions ({vlm_seconds:.0f} s); loss on answer tokens only, last 100 steps "
      f"{np.mean(losses[-100:]):.3f}")
said = first_answer_words(model, feats_te, ids_te, start_te)
blank = first_answer_words(model, feats_te, ids_te, start_te, blank=True)
acc, acc_blank = by_kind(said, a_te, k_te), by_kind(blank, a_te, k_te)
counts = {k: k_te.count(k) for k in acc}
print(f"  test accuracy by question kind (+-{accuracy_margin(min(counts.values())):.2f} is noise), with the picture "
      f"and with it blanked (the language prior), beside a uniform guess:")
print(f"  {'kind':9s} {'n':>4s} {'with picture':>13s} {'blanked':>8s} {'guess':>6s}")
for k in acc:
    print(f"  {k:9s} {counts[k]:4d} {acc[k]:13.2f} {acc_blank[k]:8.2f} {1 / len(answer_vocabulary(k)):6.2f}")
pairs = {}
for k in ("color", "shape"):
    for where, held in (("seen", False), ("held_out", True)):
        rows = [i for i, kk in enumerate(k_te) if kk == k and _vlm.held_out_pair(q_te[i], a_te[i]) == held]
        pairs.setdefault(k, {})[where] = {"n": len(rows), "accuracy": float(np.mean([said[i] == a_te[i] for i in rows]))
                                          if rows else None}
print("  colour and shape questions split by the pair asked about: a pair some training scene had, or one none had")
for k, v in pairs.items():
    print(f"    {k:6s} " + ", ".join(f"{w.replace('_', '-')} pairs {v[w]['accuracy']:.2f} (n {v[w]['n']})"
                                  for w in ("seen", "held_out") if v[w]["n"]))
n_colours = [len({tuple(p) for p in x.reshape(3, -1).T if p.max() > 0}) for x in x_te]
by_colours = {n: float(np.mean([said[i] == a_te[i] for i, k in enumerate(k_te) if k == "color" and (n_colours[i] > 1) == (n > 1)]))
              for n in (1, 2)}
n_by = {n: sum(k == "color" and (c > 1) == (n > 1) for k, c in zip(k_te, n_colours)) for n in (1, 2)}
print(f"  colour questions about a picture of one colour {by_colours[1]:.2f} (n {n_by[1]}), of several colours "
      f"{by_colours[2]:.2f} (n {n_by[2]})")
if by_colours[1] - by_colours[2] > accuracy_margin(min(n_by.values())):
    print("    with one colour any object's colour is the answer; with several the model must first find the shape "
          "named,\n    and shape is what this eye reads worst (section 4)")
absent = [i for i, (k, a) in enumerate(zip(k_te, a_te)) if k == "presence" and a == "no"]
hallucination = float(np.mean([said[i] == "yes" for i in absent]))
print(f"  hallucination: 'yes' about an object that is not there, {hallucination:.2f} of {len(absent)} questions")


# %% 4. The eye and the translator: is the information there? (linear probes)
def probe(features, labels, n_fit):
    """Test accuracy of a linear classifier (ridge regression onto one-hot labels, closed form) fitted on the
    first n_fit rows of features (n, ...) flattened, tested on the rest."""
    X = features.reshape(len(features), -1).astype(np.float64)
    X = np.concatenate([X, np.ones((len(X), 1))], axis=1)
    classes = sorted(set(labels))
    Y = np.array([[lab == c for c in classes] for lab in labels], dtype=np.float64)
    A, B = X[:n_fit], Y[:n_fit]
    W = np.linalg.solve(A.T @ A + 1e-1 * np.eye(X.shape[1]), A.T @ B)
    return float(np.mean((X[n_fit:] @ W).argmax(1) == Y[n_fit:].argmax(1)))


single = [i for i, a in enumerate(attr_cap) if a["count"] == 1][:2500]
eye_f = features_of(x_cap[single], model)
with tv.no_grad():
    tok_f = np.concatenate([model.connector(tv.Tensor(eye_f[i:i + 500])).numpy() for i in range(0, len(eye_f), 500)])
n_fit = len(single) * 4 // 5
print(f"\n== 4. linear probes on {len(single) - n_fit} held-out single-object pictures (fitted on {n_fit}): the eye's "
      f"16 patch vectors, and the 16 visual tokens after the connector")
print(f"  {'attribute':9s} {'eye':>6s} {'tokens':>7s} {'guess':>6s}")
probes = {}
for attr in ("color", "shape", "side", "size"):
    labels = [attr_cap[i][attr] for i in single]
    probes[attr] = {"eye": probe(eye_f, labels, n_fit), "tokens": probe(tok_f, labels, n_fit)}
    print(f"  {attr:9s} {probes[attr]['eye']:6.2f} {probes[attr]['tokens']:7.2f} {1 / len(set(labels)):6.2f}")

# side: the probe question that the answers can be checked against (side questions name one object)
if probes["side"]["tokens"] >= 0.9 and acc["side"] <= acc_blank["side"] + accuracy_margin(counts["side"]):
    print(f"  side: the visual tokens hold it (probe {probes['side']['tokens']:.2f}), but the answers to side questions "
          f"({acc['side']:.2f}) are no better\n  than with the picture blanked ({acc_blank['side']:.2f}): the eye and the "
          f"translator did their part; the language model has not learned to use it")

# %% 5. The language model: hallucination, and what lowers it
x_few, q_few, a_few, _ = vqa_pairs(len(q_qa), CANVAS, seed=args.seed, held_out=HELD_OUT, negatives=0.1)
ids_few, start_few = _vlm.encode(d, q_few, a_few)
yes_man = build()
yes_man.load_state_dict(after_captions)                   # the same stage 1; stage 2 with fewer negatives
train_vlm(yes_man, features_of(x_few, yes_man), ids_few, start_few, VLM_STEPS, "stage 2, few negatives")
said_few = first_answer_words(yes_man, feats_te, ids_te, start_te)
halluc_few = float(np.mean([said_few[i] == "yes" for i in absent]))
print(f"\n== 5. hallucination ('yes' about an absent object, {len(absent)} test questions): stage 2 with 10 % of presence "
      f"questions negative {halluc_few:.2f}; with 50 % (section 3) {hallucination:.2f}")
print("  " + compare("50 % negatives", hallucination, "10 % negatives", halluc_few, margin=accuracy_margin(len(absent)),
                     higher_is_better=False, verb="hallucinates less than", fmt=".2f"))

# %% 6. The workflow: crop around the tiny object and ask again
def crop_tiny(image):
    """The 16x16 window around the smaller of the picture's two colour blobs, zoomed back to 32x32 (nearest)."""
    bright = image.max(0) > 0.5
    colours = image.transpose(1, 2, 0)[bright]
    kinds, counts = np.unique(colours, axis=0, return_counts=True)
    small = np.all(image.transpose(1, 2, 0) == kinds[counts.argmin()], axis=-1) & bright
    ys, xs = np.nonzero(small)
    y0 = int(np.clip(round(ys.mean()) - 8, 0, CANVAS - 16))
    x0 = int(np.clip(round(xs.mean()) - 8, 0, CANVAS - 16))
    return image[:, y0:y0 + 16, x0:x0 + 16].repeat(2, axis=1).repeat(2, axis=2)


tiny = [i for i, k in enumerate(k_te) if k == "tiny"]
crops = np.stack([crop_tiny(x_te[i]) for i in tiny])
said_crop = first_answer_words(model, features_of(crops, model), ids_te[tiny], start_te[tiny])
acc_crop = float(np.mean([s == a_te[i] for s, i in zip(said_crop, tiny)]))
acc_whole = float(np.mean([said[i] == a_te[i] for i in tiny]))
print(f"\n== 6. crop and re-ask: the tiny object's colour, {len(tiny)} questions: whole picture {acc_whole:.2f}, "
      f"a 16x16 crop around the smaller blob zoomed 2x {acc_crop:.2f}")
print("  " + compare("cropping", acc_crop, "the whole picture", acc_whole, margin=accuracy_margin(len(tiny)),
                     verb="answers better than", fmt=".2f"))

# %% 7. A few conversations (greedy decoding with the key-value cache, stopped at the end token)
print(f"\n== 7. conversations with test pictures ({args.out}/05_conversations.png)")
show = [k_te.index(kind) for kind in QUESTION_KINDS]
fig, axes = pyplot().subplots(1, len(show), figsize=(2.2 * len(show), 2.8))
for ax, i in zip(axes, show):
    prompt = np.array([tokenizer.encode(q_te[i])[:-1]])                     # [SOT] question words, no end token
    reply = model.answer(None, prompt, max_new=3, stop_id=tokenizer.eot_id, features=tv.Tensor(feats_te[i:i + 1]))
    words = tokenizer.decode(list(reply[0]))
    print(f"  Q: {q_te[i]:52s} A: {words:8s} (truth: {a_te[i]})")
    ax.imshow(x_te[i].transpose(1, 2, 0), interpolation="nearest")
    ax.set_title(f"{q_te[i].replace(' ?', '?')}\n-> {words} ({a_te[i]})", fontsize=6)
    ax.axis("off")
save_figure(fig, args.out, "05_conversations.png")

print("result: " + json.dumps({"lesson": "05_vlm", "quick": QUICK, "seed": args.seed, "accuracy": acc,
                               "blank": acc_blank, "pairs": pairs, "color_by_colours": by_colours, "probes": probes, "hallucination": round(hallucination, 4),
                               "hallucination_few_negatives": round(halluc_few, 4),
                               "tiny": {"whole": round(acc_whole, 4), "crop": round(acc_crop, 4)},
                               "caption_seconds": round(cap_seconds, 1), "vlm_seconds": round(vlm_seconds, 1)}))
