"""Layers and models as Modules: parameters, state dicts, train / eval. See module.py first."""
from . import init
from .attention import MultiHeadAttention, TransformerBlock
from .layers import GELU, MLP, Dropout, Embedding, Identity, LayerNorm, Linear, ReLU, Sequential, Tanh
from .module import Module, ModuleList, Parameter

__all__ = ["Dropout", "Embedding", "GELU", "Identity", "LayerNorm", "Linear", "MLP", "Module", "ModuleList",
           "MultiHeadAttention", "Parameter", "ReLU", "Sequential", "Tanh", "TransformerBlock", "init"]
