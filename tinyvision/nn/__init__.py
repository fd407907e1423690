"""Layers and models as Modules: parameters, state dicts, train / eval. See module.py first."""
from . import init
from .attention import CrossAttention, KVCache, MultiHeadAttention, TransformerBlock
from .conv import AvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d, Flatten, GroupNorm, MaxPool2d, Upsample
from .layers import GELU, MLP, Dropout, Embedding, Identity, LayerNorm, LeakyReLU, Linear, ReLU, Sequential, SiLU, Tanh
from .module import Buffer, Module, ModuleList, Parameter

__all__ = ["AvgPool2d", "BatchNorm2d", "Buffer", "Conv2d", "ConvTranspose2d", "CrossAttention", "Dropout", "Embedding",
           "Flatten", "GELU", "GroupNorm", "Identity", "KVCache", "LayerNorm", "LeakyReLU", "Linear", "MLP", "MaxPool2d", "Module", "ModuleList",
           "MultiHeadAttention", "Parameter", "ReLU", "Sequential", "SiLU", "Tanh", "TransformerBlock", "Upsample",
           "init"]
