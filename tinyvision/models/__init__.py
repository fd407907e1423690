"""Models built from tinyvision.nn: the Vision Transformer and its parts, and a small CNN baseline."""
from .cnn import SmallCNN
from .patches import PatchEmbed, check_patch_grid, patchify, unpatchify
from .pos_embed import interpolation_matrix, resample_grid, resample_pos_embed, sincos_2d
from .vit import ViT, ViTOutput

__all__ = ["PatchEmbed", "SmallCNN", "ViT", "ViTOutput", "check_patch_grid", "interpolation_matrix", "patchify",
           "resample_grid", "resample_pos_embed", "sincos_2d", "unpatchify"]
