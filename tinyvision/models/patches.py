"""Images as sentences: cutting (B, C, H, W) into N = (H/P)(W/P) patch tokens and embedding them.

ViT (Dosovitskiy et al. 2021, eq. 1) flattens each P x P patch into a vector of C*P*P numbers and
maps it with one shared matrix E to width D:  z_i = x_i E + b.  We flatten a patch in (C, P, P)
order, channel-major, because that is the order of a Conv2d weight (D, C, P, P): a convolution
whose kernel and stride both equal P reads exactly one patch per output position, so

    conv2d(x, W, b, stride=P)  ==  patchify(x, P) @ W.reshape(D, C*P*P).T + b

The two are the same computation written two ways; PatchEmbed keeps the convolution (timm's
`patch_embed.proj`), and `forward_linear` is the reshape-then-matmul form the paper describes.
tests/test_vit.py proves them equal.

Shapes: B batch, C channels, H/W image size, P patch size, gh = H/P, gw = W/P, N = gh*gw, D width.
"""
from __future__ import annotations

from .. import ops as F
from ..checks import check_int, check_int_pair, is_int
from ..nn import Conv2d, Module
from ..nn.init import as_rng
from ..tensor import Tensor

__all__ = ["PatchEmbed", "check_patch_grid", "patchify", "unpatchify"]


def check_patch_grid(height: int, width: int, patch_size: int, where: str = "check_patch_grid") -> tuple:
    """(gh, gw) for an image of H x W cut into P x P patches, or a ValueError with the numbers.

    H, W and P are ints >= 1 (TypeError otherwise); `where` names the caller in the messages.
    """
    patch_size = check_int(where, "patch_size", patch_size, low=1)
    height, width = check_int(where, "height", height, low=1), check_int(where, "width", width, low=1)
    for name, n in (("height", height), ("width", width)):
        if n % patch_size:
            raise ValueError(f"{where}: patch size {patch_size} does not divide the image {name} {n} "
                             f"({n} % {patch_size} = {n % patch_size}); crop or pad the image to a multiple of "
                             f"{patch_size}")
    return height // patch_size, width // patch_size


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C*P*P), patches in raster order (row by row), each flattened (C, P, P).

    Two reshapes and one permutation, so gradients flow through it like any other op:
        (B, C, gh, P, gw, P) -> permute (0, 2, 4, 1, 3, 5) -> (B, gh, gw, C, P, P) -> (B, N, C*P*P)
    """
    if x.ndim != 4:
        raise ValueError(f"patchify: x must be (B, C, H, W), got shape {x.shape}")
    b, c, h, w = x.shape
    p = patch_size
    gh, gw = check_patch_grid(h, w, p, "patchify")
    x = F.reshape(x, (b, c, gh, p, gw, p))
    x = F.permute(x, (0, 2, 4, 1, 3, 5))
    return F.reshape(x, (b, gh * gw, c * p * p))


def unpatchify(tokens: Tensor, patch_size: int, channels: int, grid: tuple) -> Tensor:
    """The inverse of patchify: (B, N, C*P*P) -> (B, C, gh*P, gw*P); grid = (gh, gw)."""
    patch_size = check_int("unpatchify", "patch_size", patch_size, low=1)
    channels = check_int("unpatchify", "channels", channels, low=1)
    if is_int(grid):   # a pair is required: an int would be a square grid only by guess
        raise TypeError(f"unpatchify: grid must be a pair (gh, gw) of ints, got {grid!r}")
    gh, gw = check_int_pair("unpatchify", "grid", grid, 1)
    p, c = patch_size, channels
    if tokens.ndim != 3 or tokens.shape[1] != gh * gw or tokens.shape[2] != c * p * p:
        raise ValueError(f"unpatchify: tokens must be (B, {gh * gw}, {c * p * p}) for a {gh}x{gw} grid of "
                         f"{c}x{p}x{p} patches, got {tokens.shape}")
    b = tokens.shape[0]
    x = F.reshape(tokens, (b, gh, gw, c, p, p))
    x = F.permute(x, (0, 3, 1, 4, 2, 5))
    return F.reshape(x, (b, c, gh * p, gw * p))


class PatchEmbed(Module):
    """(B, C, H, W) -> (B, N, D): a Conv2d with kernel = stride = P, flattened to tokens (timm names).

    `proj.weight` is (D, C, P, P) and `proj.bias` (D,), PyTorch's layout, so timm checkpoints load as is.
    """

    def __init__(self, img_size: int | tuple, patch_size: int, in_chans: int, embed_dim: int, *, seed):
        self.img_size = check_int_pair("PatchEmbed", "img_size", img_size, 1)
        patch_size = check_int("PatchEmbed", "patch_size", patch_size, low=1)
        in_chans = check_int("PatchEmbed", "in_chans", in_chans, low=1)
        embed_dim = check_int("PatchEmbed", "embed_dim", embed_dim, low=1)
        self.patch_size, self.in_chans, self.embed_dim = patch_size, in_chans, embed_dim
        self.grid_size = check_patch_grid(*self.img_size, patch_size, "PatchEmbed")
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, seed=as_rng(seed))

    def _check(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"PatchEmbed: expected images (B, {self.in_chans}, H, W), got shape {x.shape}")
        return check_patch_grid(x.shape[2], x.shape[3], self.patch_size, "PatchEmbed")

    def forward(self, x: Tensor) -> Tensor:
        gh, gw = self._check(x)
        y = self.proj(x)                                            # (B, D, gh, gw)
        y = F.reshape(y, (x.shape[0], self.embed_dim, gh * gw))     # (B, D, N)
        return F.permute(y, (0, 2, 1))                              # (B, N, D)

    def forward_linear(self, x: Tensor) -> Tensor:
        """The paper's form, same weights: flatten patches, then one matmul."""
        self._check(x)
        w = F.reshape(self.proj.weight, (self.embed_dim, -1))       # (D, C*P*P)
        y = F.matmul(patchify(x, self.patch_size), F.transpose(w))
        return y + self.proj.bias if self.proj.bias is not None else y

    def extra_repr(self):
        return f"img_size={self.img_size}, patch_size={self.patch_size}, grid={self.grid_size}"
