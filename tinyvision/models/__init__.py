"""Models built from tinyvision.nn: the Vision Transformer and its parts, a small CNN baseline, and CLIP."""
from . import contrastive, retrieval
from .clip import CLIP, TextTransformer
from .cnn import SmallCNN
from .patches import PatchEmbed, check_patch_grid, patchify, unpatchify
from .pos_embed import interpolation_matrix, resample_grid, resample_pos_embed, sincos_2d
from .vit import ViT, ViTOutput

__all__ = ["CLIP", "PatchEmbed", "SmallCNN", "TextTransformer", "ViT", "ViTOutput", "check_patch_grid", "contrastive", "retrieval", "interpolation_matrix", "patchify",
           "resample_grid", "resample_pos_embed", "sincos_2d", "unpatchify"]
