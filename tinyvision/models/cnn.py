"""A small convolutional network: the baseline the Vision Transformer is measured against.

Convolutions build in two assumptions, locality (a 3x3 kernel sees only neighbours) and
translation equivariance (the same kernel slides everywhere). A ViT assumes neither and must
learn them from data; that is why, at small data, a CNN of similar size usually wins and the
ViT catches up only as the data grows (Dosovitskiy et al. 2021, sec. 4.2 and Fig. 3).

    x (B, C, H, W)
    -> [Conv3x3(pad 1) -> ReLU -> MaxPool2] x 2      (B, 2w, H/4, W/4)
    -> Flatten -> Linear                             (B, classes)
"""
from __future__ import annotations

from ..checks import check_int
from ..nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from ..nn.init import as_rng

__all__ = ["SmallCNN"]


class SmallCNN(Sequential):
    def __init__(self, img_size: int = 8, in_chans: int = 1, num_classes: int = 10, width: int = 16, *, seed):
        img_size = check_int("SmallCNN", "img_size", img_size, low=4)
        if img_size % 4:
            raise ValueError(f"SmallCNN: img_size must be a multiple of 4 (two 2x2 poolings), got {img_size}")
        in_chans = check_int("SmallCNN", "in_chans", in_chans, low=1)
        num_classes = check_int("SmallCNN", "num_classes", num_classes, low=1)
        width = check_int("SmallCNN", "width", width, low=1)
        rng = as_rng(seed)
        side = img_size // 4
        super().__init__(
            Conv2d(in_chans, width, 3, padding=1, seed=rng), ReLU(), MaxPool2d(2),
            Conv2d(width, 2 * width, 3, padding=1, seed=rng), ReLU(), MaxPool2d(2),
            Flatten(), Linear(2 * width * side * side, num_classes, seed=rng),
        )
