"""Lesson 05b: the bridge between an eye and a language model: which is simplest, which compresses most?

Run:  python lessons/05b_vlm_bridges.py            (full: 3.1 minutes on 2 CPU cores with lesson 05's eye cached in --out, + 46 s without)
      python lessons/05b_vlm_bridges.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    Lesson 05's connector hands the language model every patch: 16 visual tokens here, 576 in
    LLaVA-1.5. Each visual token costs the language model as much as a word, so a bigger picture or
    a video quickly fills its context. A resampler reads all the patches and hands over a fixed,
    smaller number of tokens instead (Flamingo's Perceiver: 64; BLIP-2's Q-Former: 32). What does
    the compression cost in answers?

The idea (tinyvision/models/vlm.py, Connector)
    linear      one matrix on every patch token (LLaVA 1.0)                   16 tokens
    mlp         Linear, GELU, Linear on every patch token (LLaVA-1.5)          16 tokens
    perceiver   k learned latents attend to [patches | latents], then an MLP  k tokens
    qformer     k learned queries: self-attention, cross-attention, an MLP    k tokens
    Each is trained with the same language model, data and steps as lesson 05's (fewer steps, so
    that all of them fit in the lesson), on the same frozen eye.

Training recipes (section 3)
    LLaVA trains in two stages: first the connector alone on captions (its language model already
    speaks, so the connector only has to learn to talk to it), then connector and language model on
    instructions. Ours starts from nothing, so the faithful copy needs a stage before: the language
    model on words alone. Three recipes, each ending with the same steps of questions:
    questions only; captions then questions (both parts learn in both); LLaVA's three stages.

What to look at
    - Accuracy per question kind against the number of visual tokens and the training time.
    - Which kinds need the spatial layout (side, count) and which survive compression (colour).
    - Which kinds a first stage on captions helps: captions name every object, left to right.

Exercises
    1. Give the Perceiver and the Q-Former 2 layers (depth=2). Does it buy back what 4 tokens lose?
    2. Read the eye at its last block (VisionLanguageModel(layer=-1)). Which connector minds most?
"""
# %% Imports and the command line
from __future__ import annotations

import json

import numpy as np

import _vlm
from _common import accuracy_margin, one_blas_thread, parse_args, pyplot, save_figure
from _vlm import by_kind, clip_eye, qa_data

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
STEPS = 10 if QUICK else 500
STAGE_STEPS = 6 if QUICK else 200          # each earlier stage of a recipe (section 3)
BRIDGES = (("linear", None), ("mlp", None), ("perceiver", 4), ("qformer", 4))
KINDS = ("color", "shape", "count", "side", "presence", "tiny", "digit")

# %% 1. The questions and the eye of lesson 05
d = qa_data(args.seed, QUICK)
eye, loaded, eye_seconds, _ = clip_eye(args.out, args.seed, QUICK)
print(f"== 1. lesson 05's data ({len(d.q_qa)} training, {len(d.q_te)} test questions) and eye "
      f"({'loaded from ' + str(args.out) if loaded else 'trained'}, {eye_seconds:.0f} s)")
probe = _vlm.build(eye, d, seed=args.seed)
feats_qa, feats_te, feats_cap = (_vlm.features_of(probe, x) for x in (d.x_qa, d.x_te, d.x_cap))


def score(model):
    """(overall test accuracy, accuracy per question kind)."""
    said = _vlm.first_answer_words(model, d, feats_te, d.ids_te, d.start_te)
    return float(np.mean([s == a for s, a in zip(said, d.a_te)])), by_kind(said, d.a_te, d.k_te)

# %% 2. Every bridge, the same language model and steps
print(f"\n== 2. each connector with a 2-block language model, {STEPS} steps of 64 questions; test accuracy "
      f"(+-{accuracy_margin(min(d.k_te.count(k) for k in KINDS)):.2f} is noise for one kind)")
print(f"  {'connector':14s} {'tokens':>6s} {'params':>7s} {'seconds':>8s} {'all':>5s} " + " ".join(f"{k:>8s}" for k in KINDS))
rows = []
for kind, k in BRIDGES:
    model = _vlm.build(eye, d, kind, k, seed=args.seed)
    _, seconds = _vlm.train_vlm(model, feats_qa, d.ids_qa, d.start_qa, STEPS, f"{kind} {k or 16}", args.seed)
    overall, acc = score(model)
    params = sum(p.size for p in model.connector.parameters())
    tokens = model.connector.num_tokens(16)
    rows.append({"connector": kind, "tokens": tokens, "connector_params": params, "seconds": round(seconds, 1),
                 "accuracy": round(overall, 4), "by_kind": {q: round(v, 4) for q, v in acc.items()}})
    print(f"  {kind:14s} {tokens:6d} {params:7d} {seconds:8.1f} {overall:5.2f} "
          + " ".join(f"{acc.get(q, float('nan')):8.2f}" for q in KINDS))
best = max(rows, key=lambda r: r["accuracy"])
fewest = min((r for r in rows if r["accuracy"] >= best["accuracy"] - accuracy_margin(len(d.q_te))),
             key=lambda r: (r["tokens"], r["connector_params"]))
print(f"  the best overall: {best['connector']} with {best['tokens']} tokens ({best['accuracy']:.2f}); the fewest tokens "
      f"within noise of it (+-{accuracy_margin(len(d.q_te)):.2f}): {fewest['connector']} with {fewest['tokens']}")

fig, ax = pyplot().subplots(figsize=(6.5, 3.6))
for i, q in enumerate(KINDS):
    ax.plot(range(len(rows)), [r["by_kind"].get(q, np.nan) for r in rows], marker="o", label=q)
ax.set_xticks(range(len(rows)), [f"{r['connector']}\n{r['tokens']} tokens" for r in rows], fontsize=7)
ax.set(ylabel="test accuracy", ylim=(0, 1.02), title="bridges: accuracy per question kind")
ax.legend(fontsize=7, ncol=2)
save_figure(fig, args.out, "05b_bridges.png")

# %% 3. Training recipes: does a first stage on captions help, and does LLaVA's frozen language model?
print(f"\n== 3. the mlp connector trained three ways; every recipe ends with the same {STEPS} steps of questions")
blank_feats = np.broadcast_to(np.zeros_like(feats_cap[:1]), (len(d.ids_cap) + len(d.ids_qa),) + feats_cap.shape[1:])
recipes = {"questions only": [],
           "captions, then questions": [("captions", None)],
           "LLaVA: words, connector on captions, questions": [("words", "lm"), ("captions", "connector")]}
mlp_row = next(r for r in rows if r["connector"] == "mlp")
recipe_rows = []
for name, stages in recipes.items():
    if not stages:                                                     # the mlp row of section 2
        row = {"recipe": name, "seconds": mlp_row["seconds"], "accuracy": mlp_row["accuracy"],
               "by_kind": mlp_row["by_kind"]}
    else:
        model = _vlm.build(eye, d, "mlp", seed=args.seed)
        seconds = 0.0
        for stage, part in stages:
            train = None if part is None else getattr(model, part)
            if stage == "words":       # the LM alone on every text (prompts too), the picture blanked
                ids = np.concatenate([d.ids_cap, d.ids_qa])
                _, t = _vlm.train_vlm(model, blank_feats, ids, np.ones(len(ids), int), STAGE_STEPS, "words",
                                      args.seed, train=train, blank=True)
            else:
                _, t = _vlm.train_vlm(model, feats_cap, d.ids_cap, d.start_cap, STAGE_STEPS, f"captions ({part or 'all'})",
                                      args.seed, train=train)
            seconds += t
        _, t = _vlm.train_vlm(model, feats_qa, d.ids_qa, d.start_qa, STEPS, "questions", args.seed)
        overall, acc = score(model)
        row = {"recipe": name, "seconds": round(seconds + t, 1), "accuracy": round(overall, 4),
               "by_kind": {q: round(v, 4) for q, v in acc.items()}}
    recipe_rows.append(row)
print(f"  {'recipe':48s} {'seconds':>8s} {'all':>5s} " + " ".join(f"{k:>8s}" for k in KINDS))
for r in recipe_rows:
    print(f"  {r['recipe']:48s} {r['seconds']:8.1f} {r['accuracy']:5.2f} "
          + " ".join(f"{r['by_kind'].get(q, float('nan')):8.2f}" for q in KINDS))
print(f"  (earlier stages: {STAGE_STEPS} steps each; the words stage reads captions and questions with the picture blanked)")

# %% The headline numbers
print("result: " + json.dumps({"lesson": "05b_vlm_bridges", "quick": QUICK, "seed": args.seed, "steps": STEPS,
                               "bridges": rows, "recipes": recipe_rows}))
