"""What lessons 05 and 05b share: the questions, the frozen eye, and the VLM's training and reading loops.

The eye is lesson 04's CLIP setup (a ViT on 4x4 patches of 8 pixels, width 64, 3 blocks, and a text
tower), trained on captioned scenes and cached in --out, so that the second lesson to run loads it.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

import tinyvision as tv
from tinyvision.data import DEFAULT_HELD_OUT, captioned_shapes, partial_caption, unique_caption_batches
from tinyvision.data.vqa import QUESTION_KINDS, scene_captions, vqa_pairs
from tinyvision.models import CLIP
from tinyvision.models.vlm import CausalLM, Connector, VisionLanguageModel
from tinyvision.optim import AdamW, WarmupCosine, param_groups_no_decay
from tinyvision.text import Tokenizer

from _common import cached_model, optimise, train_clip_batches

CANVAS = 32
HELD_OUT = [(c, s) for c, s in DEFAULT_HELD_OUT if c != "magenta"][:2]   # colour-shape pairs no training scene has
CAPTION_PROMPT = "what is in the picture ?"


def qa_data(seed: int, quick: bool) -> SimpleNamespace:
    """Training and test questions (tinyvision.data.vqa), captions of other scenes (the first training
    stage), their tokenizer, and the encoded sequences: ids (B, context): [SOT] prompt words [answer]
    [EOT] PAD...; start: where each answer starts. A caption is the answer to CAPTION_PROMPT."""
    n_qa, n_test, n_cap = (600, 200, 300) if quick else (20000, 1400, 6000)
    d = SimpleNamespace()
    d.x_qa, d.q_qa, d.a_qa, d.k_qa = vqa_pairs(n_qa, CANVAS, seed=seed, held_out=HELD_OUT)
    d.x_te, d.q_te, d.a_te, d.k_te = vqa_pairs(n_test, CANVAS, seed=seed + 1, held_out=HELD_OUT, split="test")
    d.x_cap, d.cap = scene_captions(n_cap, CANVAS, seed=seed + 2, held_out=HELD_OUT)
    texts = [f"{q} {a}" for q, a in zip(d.q_qa + d.q_te, d.a_qa + d.a_te)] + [f"{CAPTION_PROMPT} {c}" for c in d.cap]
    d.tokenizer = Tokenizer.train(texts)
    d.context = max(len(d.tokenizer.encode(t)) for t in texts)
    d.ids_qa, d.start_qa = encode(d, d.q_qa, d.a_qa)
    d.ids_te, d.start_te = encode(d, d.q_te, d.a_te)
    d.ids_cap, d.start_cap = encode(d, [CAPTION_PROMPT] * len(d.cap), d.cap)
    return d


def held_out_pair(question: str, answer: str) -> bool:
    """Whether a colour or shape question asks about one of the HELD_OUT colour-shape pairs."""
    words = set(question.split()) | {answer}
    return any(c in words and s in words for c, s in HELD_OUT)


def encode(d, questions, answers):
    ids = d.tokenizer.encode_batch([f"{q} {a}" for q, a in zip(questions, answers)], d.context)
    starts = np.array([len(d.tokenizer.encode(q)) - 1 for q in questions])
    return ids, starts


def clip_eye(out_dir, seed: int, quick: bool):
    """(eye, loaded, seconds, (x_cap, attr_cap)): the image tower of a CLIP trained on 6,000 captioned scenes
    (8 epochs; partial captions as lesson 04), cached in out_dir; its training pictures and attributes."""
    epochs = 1 if quick else 8
    x_cap, _, attr_cap = captioned_shapes(800 if quick else 6000, CANVAS, seed=seed + 7,
                                          sizes=("tiny", "small", "large"), held_out_combos=DEFAULT_HELD_OUT)
    captions = [partial_caption(a, np.random.default_rng((seed, 5, i)), 0.3) for i, a in enumerate(attr_cap)]
    clip_tokenizer = Tokenizer.train(captions)
    cap_ids = clip_tokenizer.encode_batch(captions, 12)

    def train(model):
        opt = AdamW(param_groups_no_decay(model, 0.05), lr=2e-3)
        rng = np.random.default_rng((seed, 6))
        epoch_batches = [[b for b in unique_caption_batches(captions, 64, rng) if len(b) >= 2] for _ in range(epochs)]
        schedule = WarmupCosine(opt, total_steps=sum(map(len, epoch_batches)), warmup_steps=len(epoch_batches[0]))
        train_clip_batches(model, x_cap, cap_ids, [b for batches in epoch_batches for b in batches], opt, schedule,
                           "CLIP eye")

    vision = dict(img_size=CANVAS, patch_size=8, in_chans=3, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0,
                  class_token=False, global_pool="avg", init="xavier")
    text = dict(vocab_size=clip_tokenizer.vocab_size, context_length=12, width=64, depth=2, heads=4,
                eot_id=clip_tokenizer.eot_id, mlp_ratio=2.0)
    start = time.perf_counter()
    clip, loaded = cached_model(out_dir, f"05_clip_e{epochs}_s{seed}.npz", CLIP(64, vision, text, seed=seed), train)
    return clip.visual.eval(), loaded, time.perf_counter() - start, (x_cap, attr_cap)


def build(eye, d, kind="mlp", num_tokens=None, seed=0):
    """A VisionLanguageModel: the frozen eye read at block -2, a connector (64 -> 64), a 2-block causal LM."""
    n_vis = 16 if num_tokens is None else num_tokens
    lm = CausalLM(d.tokenizer.vocab_size, n_vis + d.context, dim=64, depth=2, heads=4, seed=seed)
    connector = Connector(kind, 64, 64, num_tokens=num_tokens, depth=1, heads=4, seed=seed + 1)
    return VisionLanguageModel(eye, connector, lm, layer=-2)


def features_of(model, images):
    """The frozen eye's features of every picture, computed once (the eye never changes)."""
    return np.concatenate([model.eye_features(images[i:i + 500]).numpy() for i in range(0, len(images), 500)])


def train_vlm(model, feats, ids, starts, steps, desc, seed, train=None, blank=False):
    """`steps` batches of 64 sequences, AdamW 2e-3 with warm-up cosine; (losses, seconds).

    train: the part that learns (default: the connector and the LM); every other parameter is frozen
    for this stage. blank=True: the pictures are blanked (the LM learns the words alone)."""
    train = model if train is None else train
    d_pad = Tokenizer.pad_id                    # every row's loss ignores its padding, so a batch can drop it
    learning = {id(p) for p in train.parameters()}
    frozen = [p for p in model.parameters() if id(p) not in learning]
    for p in frozen:
        p.requires_grad = False
    opt = AdamW(param_groups_no_decay(train, 0.01), lr=2e-3)
    schedule = WarmupCosine(opt, total_steps=steps, warmup_steps=max(1, steps // 10))
    rng = np.random.default_rng((seed, 8))

    def batch_loss():
        idx = rng.integers(0, len(ids), 64)
        batch = ids[idx]
        batch = batch[:, :(batch != d_pad).any(0).nonzero()[0].max() + 1]   # drop columns of padding only
        return model.loss(None, batch, starts[idx], features=tv.Tensor(feats[idx]), blank=blank)
    start = time.perf_counter()
    try:
        losses = optimise(batch_loss, opt, steps, desc, schedule=schedule)
    finally:
        for p in frozen:
            p.requires_grad = True
    return losses, time.perf_counter() - start


def first_answer_words(model, d, feats, ids, starts, blank=False):
    """The answer the model gives (its most likely first answer token), read at each row's last prompt position."""
    out = []
    with tv.no_grad():
        for i in range(0, len(ids), 500):
            logits = model(None, ids[i:i + 500], blank=blank, features=tv.Tensor(feats[i:i + 500])).numpy()
            out.extend(logits[np.arange(len(logits)), starts[i:i + 500] - 1].argmax(-1))
    return [d.tokenizer.decode([t]) for t in out]


def by_kind(said, answers, kinds):
    """Accuracy per question kind."""
    return {k: float(np.mean([s == a for s, a, kk in zip(said, answers, kinds) if kk == k])) for k in QUESTION_KINDS
            if k in kinds}
