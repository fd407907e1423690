"""Layers and models as Modules: parameters, state dicts, train / eval. See module.py first."""
from . import init
from .attention import MultiHeadAttention, TransformerBlock
from .conv import AvgPool2d, Conv2d, Flatten, MaxPool2d
from .layers import GELU, MLP, Dropout, Embedding, Identity, LayerNorm, Linear, ReLU, Sequential, Tanh
from .module import Module, ModuleList, Parameter

__all__ = ["AvgPool2d", "Conv2d", "Dropout", "Embedding", "Flatten", "GELU", "Identity", "LayerNorm", "Linear", "MLP",
           "MaxPool2d", "Module", "ModuleList", "MultiHeadAttention", "Parameter", "ReLU", "Sequential", "Tanh",
           "TransformerBlock", "init"]
