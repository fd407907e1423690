"""Lesson 01: an image as a sentence of patches, and why the patches must carry their position.

Run:  python lessons/01_patches.py            (~3 s on 2 CPU cores; --quick does the same work)
      python lessons/01_patches.py --quick    options: --seed N  --out DIR

Motivation
    A transformer reads a sequence of vectors. Text arrives as one (one vector per word piece); a
    photograph arrives as a grid of 150,528 numbers (224 x 224 pixels x 3 colours). Making every
    pixel a token would give 50,176 tokens and 2.5 billion attention pairs per layer. The Vision
    Transformer (ViT; Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words") cuts the image into
    square patches instead and treats each patch as one word. Everything a ViT does afterwards is an
    ordinary transformer encoder; this lesson is about the two steps that make an image readable by
    one: cutting into patch tokens, and telling the tokens where they came from.

The idea
    1. Patches. An H x W image with C channels and patch side P (P divides H and W) becomes
           N = (H/P)(W/P) tokens, each a vector of C*P*P raw numbers,
       taken in raster order (left to right, then top to bottom). Self-attention compares every
       token with every token, so one layer scores N^2 query-key pairs: halving P quadruples N and
       multiplies the pairs by 16. Small patches keep small details (a printed label, a hairline
       crack) and cost quadratically; large patches are cheap and blur small things into one token.
    2. Patch embedding (ViT eq. 1): one shared matrix E of shape (C*P*P, D) maps every flattened
       patch x_i to a token z_i = x_i E + b of width D. The same numbers come out of a convolution
       whose kernel and stride both equal P: each output position then reads exactly one patch, no
       overlap and no gap, and each of the D output channels is one column of E. C*P*P and D are two
       independent numbers; in ViT-B/16 both are 768 (16*16*3 = 768) by coincidence.
    3. Position. Attention is a weighted sum whose weights come from the contents of the tokens
       alone; nothing in it knows which slot a token sits in. Reorder the patch tokens and every
       output is reordered the same way (permutation equivariance), so the class token, which
       attends to all of them, receives exactly the same thing. ViT therefore adds one vector per
       slot, z_i = x_i E + e_i (ViT eq. 1, E_pos): learned in ViT, or a fixed 2-D sin-cos table
       (MoCo v3, Chen et al. 2021; MAE, He et al. 2022) built from sines and cosines of the row and
       the column, whose dot products depend only on the offset between two cells.

What to look at
    Section 1: 01_patch_grids.png, the same photograph as 49, 196 and 784 patch tokens, numbered
               in raster order on the coarsest grid.
    Section 2: the table: 49 / 196 / 256 / 784 tokens at P = 32 / 16 / 14 / 8 for a 224 px image,
               and the x4 tokens, x16 pairs of every halving of P.
    Section 3: the convolution and the flatten-then-matmul give the same 196 x 768 tokens, up to
               float64 rounding (~1e-15 or exactly 0), and one token recomputed by hand from its
               16 x 16 x 3 pixels.
    Section 4: 01_swap.png. A tiny ViT with no position embeddings gives the same class token (to
               ~1e-16) for the photograph, for it with two patches swapped, and for a full shuffle,
               which no person would call the same picture. Add positions and the outputs differ.
    Section 5: 01_sincos_similarity.png: in the 2-D sin-cos table, the cells near a reference
               cell have the most similar vectors, a cross of row and column neighbours around it.

Exercises
    1. Use P = 15 on the 224 px photograph. Read the error; which crop or pad would fix it, and
       how many tokens would each give?
    2. In section 4 build the ViT with class_token=False, global_pool="avg" and no positions. Is
       the mean of the patch outputs still blind to the shuffle? Why, in one line?
    3. Add a position vector to the class token's slot only (zeros for every patch slot). Does the
       shuffle become visible? What must differ between SLOTS for a swap to be seen?
    4. Show on paper that e_i . e_j of the sin-cos table equals sum_k [cos(w_k dy) + cos(w_k dx)],
       with (dy, dx) the offset between the cells. Then remake the figure with temperature 100
       instead of 10000 (sincos_2d's last argument): what happens to far-away cells, and why?
    5. A ViT-B/16 trained at 224 px is fine-tuned at 384 px. How many tokens and pairs now, and why
       must its learned position table be resampled (ViT sec. 3.2; tinyvision resample_pos_embed)?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import numpy as np

import tinyvision as tv
from tinyvision.models import PatchEmbed, ViT, patchify, sincos_2d, unpatchify

from _common import one_blas_thread, parse_args, pyplot, save_figure

args = parse_args(__doc__)
one_blas_thread()


def rng_for(section: int) -> np.random.Generator:
    """One random stream per section, so editing one section never changes another's numbers."""
    return np.random.default_rng((args.seed, section))


def load_photo(size: int = 224) -> np.ndarray:
    """Grace Hopper's portrait, shipped with matplotlib, as a (size, size, 3) float64 array in [0, 1].

    The 600 x 512 JPEG is cropped to a 2*size square around the face and then averaged over
    2 x 2 pixel blocks, an exact halving that needs no interpolation library.
    """
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    pixels = mpimg.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))   # (600, 512, 3) uint8
    side = 2 * size
    top, left = 0, (pixels.shape[1] - side) // 2
    crop = pixels[top:top + side, left:left + side].astype(np.float64) / 255.0
    return crop.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))


IMG, C = 224, 3
photo = load_photo(IMG)                                        # (H, W, C), for plotting
x = tv.Tensor(photo.transpose(2, 0, 1)[None], dtype=np.float64)  # (B=1, C, H, W), for the models
assert x.shape == (1, C, IMG, IMG), f"expected the photo as (1, 3, 224, 224), got {x.shape}"


# %% 1. The photograph cut into patches
print(f"== 1. a {IMG} x {IMG} photograph cut into P x P patches, read in raster order")
for P in (32, 16, 8):
    tokens = patchify(x, P)                                    # (1, N, C*P*P)
    g = IMG // P
    # token i is the patch in grid row i // g, column i % g, flattened channel first: (C, P, P)
    i = g * (g // 2) + g // 3
    r, c = divmod(i, g)
    by_hand = photo[r * P:(r + 1) * P, c * P:(c + 1) * P].transpose(2, 0, 1).ravel()
    assert np.array_equal(tokens.numpy()[0, i], by_hand), f"token {i} is not patch ({r}, {c})"
    print(f"  P = {P:2d}: grid {g:2d} x {g:2d}, tokens {tuple(tokens.shape)} = (B, N, C*P*P); "
          f"token {i:3d} is the patch at row {r}, column {c}")


def exploded(image: np.ndarray, P: int, gap: int) -> np.ndarray:
    """(H, W, 3) -> the same picture with a white gap of `gap` pixels between its P x P patches."""
    g = image.shape[0] // P
    step = P + gap
    canvas = np.ones((g * step - gap, g * step - gap, 3))
    for r in range(g):
        for c in range(g):
            canvas[r * step:r * step + P, c * step:c * step + P] = image[r * P:(r + 1) * P, c * P:(c + 1) * P]
    return canvas


def plot_patch_grids(name: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.9))
    for ax, (P, gap) in zip(axes, [(32, 4), (16, 3), (8, 2)]):
        g = IMG // P
        ax.imshow(exploded(photo, P, gap))
        ax.set_title(f"P = {P}: {g} x {g} = {g * g} tokens\neach {C}*{P}*{P} = {C * P * P} numbers, "
                     f"{(g * g) ** 2:,} pairs", fontsize=10)
        ax.axis("off")
        if P == 32:   # the reading order: token index in every patch of the coarsest grid
            for i in range(g * g):
                r, c = divmod(i, g)
                ax.text(c * (P + gap) + P / 2, r * (P + gap) + P / 2, str(i), ha="center", va="center",
                        fontsize=8, color="white", bbox=dict(boxstyle="round,pad=0.15", fc="black", alpha=0.55, lw=0))
    fig.suptitle("One photograph, three sentences: halving P gives 4x the tokens and 16x the attention pairs")
    save_figure(fig, args.out, name)


plot_patch_grids("01_patch_grids.png")


# %% 2. Tokens and attention pairs for a 224 px image
print(f"\n== 2. patch size against sequence length: N = ({IMG}/P)^2 tokens, N^2 query-key pairs per layer")
print("      P   grid   tokens N   +cls   C*P*P      pairs N^2   pairs vs P=16   one attention map (float32)")
n16 = patchify(x, 16).shape[1]          # the reference column: ViT-B/16's sequence
table = {}
for P in (32, 16, 14, 8):
    n = patchify(x, P).shape[1]          # counted by cutting the photograph, not by formula
    assert n == (IMG // P) ** 2
    table[P] = n
    pairs = n * n
    print(f"    {P:3d}   {IMG // P:2d}x{IMG // P:<2d}   {n:8d}   {n + 1:4d}   {C * P * P:5d}   {pairs:11,d}"
          f"   {pairs / n16 ** 2:13.2f}x   {pairs * 4 / 2 ** 20:8.2f} MiB per head, per layer, per image")
assert (table[32], table[16], table[14], table[8]) == (49, 196, 256, 784)
for big, small in [(32, 16), (16, 8)]:
    assert table[small] == 4 * table[big] and table[small] ** 2 == 16 * table[big] ** 2
print(f"  halving P (32 -> 16 -> 8): tokens x{table[16] // table[32]}, pairs x{table[16] ** 2 // table[32] ** 2}. "
      f"ViT-B/16 reads {table[16]} patch tokens + 1 class token = {table[16] + 1}.")


# %% 3. Patch embedding: a strided convolution is a flatten followed by one matmul
P, D = 16, 768
print(f"\n== 3. patch embedding, P = {P}, D = {D}: Conv2d(kernel = stride = P) against flatten + matmul")
embed = PatchEmbed(IMG, P, C, D, seed=rng_for(3)).astype(np.float64)
conv_tokens = embed(x).numpy()                    # (1, 196, 768): conv, then (B, D, gh, gw) -> (B, N, D)
linear_tokens = embed.forward_linear(x).numpy()   # (1, 196, 768): patchify, then @ W.reshape(D, C*P*P).T + b
conv_equals_linear = float(np.abs(conv_tokens - linear_tokens).max())
print(f"  conv form {conv_tokens.shape}, linear form {linear_tokens.shape}: "
      f"max |difference| = {conv_equals_linear:.1e}  (float64)")
assert conv_equals_linear < 1e-12

# One token by hand: the patch at (row 6, column 7), just below the centre of the face.
r, c = 6, 7
i = r * (IMG // P) + c
patch = photo[r * P:(r + 1) * P, c * P:(c + 1) * P].transpose(2, 0, 1)        # (C, P, P)
w = embed.proj.weight.numpy()                                                  # (D, C, P, P)
token_by_hand = (w * patch).sum(axis=(1, 2, 3)) + embed.proj.bias.numpy()      # one dot product per channel
by_hand_diff = float(np.abs(token_by_hand - conv_tokens[0, i]).max())
print(f"  token {i} (patch row {r}, column {c}) by hand, sum over (c, u, v) of W[d, c, u, v] * pixel: "
      f"max |difference| = {by_hand_diff:.1e}")
assert by_hand_diff < 1e-12
print("  why: with kernel = stride = P the conv's windows tile the image, one window per patch, and a window's")
print("  output channel d is the dot product of filter d with that patch's C*P*P pixels: a row of x_i E.")

print("  the raw patch width C*P*P and the model width D are separate choices:")
for name, width in [("ViT-Ti/16", 192), ("ViT-S/16", 384), ("ViT-B/16", 768), ("ViT-L/16", 1024)]:
    pe = PatchEmbed(IMG, P, C, width, seed=0)
    out_shape = pe(x.astype(np.float32)).shape
    print(f"    {name:9s}: patches (1, {table[P]}, {C * P * P}) -> tokens {out_shape}, "
          f"E has {pe.num_parameters():,} numbers")
print(f"  ViT-B's {D} = {P}*{P}*{C} only by coincidence; ViT-L maps the same {C * P * P} numbers to {width}.")


# %% 4. Swap two patches: invisible without positions, visible with them
P4, D4, DEPTH4 = 32, 64, 2
g4 = IMG // P4
print(f"\n== 4. the position-swap experiment: a tiny ViT (P = {P4}, {g4 * g4} patch tokens + cls, D {D4}, "
      f"{DEPTH4} blocks), float64")
patch_tokens = patchify(x, P4).numpy()                      # (1, 49, 3072): the pixels of every patch
a, b = 3 * g4 + 2, 5 * g4 + 4                               # a lens of the glasses and a patch of the jacket
swap = np.arange(g4 * g4)
swap[[a, b]] = swap[[b, a]]
shuffle = rng_for(4).permutation(g4 * g4)
swapped = unpatchify(tv.Tensor(patch_tokens[:, swap]), P4, C, (g4, g4))       # back to (1, 3, 224, 224)
shuffled = unpatchify(tv.Tensor(patch_tokens[:, shuffle]), P4, C, (g4, g4))


def vit(pos_embed: str) -> ViT:
    """The same weights each time (same seed); only the position embedding differs."""
    model = ViT(img_size=IMG, patch_size=P4, in_chans=C, num_classes=10, embed_dim=D4, depth=DEPTH4, num_heads=4,
                pos_embed=pos_embed, seed=int(rng_for(5).integers(2 ** 31)))
    return model.astype(np.float64)


swap_diffs = {}
print("  position   class token after the last block: max |change| (and / max |cls|)   logits: max |change|")
print(f"  table      two patches swapped          all {g4 * g4} shuffled                       swapped   shuffled")
for pos_embed in ("none", "learn", "sincos"):
    model = vit(pos_embed)
    with tv.no_grad():
        ref, sw, sh = (model(image, return_all=True) for image in (x, swapped, shuffled))
    ref_cls = ref.tokens[-1].numpy()[:, 0]                                   # (B, D)
    cls_diff = [float(np.abs(o.tokens[-1].numpy()[:, 0] - ref_cls).max()) for o in (sw, sh)]
    relative = [d / float(np.abs(ref_cls).max()) for d in cls_diff]
    logit_diff = [float(np.abs(o.logits.numpy() - ref.logits.numpy()).max()) for o in (sw, sh)]
    swap_diffs[pos_embed] = cls_diff
    print(f"  {pos_embed:8s}   {cls_diff[0]:.2e} ({relative[0]:.0e})          {cls_diff[1]:.2e} ({relative[1]:.0e})"
          f"                   {logit_diff[0]:.1e}   {logit_diff[1]:.1e}")
    if pos_embed == "none":
        # Equivariance: patch token k of the shuffled image ends where patch shuffle[k] of the original did.
        moved = sh.tokens[-1].numpy()[:, 1:]
        equivariance = float(np.abs(moved - ref.tokens[-1].numpy()[:, 1 + shuffle]).max())
        assert max(cls_diff) < 1e-12 and equivariance < 1e-12, (cls_diff, equivariance)
assert min(swap_diffs["learn"] + swap_diffs["sincos"]) > 1e-6
print(f"  without positions the patch outputs are the original's, reordered by the shuffle (max |difference| "
      f"{equivariance:.1e}),")
print("  and the class token, a weighted sum over all of them, cannot tell the pictures apart (its changes, under")
print("  1e-12, are float64 rounding: summing the same numbers in another order).")
smallest_with_pos = min(swap_diffs["learn"] + swap_diffs["sincos"])
largest_without = max(swap_diffs["none"])
times = (f"{smallest_with_pos / largest_without:.0e} times the largest change without positions"
         if largest_without > 0 else "against exactly 0 without positions")
print(f"  With a position table the class token changes by at least {smallest_with_pos:.1e}, {times}.")
if smallest_with_pos < 0.1:
    print("  That it is still small comes from the untrained network: its table (std 0.02) and its block weights")
    print("  (std 0.02) are tiny, so the position part of each token is small.")


def plot_swap(name: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6))
    images = [(x, "original"), (swapped, f"patches {a} and {b} swapped"), (shuffled, f"all {g4 * g4} patches shuffled")]
    for k, (ax, (image, title)) in enumerate(zip(axes, images)):
        ax.imshow(image.numpy()[0].transpose(1, 2, 0))
        if k:
            d_none, d_pos = swap_diffs["none"][k - 1], swap_diffs["learn"][k - 1]
            title += f"\ncls change: no positions {d_none:.0e}, learned {d_pos:.0e}"
        else:
            title += "\n(reference)"
        ax.set_title(title, fontsize=10)
        for t in range(0, IMG + 1, P4):
            ax.axhline(t - 0.5, color="white", lw=0.4)
            ax.axvline(t - 0.5, color="white", lw=0.4)
        ax.axis("off")
    fig.suptitle("Without position embeddings a ViT's class token is the same for all three pictures")
    save_figure(fig, args.out, name)


plot_swap("01_swap.png")


# %% 5. The 2-D sin-cos table: nearby cells get similar vectors
gh = gw = 14
D5 = 768                                                      # ViT-B's width
print(f"\n== 5. the fixed 2-D sin-cos position table, {gh} x {gw} cells, D = {D5}")
pos = sincos_2d(gh, gw, D5)                                   # (196, D): [sin(y w), cos(y w), sin(x w), cos(x w)]
omega = 1.0 / 10000 ** (np.arange(D5 // 4) / (D5 // 4))
rows, cols = np.divmod(np.arange(gh * gw), gw)
dy = rows[:, None, None] - rows[None, :, None]
dx = cols[:, None, None] - cols[None, :, None]
offset_formula = (np.cos(dy * omega) + np.cos(dx * omega)).sum(-1)           # sum_k cos(w_k dy) + cos(w_k dx)
offset_diff = float(np.abs(pos @ pos.T - offset_formula).max())
print(f"  e_i . e_j against sum_k [cos(w_k dy) + cos(w_k dx)] (depends on the offset only): "
      f"max |difference| {offset_diff:.1e}; every |e_i|^2 = D/2 = {D5 // 2}")
assert offset_diff < 1e-9
similarity = (pos @ pos.T) / (D5 / 2)                         # cosine similarity, since |e_i|^2 = D/2
refs = [(0, 0), (7, 7), (3, 11), (12, 2)]
centre = 7 * gw + 7
print(f"  cosine similarity of cell (7, 7) to (7, 8): {similarity[centre, centre + 1]:.3f}, to (9, 9): "
      f"{similarity[centre, 9 * gw + 9]:.3f}, to (0, 0): {similarity[centre, 0]:.3f}")
long_waves = int((2 * np.pi / omega > 10 * gh).sum())
far_word = "stay similar" if similarity.min() > 0.5 else "can be dissimilar"
print(f"  far cells {far_word} (minimum cosine similarity {similarity.min():.2f}): {long_waves} of the {D5 // 4} "
      f"frequencies have a wavelength 2 pi / w_k of more than 10 grid widths, so across the grid they barely turn")


def plot_similarity(name: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(refs), figsize=(3.3 * len(refs), 3.6))
    for ax, (ry, rx) in zip(axes, refs):
        im = ax.imshow(similarity[ry * gw + rx].reshape(gh, gw), cmap="viridis", vmin=similarity.min(), vmax=1)
        ax.plot(rx, ry, "r+", ms=10, mew=2)
        ax.set_title(f"cell (row {ry}, col {rx})", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="cosine similarity")
    fig.suptitle(f"2-D sin-cos position table, {gh} x {gw} grid, D = {D5}: similarity of every cell to the red cross")
    save_figure(fig, args.out, name)


plot_similarity("01_sincos_similarity.png")


# %% Result
print("result: " + json.dumps({
    "lesson": "01_patches",
    "quick": args.quick,
    "seed": args.seed,
    "tokens_224": {str(P): table[P] for P in (32, 16, 14, 8)},
    "pairs_224": {str(P): table[P] ** 2 for P in (32, 16, 14, 8)},
    "conv_equals_linear_max_diff": float(f"{conv_equals_linear:.3g}"),
    "swap_diff_without_pos": float(f"{swap_diffs['none'][0]:.3g}"),
    "shuffle_diff_without_pos": float(f"{swap_diffs['none'][1]:.3g}"),
    "swap_diff_with_pos": float(f"{swap_diffs['learn'][0]:.3g}"),
    "swap_diff_with_sincos": float(f"{swap_diffs['sincos'][0]:.3g}"),
    "sincos_offset_formula_max_diff": float(f"{offset_diff:.3g}"),
}))
