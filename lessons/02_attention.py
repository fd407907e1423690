"""Lesson 02: attention, the operation that lets every patch read every other patch.

Run:  python lessons/02_attention.py            (full: ~25 s on 2 CPU cores)
      python lessons/02_attention.py --quick    (CI: ~8 s)        options: --seed N  --out DIR

Motivation
    Lesson 01 turned a picture into N patch tokens. A convolution lets a pixel see only its
    neighbours, and it takes many layers before the top-left corner can influence the bottom-right.
    Self-attention connects every token with every token in ONE layer, and the strength of each
    connection is computed from the content of the image at hand rather than fixed by the
    architecture. It is the same operation in a text model, a ViT, CLIP's two towers and a video
    transformer; only two things change between them: what the tokens are, and the mask.

The idea (Vaswani et al. 2017, sec. 3.2)
    Each token x_i (a row of X, shape N x D) emits a query q_i, a key k_i and a value v_i, three
    linear maps of x_i. Then
        S = Q K^T / sqrt(d)              (N x N)  how well query i matches key j          (eq. 1)
        A = softmax(S), row by row       each row: N weights >= 0 that sum to 1
        O = A V                          (N x d)  token i's output: a weighted mean of the values
    - Why 1/sqrt(d): if the d components of q and k are independent with mean 0 and variance 1,
      q . k is a sum of d such products, with variance d (sec. 3.2.1, footnote 4). Unscaled scores
      grow like sqrt(d); softmax of large scores is nearly one-hot, and a one-hot softmax has a
      near-zero derivative, so the query and key weights stop learning. Dividing by sqrt(d) keeps
      the scores at unit scale whatever the head width.
    - Masks decide which keys a query may read: a masked score is set to -inf before the softmax,
      so its weight is exactly 0. An image encoder (ViT, CLIP's image tower) masks nothing: every
      patch reads every patch, left and right, up and down (bidirectional). A text decoder (GPT,
      CLIP's text tower) uses a causal mask, j <= i, so that token i, which is trained to predict
      token i+1, cannot peek at it (sec. 3.2.3). Then nothing after i can change token i's output.
    - Multi-head (sec. 3.2.2): split the D columns of Q, K and V into h heads of width d = D/h, run
      attention in each head on its own slice, concatenate the h outputs back to width D, and mix
      them with one more matrix W_O (timm: attn.proj). Each head gets its own attention pattern, at
      no extra cost: the parameters are 4 D^2 (+ biases) and the score arithmetic h N^2 d = N^2 D,
      whatever h is.

What to look at
    Section 1: the attention computed by hand equals F.scaled_dot_product_attention to ~1e-16; the
               std of q . k is ~sqrt(d) (2, 8, 32 for d = 4, 64, 1024) before scaling and ~1 after,
               and unscaled the largest softmax weight goes to ~1 while the softmax's gradient dies.
    Section 2: 02_masks.png: the two weight matrices. With the causal mask, changing the last tokens
               changes the outputs of the earlier tokens by exactly 0.0; without it, by a lot.
    Section 3: four heads computed one by one from slices of attn.qkv, concatenated and projected,
               equal nn.MultiHeadAttention's output to ~1e-16.
    Section 4: 02_attention_maps.png: a one-block ViT learns "is the shape on the left or on the
               right?" (only position answers that), and we draw where its class token looks. The
               printed lines measure the share of its attention on the object's patches against
               their share of the image, and how much of it goes to a single patch; they say what
               this run's numbers show. In the full run it read one or two patches of the object,
               not its outline, and spread the rest thinly over the background. The same model
               without position embeddings should stay at chance (lesson 01, section 4); in the
               full run its class token found the object too, by colour, and still could not say
               on which side it is.

Exercises
    1. Section 1 without the scaling: at which d does the softmax become effectively one-hot? Then
       pass scale=1.0 to F.scaled_dot_product_attention inside MultiHeadAttention.forward
       (tinyvision/nn/attention.py) and rerun section 4 with D = 256 and 2 heads (d = 128). Does it
       still learn, and how fast? (Undo the edit.)
    2. Build the causal mask yourself as a boolean matrix and pass it as `mask=`; check that the
       result is identical to causal=True. Then build a mask that lets each token see only itself and
       its two neighbours (a "local attention" window): which tokens are unaffected by a change of
       token 5 now?
    3. In section 3, permute the heads (reorder the slices of q, k and v the same way). Which rows
       of attn.proj.weight must be permuted to keep the output unchanged?
    4. Remove `fan_in_init(...)` in section 4 (keeping timm's std 0.02 initialisation). How many
       steps does the model sit at 50% before it learns? Then try depth=2 with fan_in_init: the
       accuracy is as good, but where does the class token attend now, and why can it afford to?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import numpy as np

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import nn
from tinyvision.backend import to_device
from tinyvision.data import batches, left_right_task
from tinyvision.models import ViT
from tinyvision.optim import AdamW, WarmupCosine

from _common import accuracy_margin, compare, one_blas_thread, parse_args, pyplot, save_figure

args = parse_args(__doc__)
one_blas_thread()


def rng_for(section: int) -> np.random.Generator:
    """One random stream per section, so editing one section never changes another's numbers."""
    return np.random.default_rng((args.seed, section))


def softmax(s: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the last axis; subtracting the row max first keeps exp() from overflowing."""
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_by_hand(q: np.ndarray, k: np.ndarray, v: np.ndarray, keep=None):
    """softmax(q k^T / sqrt(d)) v in plain NumPy; keep: boolean (Nq, Nk), True = may attend."""
    s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    a = softmax(s)
    return a @ v, a


# %% 1. Scaled dot-product attention by hand
print("== 1. attention by hand on 4 tokens, head width d = 8 (float64)")
rng = rng_for(1)
n_tok, d = 4, 8
q, k, v = (rng.standard_normal((n_tok, d)) for _ in range(3))    # as if from x W_q, x W_k, x W_v

scores = q @ k.T                                  # (N, N): row i = query i against every key j
scaled = scores / np.sqrt(d)
weights = softmax(scaled)
out = weights @ v                                 # (N, d): row i = sum_j weights[i, j] v_j
np.set_printoptions(precision=3, suppress=True)
print("  scores S = q k^T / sqrt(d):\n" + "\n".join("    " + str(row) for row in scaled))
print("  weights A = softmax(S), row by row (each row sums to 1):")
for row in weights:
    print(f"    {row}   sum {row.sum():.6f}")
print(f"  output O = A v: shape {out.shape}, row 0 = {out[0]}")

op_out, op_weights = F.scaled_dot_product_attention(*(tv.Tensor(a, dtype=np.float64) for a in (q, k, v)),
                                                    return_weights=True)
op_weights = to_device(op_weights, "cpu")              # raw weights live where the op ran (GPU with --device cuda)
sdpa_diff = float(max(np.abs(op_out.numpy() - out).max(), np.abs(op_weights - weights).max()))
print(f"  F.scaled_dot_product_attention against the lines above: max |difference| {sdpa_diff:.1e}")
assert sdpa_diff < 1e-12

print("\n  why divide by sqrt(d): q, k with d independent N(0, 1) components, 16 keys per query, 4000 queries")
print("      d   std(q.k)   std(q.k / sqrt d)   largest weight: unscaled  scaled   softmax gradient: unscaled  scaled")
n_keys, n_queries = 16, 4000
scale_table = {}
for dim in (4, 64, 1024):
    qs = rng.standard_normal((n_queries, 1, dim))
    ks = rng.standard_normal((n_queries, n_keys, dim))
    raw = (qs @ ks.swapaxes(1, 2))[:, 0]                      # (queries, keys)
    row = {"std_raw": raw.std(), "std_scaled": (raw / np.sqrt(dim)).std()}
    for name, s in (("raw", raw), ("scaled", raw / np.sqrt(dim))):
        a = softmax(s)
        row[f"max_{name}"] = a.max(axis=1).mean()
        # dA/dS = diag(a) - a a^T for one row; its size (Frobenius norm) is how much gradient reaches the scores
        jac = a[:, :, None] * np.eye(n_keys) - a[:, :, None] * a[:, None, :]
        row[f"grad_{name}"] = np.sqrt((jac ** 2).sum(axis=(1, 2))).mean()
    scale_table[dim] = row
    print(f"   {dim:4d}   {row['std_raw']:8.2f}   {row['std_scaled']:17.2f}   {row['max_raw']:23.3f}  {row['max_scaled']:6.3f}"
          f"   {row['grad_raw']:24.4f}  {row['grad_scaled']:6.4f}")
assert abs(scale_table[1024]["std_raw"] / 32 - 1) < 0.05 and abs(scale_table[1024]["std_scaled"] - 1) < 0.05
d_big = max(scale_table)
big = scale_table[d_big]
follows_sqrt = all(abs(r["std_raw"] / np.sqrt(dim) - 1) < 0.05 for dim, r in scale_table.items())
spread = "grows like sqrt(d) (within 5%)" if follows_sqrt else "does not follow sqrt(d)"
one_hot = ", almost one-hot," if big["max_raw"] > 0.9 else ""
if big["grad_raw"] < big["grad_scaled"]:
    gradient = f"is {big['grad_scaled'] / big['grad_raw']:.1f}x smaller than scaled"
else:
    gradient = "is not smaller than scaled"
print(f"  unscaled, the score spread {spread}; at d = {d_big} the largest weight averages {big['max_raw']:.3f}"
      f"{one_hot} and the softmax gradient {gradient}.")
scaled_std = [r["std_scaled"] for r in scale_table.values()]
scaled_top = [r["max_scaled"] for r in scale_table.values()]
if all(abs(s - 1) < 0.05 for s in scaled_std):
    std_words = "every width sees scores of std ~1 (within 5%)"
else:
    std_words = "the score std is not ~1 at every width"
top_words = "and" if max(scaled_top) - min(scaled_top) < 0.05 else "yet"
print(f"  scaled, {std_words}, {top_words} the largest weight ranges from {min(scaled_top):.3f} "
      f"to {max(scaled_top):.3f}.")


# %% 2. Bidirectional (encoder) against causal (decoder) attention
print("\n== 2. bidirectional against causal: one attention layer, 6 tokens of width 16, one head (float64)")
rng = rng_for(2)
T, D2 = 6, 16
layer = nn.MultiHeadAttention(D2, 1, seed=rng).astype(np.float64)
tokens = rng.standard_normal((1, T, D2))
changed_from = 3                                          # tokens 3, 4, 5 will be replaced
tokens_new = tokens.copy()
tokens_new[:, changed_from:] = rng.standard_normal((1, T - changed_from, D2))

mask_weights, effects = {}, {}
print(f"  replace tokens {changed_from}..{T - 1}; max |change| of each token's output:")
print("    mask            " + "  ".join(f"token {t}" for t in range(T)))
for name, causal in (("bidirectional", False), ("causal", True)):
    with tv.no_grad():
        y = layer(tv.Tensor(tokens), causal=causal, keep_attention=True).numpy()
        mask_weights[name] = layer.last_attention[0, 0]                   # (T, T), head 0
        y_new = layer(tv.Tensor(tokens_new), causal=causal).numpy()
    per_token = np.abs(y_new - y).max(axis=(0, 2))                         # (T,)
    effects[name] = float(per_token[:changed_from].max())
    print(f"    {name:13s}   " + "  ".join(f"{e:7.1e}" for e in per_token))
causal_effect, bidirectional_effect = effects["causal"], effects["bidirectional"]
assert causal_effect == 0.0 and bidirectional_effect > 1e-3
assert np.allclose(np.triu(mask_weights["causal"], 1), 0) and np.allclose(mask_weights["causal"].sum(1), 1)
print(f"  causal: tokens 0..{changed_from - 1} change by exactly {causal_effect} (their weights on keys >= "
      f"{changed_from} are exp(-inf) = 0);")
print(f"  bidirectional: by up to {bidirectional_effect:.2f}. A ViT is an encoder: each patch reads the whole image.")
print(f"  Under the causal mask token 0 reads only itself (weight {mask_weights['causal'][0, 0]:.2f}) and only the")
print("  LAST token reads the whole sequence, which is why a causal text tower (CLIP's) takes its summary from")
print("  the last, end-of-text token.")


def plot_masks(name: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, (title, a) in zip(axes, mask_weights.items()):
        ax.imshow(a, cmap="Blues", vmin=0, vmax=1)
        for i in range(T):
            for j in range(T):
                masked = title == "causal" and j > i
                ax.text(j, i, "0" if masked else f"{a[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="gray" if masked else ("white" if a[i, j] > 0.6 else "black"))
        ax.set_xticks(range(T))
        ax.set_yticks(range(T))
        ax.set_xlabel("key j (token read)")
        ax.set_ylabel("query i (token writing its output)")
        kind = "every token reads every token" if title == "bidirectional" else "token i reads tokens j <= i"
        ax.set_title(f"{title}: {kind}", fontsize=10)
    fig.suptitle("Attention weights of the same layer on the same 6 tokens; each row sums to 1\n"
                 "(grey 0: masked, its score was set to -inf before the softmax)", fontsize=11, y=1.04)
    save_figure(fig, args.out, name)


plot_masks("02_masks.png")


# %% 3. Multi-head attention is h small attentions, concatenated, then one matrix
print("\n== 3. multi-head attention: D = 32, h = 4 heads of width d = 8, on (B=2, N=7, D=32) tokens (float64)")
rng = rng_for(3)
D3, h = 32, 4
d3 = D3 // h
mha = nn.MultiHeadAttention(D3, h, seed=rng).astype(np.float64)
x3 = rng.standard_normal((2, 7, D3))

# attn.qkv maps D -> 3D; its output columns are [q | k | v], each D wide, heads side by side inside each.
qkv = x3 @ mha.qkv.weight.numpy() + mha.qkv.bias.numpy()              # (B, N, 3D)
heads, head_weights = [], []
for i in range(h):
    cols = slice(i * d3, (i + 1) * d3)
    q_i = qkv[..., 0 * D3:1 * D3][..., cols]                            # (B, N, d)
    k_i = qkv[..., 1 * D3:2 * D3][..., cols]
    v_i = qkv[..., 2 * D3:3 * D3][..., cols]
    o_i, a_i = attention_by_hand(q_i, k_i, v_i)                        # (B, N, d), (B, N, N)
    heads.append(o_i)
    head_weights.append(a_i)
concat = np.concatenate(heads, axis=-1)                                # (B, N, D): head 0's d columns, then head 1's, ...
by_hand = concat @ mha.proj.weight.numpy() + mha.proj.bias.numpy()      # W_O mixes the heads
with tv.no_grad():
    library = mha(tv.Tensor(x3)).numpy()
multihead_diff = float(np.abs(by_hand - library).max())
print(f"  heads one by one, concatenated, then attn.proj, against nn.MultiHeadAttention: max |difference| "
      f"{multihead_diff:.1e}")
assert multihead_diff < 1e-12
print("  where token 0 of image 0 looks, per head (its largest weight and which key):")
for i, a in enumerate(head_weights):
    print(f"    head {i}: key {a[0, 0].argmax()} with weight {a[0, 0].max():.2f}")
per_heads = {heads: nn.MultiHeadAttention(D3, heads, seed=0).num_parameters() for heads in (1, 2, 4, 8)}
print(f"  parameters: qkv {mha.qkv.weight.shape} + proj {mha.proj.weight.shape} (+ biases) = {mha.num_parameters():,}; "
      f"for h = {', '.join(map(str, per_heads))} heads: {', '.join(f'{p:,}' for p in per_heads.values())}"
      + ("; only the slicing changes." if len(set(per_heads.values())) == 1 else "."))


# %% 4. Attention maps of a tiny ViT trained where position decides the label
quick = args.quick
n_train, n_test, steps = (1000, 300, 150) if quick else (4000, 1000, 600)
IMG, P, D4, HEADS = 32, 4, 32, 4
print(f"\n== 4. a one-block ViT on 'is the shape left or right?': {IMG}x{IMG} images, P = {P} "
      f"({(IMG // P) ** 2} patch tokens + cls), D = {D4}, {HEADS} heads, {steps} steps of 32")
X_train, y_train = left_right_task(n_train, IMG, seed=rng_for(41))
X_test, y_test = left_right_task(n_test, IMG, seed=rng_for(42))
g = IMG // P
# a patch belongs to the object when any of its pixels is coloured (the background is black)
object_patches = (X_test.reshape(n_test, 3, g, P, g, P).max(axis=(1, 3, 5)) > 0).reshape(n_test, g * g)


def fan_in_init(model: ViT, rng: np.random.Generator) -> ViT:
    """Re-draw every Linear weight from N(0, 1/fan_in) (LeCun init), keeping the zero biases.

    ViT's own init (timm) draws them with std 0.02, which suits D = 768 (0.02 ~ 0.55/sqrt(768)) but at
    D = 32 is ~0.11/sqrt(32): every block's output starts ~100x smaller than its input, the learned
    class token outgrows the signal from the image, and training can sit at chance for hundreds of
    steps (exercise 4).
    """
    for m in model.modules():
        if isinstance(m, nn.Linear):
            w = (rng.standard_normal(m.weight.shape) / np.sqrt(m.in_features)).astype(np.float32)
            m.weight.data = to_device(w, m.weight.device)   # drawn on the host, put where the model lives
    return model


def train(pos_embed: str):
    """Train a one-block ViT from the same seed; returns the model and its test accuracy."""
    rng = rng_for(43)
    model = ViT(img_size=IMG, patch_size=P, in_chans=3, num_classes=2, embed_dim=D4, depth=1, num_heads=HEADS,
                pos_embed=pos_embed, seed=rng)
    fan_in_init(model, rng)
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    schedule = WarmupCosine(optimizer, total_steps=steps, warmup_steps=steps // 10)
    step, epoch = 0, 0
    while step < steps:
        for xb, yb in batches(X_train, y_train, batch_size=32, seed=args.seed, epoch=epoch, drop_last=True):
            schedule.step()
            loss = F.cross_entropy(model(tv.Tensor(xb)), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
        epoch += 1
    with tv.no_grad():
        accuracy = float((model(tv.Tensor(X_test)).numpy().argmax(axis=1) == y_test).mean())
    print(f"  pos_embed={pos_embed!r:9s} test accuracy {accuracy:.3f} after {steps} steps "
          f"(last batch loss {loss.item():.3f})")
    return model, accuracy


def class_token_attention(model: ViT) -> np.ndarray:
    """(B, gh*gw): the last block's attention from the class token to each patch, averaged over heads."""
    with tv.no_grad():
        out = model(tv.Tensor(X_test), return_all=True)
    a = out.attention[-1]                        # (B, h, T, T) with T = 1 + N; token 0 is the class token
    return a[:, :, 0, 1:].mean(axis=1)           # row 0 (the class token's query), columns of the patches


model, vit_accuracy = train("sincos")
model_nopos, nopos_accuracy = train("none")
maps, maps_nopos = class_token_attention(model), class_token_attention(model_nopos)
object_share = float(object_patches.mean())                                  # share of patches on the object
on_object = float((maps * object_patches).sum(axis=1).mean())
on_object_nopos = float((maps_nopos * object_patches).sum(axis=1).mean())
on_itself = 1 - float(maps.sum(axis=1).mean())                               # what is left: the class token
top_on_object = float(object_patches[np.arange(n_test), maps.argmax(axis=1)].mean())
on_object_per_image = (maps * object_patches).sum(axis=1)
top_object_patch = np.where(object_patches, maps, 0).max(axis=1)
one_patch_share = float((top_object_patch / on_object_per_image).mean())
print(f"  the object covers {object_share:.1%} of the patches; the class token's attention on them, averaged over "
      f"{n_test} test images:")
print(f"    with positions {on_object:.1%} ({on_object / object_share:.1f}x uniform), without positions "
      f"{on_object_nopos:.1%} ({on_object_nopos / object_share:.1f}x); on the class token itself {on_itself:.1%}")
chance, margin = 0.5, accuracy_margin(n_test)
print(f"  test accuracy ({margin:.3f} is about two standard errors on {n_test} images): "
      + compare("with positions", vit_accuracy, "without positions", nopos_accuracy, margin))
if abs(nopos_accuracy - chance) <= margin:
    print(f"  without positions the model is within {margin:.3f} of chance ({nopos_accuracy:.3f} against {chance}): "
          "nothing its class token can read tells left from right.")
    if on_object_nopos / object_share < 2:
        print("  Its attention never learned to single out the object: it stays close to uniform.")
    else:
        print("  Its class token still finds the coloured patches (by content), but what it reads from them is the")
        print("  same on the left and on the right.")
else:
    print(f"  without positions the model reaches {nopos_accuracy:.3f}, more than {margin:.3f} from chance: with no")
    print("  positions its output depends only on the set of patch contents, so here those contents carry a hint")
    print("  of the side.")
print(f"  with positions the most-attended patch lies on the object in {top_on_object:.0%} of the test images, and"
      f" {one_patch_share:.0%} of the attention on the object goes to its single most-attended patch:")
print("  the class token reads " + ("mostly one patch of the object, not its outline." if one_patch_share > 0.5
                                    else "several patches of the object, no single one dominating."))
if vit_accuracy > chance + margin:
    print(f"  That is enough to answer left or right (accuracy {vit_accuracy:.3f}); an attention map shows what a model"
          " reads, not a segmentation.")
else:
    print(f"  This model has not learned the task (accuracy {vit_accuracy:.3f}), so its map means little yet.")
background = 1 - on_object - on_itself
per_patch = background / (1 - object_share)         # of uniform attention, per background patch
print(f"  The remaining {background:.1%} goes to the background patches, {per_patch:.2f}x uniform per patch"
      + (" (thinly spread)." if per_patch < 1 else "."))


def plot_attention_maps(name: str, n_show: int = 8) -> None:
    plt = pyplot()
    show = np.concatenate([np.flatnonzero(y_test == label)[:n_show // 2] for label in (0, 1)])  # half left, half right
    fig, axes = plt.subplots(3, n_show, figsize=(1.7 * n_show, 5.6))
    vmax = float(maps[show].max())          # one colour scale for both rows: a flat map must look flat
    for col, i in enumerate(show):
        image = X_test[i].transpose(1, 2, 0)
        outline = X_test[i].max(axis=0) > 0                                   # (H, W) object pixels
        axes[0, col].imshow(image)
        axes[0, col].set_title(f"{('left', 'right')[y_test[i]]}", fontsize=9)
        for row, (m, label) in enumerate(((maps, "positions"), (maps_nopos, "none")), start=1):
            grid = m[i].reshape(g, g)
            ax = axes[row, col]
            im = ax.imshow(grid, cmap="magma", extent=(0, IMG, IMG, 0), vmin=0, vmax=vmax)
            ax.contour(np.arange(IMG) + 0.5, np.arange(IMG) + 0.5, outline, levels=[0.5], colors="cyan",
                       linewidths=0.8)
            ax.set_title(f"{(m[i] * object_patches[i]).sum():.0%} on object", fontsize=8)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel(f"sincos\nacc {vit_accuracy:.2f}", fontsize=9)
    axes[2, 0].set_ylabel(f"no positions\nacc {nopos_accuracy:.2f}", fontsize=9)
    fig.subplots_adjust(right=0.9)
    fig.colorbar(im, cax=fig.add_axes([0.92, 0.12, 0.012, 0.5]), label="attention weight")
    fig.suptitle("Class-token attention of a one-block ViT (mean of 4 heads, one square per patch; cyan: the object)",
                 fontsize=10)
    save_figure(fig, args.out, name)


plot_attention_maps("02_attention_maps.png")


# %% Result
print("result: " + json.dumps({
    "lesson": "02_attention",
    "quick": args.quick,
    "seed": args.seed,
    "sdpa_matches_manual_max_diff": float(f"{sdpa_diff:.3g}"),
    "score_std_unscaled": {str(dim): round(float(r["std_raw"]), 2) for dim, r in scale_table.items()},
    "causal_future_change_effect": causal_effect,
    "bidirectional_future_change_effect": round(bidirectional_effect, 4),
    "multihead_concat_max_diff": float(f"{multihead_diff:.3g}"),
    "vit_test_accuracy": round(vit_accuracy, 4),
    "vit_no_pos_test_accuracy": round(nopos_accuracy, 4),
    "cls_attention_on_object": round(on_object, 4),
    "object_patch_share": round(object_share, 4),
    "top_attended_patch_on_object": round(top_on_object, 4),
    "train_steps": steps,
}))
