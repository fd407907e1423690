"""Lesson 08b: text to image, by diffusion in the latent space of an autoencoder, guided by a CLIP text tower.

Run:  python lessons/08b_text_to_image.py            (full: under 4 minutes on 2 CPU cores; seconds when
                                                      its three models are cached in --out)
      python lessons/08b_text_to_image.py --quick    (CI: seconds)     options: --seed N  --out DIR

Motivation
    Lesson 08 drew a digit on request: the request was one of ten labels. Here the request is a
    sentence, "a small red circle on the left", and the answer a coloured picture. This is the recipe
    of Stable Diffusion (Rombach et al. 2022), scaled down until every part trains on a laptop:
      - pixels are expensive, so an autoencoder (lesson 06's VAE, with a code that stays an image)
        squeezes each 16x16x3 picture into a 4x4 grid of 4 numbers, 12x fewer; diffusion runs there;
      - the sentence is read by the text tower of a CLIP model (lesson 04), trained here on the same
        pictures, whose embedding steers the denoiser;
      - classifier-free guidance (lesson 08) turns up how strongly the picture follows the words.

The idea
    1. Train CLIP on (picture, caption) pairs; keep its text tower, frozen: caption -> 32 numbers.
    2. Train the VAE (arch="grid"): picture -> mu, a (4, 4, 4) grid -> picture again. Its mu, scaled to
       unit standard deviation (Stable Diffusion's 0.18215 is this scale for its autoencoder), is the
       "image" the diffusion model learns.
    3. Train a DiT on those 4x4 latents (each cell one token) with the caption's embedding added to its
       time embedding (adaLN conditioning); 10 % of the time the caption is replaced by the zero vector,
       "no caption", so that the same network also learns the unconditional model.
    4. Sample: DDIM in latent space with guidance w, then decode with the VAE.
    5. Judge every picture by reading it: the object is the bright pixels; its colour is their mean,
       its side their mean position, its shape how it fills its bounding box (tinyvision.data.read_object,
       right on every real picture). Some colour-shape pairs (a green circle, a blue square, a yellow triangle) are
       never in the training pictures: asking for them tests compositional generalisation.

What to look at
    - The judge's accuracy on real pictures and on VAE reconstructions: the ceilings. A sample can only
      be as right as the decoder can draw.
    - The share of samples with shape, colour and side all as asked, for w = 0 (no caption), 1 and
      more, on seen and on unseen pairs.
    - lessons/out/08b_prompts.png: the prompts, their samples, and the unseen pairs.

Exercises
    1. Train the DiT with P_UNCOND = 0 and sample with w = 3. Why does guidance break?
    2. Skip the latent scaling (use mu as it is). What does the schedule then assume that is false?
    3. Replace the CLIP text embedding by a one-hot code of (shape, colour, size, side). Do the unseen
       pairs get easier or harder, and why?
    4. Train CLIP on partial captions (partial_caption with p_drop = 0.3, as lesson 04 does). Print the
       cosine between the embeddings of "... on the left" and "... on the right". Can you still ask
       for a side?
"""
# %% Imports and the command line
from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np

import tinyvision as tv
from tinyvision.data import SHAPES, caption, captioned_shapes, read_object, unique_caption_batches
from tinyvision.diffusion import DiT, as_denoiser, diffusion_loss, guided_denoiser, make_schedule, sample
from tinyvision.models import CLIP
from tinyvision.models.vae import VAE, negative_elbo
from tinyvision.optim import Adam, AdamW, WarmupCosine, param_groups_no_decay
from tinyvision.text import Tokenizer

from _common import (accuracy_margin, cached_model, compare, one_blas_thread, optimise, parse_args, progress, pyplot,
                     save_figure, train_clip_batches)

args = parse_args(__doc__)
one_blas_thread()
QUICK = args.quick
CANVAS, CONTEXT, EMBED = 16, 10, 32
PALETTE = ("red", "green", "blue", "yellow")
HELD_OUT = (("green", "circle"), ("blue", "square"), ("yellow", "triangle"))
SIZES, SIDES = ("small", "large"), ("left", "right")
P_UNCOND = 0.1
N_TRAIN = 600 if QUICK else 5000
CLIP_EPOCHS, VAE_EPOCHS, DIT_STEPS = (1, 2, 40) if QUICK else (12, 20, 1500)
PER_PROMPT = 1 if QUICK else 8
DDIM_STEPS = 20 if QUICK else 50
W_VALUES = (0.0, 1.0, 3.0) if QUICK else (0.0, 1.0, 2.0, 3.0, 5.0)
TAG = f"s{args.seed}{'_quick' if QUICK else ''}"

# %% 1. Data: pictures with their captions; three colour-shape pairs never shown
common = dict(held_out_combos=HELD_OUT, sizes=SIZES, placement="left_right", templates=("{}",), colors=PALETTE)
x_train, cap_train, attr_train = captioned_shapes(N_TRAIN, CANVAS, seed=args.seed, **common)
ALL_PROMPTS = [dict(count=1, size=size, color=color, shape=shape, side=side)
               for shape, color, size, side in itertools.product(SHAPES, PALETTE, SIZES, SIDES)]
tokenizer = Tokenizer.train([caption(a) for a in ALL_PROMPTS])     # every word any prompt uses, in a fixed order
print(f"== 1. data: {N_TRAIN} training pictures of {CANVAS}x{CANVAS}, {len(set(cap_train))} distinct captions "
      f"(of the {len(ALL_PROMPTS)} prompts, those of pairs never held out), e.g. {cap_train[0]!r}; never shown: "
      f"{', '.join(f'{c} {s}' for c, s in HELD_OUT)}")


def is_unseen(a):
    return (a["color"], a["shape"]) in HELD_OUT


# %% 2. The text tower: a small CLIP, trained on these pictures
def train_clip(model):
    # Complete captions only (lesson 04 drops words to make short prompts work; every prompt here is
    # complete, and with the side dropped 30 % of the time this small CLIP, in 12 epochs, tells
    # left from right in only about half of the pictures).
    ids = tokenizer.encode_batch(cap_train, CONTEXT)
    rng = np.random.default_rng((args.seed, 1))        # each model its own stream: the same with or without caches
    epoch_batches = [[b for b in unique_caption_batches(cap_train, 64, rng) if len(b) >= 2] for _ in range(CLIP_EPOCHS)]
    opt = AdamW(param_groups_no_decay(model, 0.05), lr=2e-3)
    total = sum(map(len, epoch_batches))
    schedule = WarmupCosine(opt, total_steps=total, warmup_steps=max(1, total // 10))
    losses = train_clip_batches(model, x_train, ids, list(itertools.chain(*epoch_batches)), opt, schedule)
    print(f"  CLIP loss: first epoch {np.mean(losses[:len(epoch_batches[0])]):.3f}, last {np.mean(losses[-len(epoch_batches[-1]):]):.3f}")


print(f"\n== 2. CLIP (ViT on 4x4 patches + text transformer, both width 48, joint space {EMBED}), {CLIP_EPOCHS} epochs")
start = time.perf_counter()
clip = CLIP(EMBED, dict(img_size=CANVAS, patch_size=4, in_chans=3, embed_dim=48, depth=2, num_heads=4, mlp_ratio=2.0,
                        class_token=False, global_pool="avg", init="xavier"),
            dict(vocab_size=tokenizer.vocab_size, context_length=CONTEXT, width=48, depth=2, heads=4,
                 eot_id=tokenizer.eot_id, mlp_ratio=2.0), seed=args.seed)
CLIP_FILE = f"08b_clip_e{CLIP_EPOCHS}_{TAG}.npz"
clip, _ = cached_model(args.out, CLIP_FILE, clip, train_clip)
clip.eval()
clip_seconds = time.perf_counter() - start


def text_embedding(captions):
    with tv.no_grad():
        return clip.encode_text(tokenizer.encode_batch(list(captions), CONTEXT)).numpy()


prompt_text = [caption(a) for a in ALL_PROMPTS]
prompt_emb = text_embedding(prompt_text)
x_check, _, attr_check = captioned_shapes(600, CANVAS, seed=args.seed + 8, split="test", combos="all", **common)
with tv.no_grad():
    nearest = (clip.encode_image(tv.Tensor(x_check)).numpy() @ prompt_emb.T).argmax(1)
print(f"  text -> embedding: {prompt_text[0]!r} -> {[round(float(v), 2) for v in prompt_emb[0, :4]]}...  ({EMBED} numbers, unit length)")
print("  does the embedding know each word? 600 fresh pictures, every pair, each matched to the nearest of the "
      f"{len(ALL_PROMPTS)} prompts; share whose nearest prompt names its " + ", ".join(
          f"{key} {np.mean([ALL_PROMPTS[i][key] == a[key] for i, a in zip(nearest, attr_check)]):.2f}"
          for key in ("shape", "color", "size", "side")))

# %% 3. The autoencoder: 16x16x3 pictures <-> 4x4x4 latent grids
vae = VAE(image_shape=(3, CANVAS, CANVAS), latent_dim=4 * 4 * 4, hidden=256, arch="grid", likelihood="gaussian",
          sigma=0.05, seed=args.seed)


def train_vae(model):
    rng = np.random.default_rng((args.seed, 2))
    opt, losses = Adam(model.parameters(), lr=1e-3), []
    steps = VAE_EPOCHS * math.ceil(N_TRAIN / 128)
    for step in (bar := progress(range(steps), "VAE", unit="step")):
        loss, recon, kl = negative_elbo(model, x_train[rng.integers(0, N_TRAIN, 128)], rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append((recon, kl))
        if step % 50 == 0:
            bar.set_postfix(recon=f"{recon:.0f}", kl=f"{kl:.1f}")
    print(f"  last 50 steps: reconstruction term {np.mean([r for r, _ in losses[-50:]]):.1f} nats, "
          f"KL {np.mean([k for _, k in losses[-50:]]):.1f} nats per picture")


print(f"\n== 3. the VAE: 16x16x3 = 768 numbers -> a 4x4 grid of 4 = 64 latent numbers; {VAE_EPOCHS} epochs, Gaussian "
      "likelihood with sigma = 0.05 (sharp pictures, a light KL)")
start = time.perf_counter()
VAE_FILE = f"08b_vae_e{VAE_EPOCHS}_sigma0.05_{TAG}.npz"
vae, _ = cached_model(args.out, VAE_FILE, vae, train_vae)
vae_seconds = time.perf_counter() - start


def encode(images):
    with tv.no_grad():
        return np.concatenate([vae.encode(tv.Tensor(images[i:i + 500]))[0].numpy() for i in range(0, len(images), 500)])


def decode(latents):
    return np.clip(vae.decode_mean(np.asarray(latents, np.float32)), 0, 1)


mu_train = encode(x_train)
scale = 1.0 / float(mu_train.std())
recon = decode(mu_train[:500])
print(f"  reconstruction error (mean squared, pixels in [0, 1]): {np.mean((recon - x_train[:500]) ** 2):.4f}; "
      f"latent std {mu_train.std():.3f}, so latents are multiplied by {scale:.3f} to unit scale")

# %% 4. The judge: shape, colour and side read off the pixels (tinyvision.data.read_object)
def judge(images, wanted):
    """Per picture: are its shape, colour, side as `wanted` (a list of attribute dicts)? -> dict of bool arrays.
    read_object needs no training, so it cannot share a blind spot with the models it judges."""
    seen = [read_object(img) for img in images]
    ok = {key: np.array([r is not None and r[key] == a[key] for r, a in zip(seen, wanted)])
          for key in ("shape", "color", "side")}
    ok["all"] = ok["shape"] & ok["color"] & ok["side"]
    return ok


real = judge(x_check, attr_check)
rebuilt = judge(decode(encode(x_check)), attr_check)
print("\n== 4. the judge, on 600 fresh real pictures (every pair) and on their VAE reconstructions: share right")
for key in ("shape", "color", "side", "all"):
    print(f"  {key:6s} real {real[key].mean():.3f}   reconstructed {rebuilt[key].mean():.3f}")

# %% 5. The denoiser: a DiT on the latent grid, steered by the caption's embedding
sched = make_schedule("cosine", 1000)
z_train = (mu_train * scale).reshape(-1, 4, 4, 4)
cond_train = text_embedding(cap_train)
dit = DiT(img_size=4, patch_size=1, in_chans=4, dim=64, depth=3, heads=4, context_dim=EMBED, seed=args.seed)


def train_dit(model):
    rng = np.random.default_rng((args.seed, 3))
    opt = AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    lr_schedule = WarmupCosine(opt, total_steps=DIT_STEPS, warmup_steps=max(1, min(100, DIT_STEPS // 5)))

    def batch_loss():
        idx = rng.integers(0, N_TRAIN, 128)
        return diffusion_loss(model, sched, z_train[idx], rng, y=cond_train[idx], p_uncond=P_UNCOND)
    losses = optimise(batch_loss, opt, DIT_STEPS, "latent DiT", schedule=lr_schedule)
    k = max(1, min(100, DIT_STEPS // 2))
    print(f"  loss: first {k} steps {np.mean(losses[:k]):.3f}, last {k} {np.mean(losses[-k:]):.3f}")


print(f"\n== 5. a DiT on the 4x4 latent grid (16 tokens, width 64, 3 blocks), cosine schedule T = 1000, {DIT_STEPS} "
      f"steps of 128, the caption embedding dropped with p = {P_UNCOND}")
start = time.perf_counter()
# the DiT learned the latents of that VAE and the captions of that CLIP: its file name says which
dit, _ = cached_model(args.out, f"08b_dit_{DIT_STEPS}_on_{VAE_FILE[:-4]}_{CLIP_FILE[:-4]}.npz", dit, train_dit)
dit_seconds = time.perf_counter() - start

# %% 6. Text to image, judged
wanted = [a for a in ALL_PROMPTS for _ in range(PER_PROMPT)]
cond = np.repeat(prompt_emb, PER_PROMPT, axis=0)
unseen = np.array([is_unseen(a) for a in wanted])
n_seen, n_unseen = int((~unseen).sum()), int(unseen.sum())


def draw(w, seed=21):
    denoise = guided_denoiser(as_denoiser(dit, cond), as_denoiser(dit), w)
    z = sample(denoise, sched, (len(wanted), 4, 4, 4), np.random.default_rng(seed), "ddim", DDIM_STEPS)
    return decode(z.reshape(len(wanted), -1) / scale)


print(f"\n== 6. every one of the {len(ALL_PROMPTS)} prompts (shape x colour x size x side), {PER_PROMPT} samples each, "
      f"DDIM {DDIM_STEPS} steps; share of samples judged right ({n_seen} on seen pairs, {n_unseen} on unseen;"
      f" +-{accuracy_margin(n_seen):.2f} and +-{accuracy_margin(n_unseen):.2f} is noise)")
small = np.array([a["size"] == "small" for a in wanted])
print(f"  {'w':>5s}  {'shape':>6s} {'colour':>6s} {'side':>6s} {'all, seen':>10s} {'(small':>7s} {'large)':>7s} "
      f"{'all, unseen':>12s}   seconds")
by_w, pictures = {}, {}
for w in W_VALUES:
    t0 = time.perf_counter()
    images = draw(w)
    seconds = time.perf_counter() - t0
    ok = judge(images, wanted)
    by_w[w] = {k: round(float(v[~unseen].mean()), 4) for k, v in ok.items()}
    by_w[w]["all_small"] = round(float(ok["all"][~unseen & small].mean()), 4)
    by_w[w]["all_large"] = round(float(ok["all"][~unseen & ~small].mean()), 4)
    by_w[w]["all_unseen"] = round(float(ok["all"][unseen].mean()), 4)
    pictures[w] = images
    print(f"  {w:5.1f}  {by_w[w]['shape']:6.2f} {by_w[w]['color']:6.2f} {by_w[w]['side']:6.2f} "
          f"{by_w[w]['all']:10.2f} {by_w[w]['all_small']:7.2f} {by_w[w]['all_large']:7.2f} "
          f"{by_w[w]['all_unseen']:12.2f}   {seconds:5.1f}")
small_check = np.array([a["size"] == "small" for a in attr_check])
print(f"  the VAE's reconstructions, for comparison (section 4): all three right {rebuilt['all'][small_check].mean():.2f} "
      f"of small objects (4 pixels, the size of one latent cell), {rebuilt['all'][~small_check].mean():.2f} of large ones")
best_w = max(W_VALUES, key=lambda w: by_w[w]["all"])
chance = 1 / (len(SHAPES) * len(PALETTE) * len(SIDES))
print(f"  chance of all three right by luck: {chance:.3f}; w = 0, which ignores the caption: {by_w[0.0]['all']:.2f}")
print(f"  best w (chosen on these same samples, so slightly flattered) = {best_w:g}: all three right in {by_w[best_w]['all']:.2f} of samples for seen pairs, "
      f"{by_w[best_w]['all_unseen']:.2f} for unseen pairs (the judge on real pictures: {real['all'].mean():.2f})")
print("  guidance: " + compare("w = 3", by_w[3.0]["all"], "w = 1", by_w[1.0]["all"],
                               margin=accuracy_margin(n_seen), verb="follows the caption better than", fmt=".2f"))
print("  compositional generalisation: " + compare("seen pairs", by_w[best_w]["all"], "unseen pairs",
                                                   by_w[best_w]["all_unseen"], margin=accuracy_margin(n_unseen),
                                                   verb="are drawn right more often than", fmt=".2f"))

show = ["a small red circle on the left", "a large blue triangle on the right", "a small yellow square on the right",
        "a large green circle on the left", "a small blue square on the left", "a large yellow triangle on the right"]
fig, axes = pyplot().subplots(len(show), 1 + len(W_VALUES), figsize=(2.2 * (1 + len(W_VALUES)), 0.9 * len(show)),
                              gridspec_kw={"wspace": 0.05, "hspace": 0.15, "width_ratios": [1.5] + [1] * len(W_VALUES)})
for row, text in enumerate(show):
    i = prompt_text.index(text) * PER_PROMPT
    axes[row, 0].text(0, 0.5, text + ("\n(unseen pair)" if is_unseen(ALL_PROMPTS[i // PER_PROMPT]) else ""),
                      fontsize=7, va="center")
    axes[row, 0].axis("off")
    for col, w in enumerate(W_VALUES, start=1):
        framed = np.pad(pictures[w][i:i + min(PER_PROMPT, 4)].transpose(0, 2, 3, 1), ((0, 0), (1, 1), (1, 1), (0, 0)),
                        constant_values=0.5)                     # a grey frame: where one sample ends
        strip = np.concatenate(list(framed), axis=1)
        axes[row, col].imshow(strip)
        axes[row, col].set_xticks([])
        axes[row, col].set_yticks([])
        if row == 0:
            axes[row, col].set_title(f"w = {w:g}", fontsize=8)
save_figure(fig, args.out, "08b_prompts.png")

# %% The headline numbers
print("result: " + json.dumps({
    "lesson": "08b_text_to_image", "quick": QUICK, "seed": args.seed, "train_pictures": N_TRAIN,
    "seconds": {"clip": round(clip_seconds, 1), "vae": round(vae_seconds, 1), "dit": round(dit_seconds, 1)},
    "latent_scale": round(scale, 4), "judge_real": {k: round(float(v.mean()), 4) for k, v in real.items()},
    "judge_reconstructed": {k: round(float(v.mean()), 4) for k, v in rebuilt.items()},
    "by_w": {f"{w:g}": v for w, v in by_w.items()}, "best_w": best_w,
    "all_right_seen": by_w[best_w]["all"], "all_right_unseen": by_w[best_w]["all_unseen"],
}))
