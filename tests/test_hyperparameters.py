"""Nonsense hyper-parameters fail where they are written, naming the class, the argument, what was seen and expected.

Each table row builds one thing from a valid set of keyword arguments (VALID) with one of them
replaced, and names the error and a regex its message must match:
    TypeError   a wrong kind: a str, None, a float where an int is meant (never truncated), a bool
                where a number is meant
    ValueError  a wrong value: 0 heads, a NaN eps, a negative stride, a warm-up past the end
`test_valid_arguments_build` checks that every VALID set builds, so each failing row fails for the
argument it replaces. The last tests check that the fused AdamW kernel is used only where it
applies: float16 parameters train under any kernel choice, with the NumPy update.
"""
import numpy as np
import pytest

import tinyvision as tv
from tinyvision import kernels, nn
from tinyvision.checks import check_float_dtype, check_int, check_int_pair, check_number, check_probability
from tinyvision.models import (CLIP, PatchEmbed, SmallCNN, TextTransformer, check_patch_grid, interpolation_matrix,
                               resample_pos_embed, sincos_2d, unpatchify)
from tinyvision.models.contrastive import clamp_logit_scale, clip_loss, l2_normalize, siglip_bias_init
from tinyvision.models.retrieval import recall_at_k, retrieval_report, zero_shot_predict
from tinyvision.optim import SGD, Adam, AdamW, WarmupCosine, clip_grad_norm, param_groups_no_decay, warmup_cosine
from tinyvision.text import Tokenizer, eot_index
from tinyvision.training import predict, train_classifier

NAN, INF = float("nan"), float("inf")


def _params():
    return [nn.Parameter(np.ones((2, 2)))]


def _sgd():
    return SGD(_params(), lr=0.1)


def _embeddings():
    return tv.Tensor(np.eye(3, dtype=np.float32))


_TOKENIZER = Tokenizer.train(["a red circle"])
_TEXT = dict(vocab_size=12, context_length=6, width=8, depth=1, heads=2, embed_dim=4, eot_id=2, seed=0)
_VISION = dict(img_size=8, patch_size=4, in_chans=3, embed_dim=8, depth=1, num_heads=2)
_CLIP_TEXT = {k: v for k, v in _TEXT.items() if k not in ("embed_dim", "seed")}
_X, _Y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])

VALID = {
    nn.Linear: dict(in_features=2, out_features=3, seed=0),
    nn.LayerNorm: dict(dim=4),
    nn.Embedding: dict(num=5, dim=3, seed=0),
    nn.Dropout: dict(p=0.1, seed=0),
    nn.GELU: dict(),
    nn.MLP: dict(in_features=4, hidden_features=8, seed=0),
    nn.MultiHeadAttention: dict(dim=8, num_heads=2, seed=0),
    nn.TransformerBlock: dict(dim=8, num_heads=2, seed=0),
    nn.Conv2d: dict(in_channels=3, out_channels=4, kernel_size=3, seed=0),
    nn.MaxPool2d: dict(kernel_size=2),
    nn.AvgPool2d: dict(kernel_size=2),
    nn.Flatten: dict(),
    nn.ConvTranspose2d: dict(in_channels=3, out_channels=4, kernel_size=4, stride=2, padding=1, seed=0),
    nn.Upsample: dict(scale_factor=2, mode="bilinear"),
    nn.BatchNorm2d: dict(num_features=4),
    nn.GroupNorm: dict(num_groups=2, num_channels=4),
    nn.LeakyReLU: dict(negative_slope=0.2),
    nn.init.as_rng: dict(seed=0),
    nn.init.trunc_normal: dict(shape=(2, 3), std=0.02, seed=0),
    nn.init.xavier_uniform: dict(shape=(2, 3), seed=0),
    nn.init.uniform_fan_in: dict(shape=(2, 3), fan_in=2, seed=0),
    nn.init.zeros: dict(shape=(2, 3)),
    PatchEmbed: dict(img_size=32, patch_size=4, in_chans=3, embed_dim=8, seed=0),
    check_patch_grid: dict(height=32, width=32, patch_size=4),
    unpatchify: dict(tokens=tv.Tensor(np.zeros((1, 4, 12))), patch_size=2, channels=3, grid=(2, 2)),
    SmallCNN: dict(img_size=8, seed=0),
    sincos_2d: dict(grid_h=2, grid_w=3, dim=8),
    interpolation_matrix: dict(n_in=3, n_out=5, mode="bilinear"),
    resample_pos_embed: dict(pos_embed=np.zeros((1, 5, 4)), new_size=(3, 3)),
    TextTransformer: _TEXT,
    CLIP: dict(embed_dim=4, vision=_VISION, text=_CLIP_TEXT, seed=0),
    l2_normalize: dict(x=_embeddings()),
    clip_loss: dict(image_emb=_embeddings(), text_emb=_embeddings(), logit_scale=1.0),
    siglip_bias_init: dict(batch_size=64),
    clamp_logit_scale: dict(param=nn.Parameter(np.array(1.0))),
    zero_shot_predict: dict(image_emb=np.eye(2), weights=np.eye(2)),
    recall_at_k: dict(similarity=np.eye(3)),
    retrieval_report: dict(similarity=np.eye(3)),
    eot_index: dict(ids=np.array([[1, 2]])),
    Tokenizer.train: dict(texts=["a red circle"]),
    _TOKENIZER.encode_batch: dict(texts=["a red"], context_length=4),
    SGD: dict(params=_params(), lr=0.1),
    Adam: dict(params=_params()),
    AdamW: dict(params=_params()),
    clip_grad_norm: dict(params=_params(), max_norm=1.0),
    param_groups_no_decay: dict(module=nn.Linear(2, 2, seed=0), weight_decay=0.1),
    warmup_cosine: dict(step=0, total_steps=10, warmup_steps=2, base_lr=1.0),
    WarmupCosine: dict(optimizer=_sgd(), total_steps=10, warmup_steps=2),
    predict: dict(model=nn.Linear(3, 2, seed=0), x=_X),
    train_classifier: dict(model=nn.Linear(3, 2, seed=0), x=_X, y=_Y, epochs=1, batch_size=2),
}

# (what, the arguments replaced, error, regex), grouped by the file the check lives in.
LAYERS = [
    (nn.Linear, dict(in_features=0), ValueError, r"Linear: in_features must be an int >= 1, got 0"),
    (nn.Linear, dict(out_features=-3), ValueError, r"Linear: out_features must be an int >= 1, got -3"),
    (nn.Linear, dict(in_features=2.9), TypeError,
     r"Linear: in_features must be an int >= 1, got 2\.9 \(float\); round"),
    (nn.Linear, dict(in_features=2.0), TypeError, r"Linear: in_features .*got 2\.0 \(float\)"),
    (nn.Linear, dict(in_features=np.float32(2)), TypeError, r"Linear: in_features .*\(float32\)"),
    (nn.Linear, dict(out_features=True), TypeError, r"Linear: out_features .*got True \(bool\)"),
    (nn.Linear, dict(in_features="2"), TypeError, r"Linear: in_features .*got '2' \(str\)"),
    (nn.Linear, dict(out_features=None), TypeError, r"Linear: out_features must be an int >= 1, got None"),
    (nn.Linear, dict(bias="no"), TypeError, r"Linear: bias must be True or False, got 'no'"),
    (nn.Linear, dict(dtype=np.int64), TypeError, r"Linear: dtype must be float16, float32 or float64, got int64"),
    (nn.Linear, dict(dtype=None), TypeError, r"Linear: dtype must be a float dtype .*got None"),
    (nn.LayerNorm, dict(dim=0), ValueError, r"LayerNorm: dim must be an int >= 1, got 0"),
    (nn.LayerNorm, dict(dim=4.0), TypeError, r"LayerNorm: dim must be an int"),
    (nn.LayerNorm, dict(eps=0.0), ValueError, r"LayerNorm: eps must be a finite number > 0\.0, got 0\.0"),
    (nn.LayerNorm, dict(eps=-1e-5), ValueError, r"LayerNorm: eps .*got -1e-05"),
    (nn.LayerNorm, dict(eps=NAN), ValueError, r"LayerNorm: eps .*got nan"),
    (nn.LayerNorm, dict(eps=INF), ValueError, r"LayerNorm: eps .*got inf"),
    (nn.LayerNorm, dict(eps="1e-5"), TypeError, r"LayerNorm: eps must be a finite number > 0\.0, got '1e-5' \(str\)"),
    (nn.LayerNorm, dict(eps=True), TypeError, r"LayerNorm: eps .*got True \(bool\)"),
    (nn.Embedding, dict(num=0), ValueError, r"Embedding: num must be an int >= 1, got 0"),
    (nn.Embedding, dict(dim=0), ValueError, r"Embedding: dim must be an int >= 1, got 0"),
    (nn.Embedding, dict(num=10.0), TypeError, r"Embedding: num .*got 10\.0 \(float\)"),
    (nn.Dropout, dict(p=1.0), ValueError, r"Dropout: p must be a finite number in \[0\.0, 1\.0\), got 1\.0"),
    (nn.Dropout, dict(p=-0.1), ValueError, r"Dropout: p .*got -0\.1"),
    (nn.Dropout, dict(p=NAN), ValueError, r"Dropout: p .*got nan"),
    (nn.Dropout, dict(p="0.1"), TypeError, r"Dropout: p .*got '0\.1' \(str\)"),
    (nn.Dropout, dict(p=None), TypeError, r"Dropout: p .*got None"),
    (nn.GELU, dict(approximate="fast"), ValueError, r"GELU: approximate must be one of \('none', 'tanh'\), got 'fast'"),
    (nn.GELU, dict(approximate=None), TypeError, r"GELU: approximate must be one of .*got None"),
    (nn.MLP, dict(hidden_features=0), ValueError, r"MLP: hidden_features must be an int >= 1, got 0"),
    (nn.MLP, dict(out_features=0), ValueError, r"MLP: out_features must be an int >= 1, got 0"),
    (nn.MLP, dict(in_features=2.5), TypeError, r"MLP: in_features .*got 2\.5 \(float\)"),
    (nn.MLP, dict(act="swish"), ValueError, r"MLP: act must be one of .*'gelu'.*got 'swish'"),
    (nn.MLP, dict(dropout=1.5), ValueError, r"MLP: dropout must be .*\[0\.0, 1\.0\), got 1\.5"),
]
ATTENTION = [
    (nn.MultiHeadAttention, dict(num_heads=0), ValueError, r"MultiHeadAttention: num_heads must be an int >= 1, got 0"),
    (nn.MultiHeadAttention, dict(num_heads=-2), ValueError, r"MultiHeadAttention: num_heads .*got -2"),
    (nn.MultiHeadAttention, dict(num_heads=2.0), TypeError, r"MultiHeadAttention: num_heads .*got 2\.0 \(float\)"),
    (nn.MultiHeadAttention, dict(dim=0), ValueError, r"MultiHeadAttention: dim must be an int >= 1, got 0"),
    (nn.MultiHeadAttention, dict(dim=10, num_heads=3), ValueError,
     r"MultiHeadAttention: dim=10 is not divisible by num_heads=3"),
    (nn.MultiHeadAttention, dict(qkv_bias=1), TypeError, r"MultiHeadAttention: qkv_bias must be True or False, got 1"),
    (nn.MultiHeadAttention, dict(dropout=1.0), ValueError, r"MultiHeadAttention: dropout .*got 1\.0"),
    (nn.TransformerBlock, dict(num_heads=0), ValueError, r"TransformerBlock: num_heads must be an int >= 1, got 0"),
    (nn.TransformerBlock, dict(dim=0), ValueError, r"TransformerBlock: dim must be an int >= 1, got 0"),
    (nn.TransformerBlock, dict(dim=8, num_heads=3), ValueError,
     r"TransformerBlock: dim=8 is not divisible by num_heads=3"),
    (nn.TransformerBlock, dict(mlp_ratio=0.0), ValueError,
     r"TransformerBlock: mlp_ratio must be a finite number > 0\.0"),
    (nn.TransformerBlock, dict(mlp_ratio=NAN), ValueError, r"TransformerBlock: mlp_ratio .*got nan"),
    (nn.TransformerBlock, dict(mlp_ratio=0.1), ValueError,
     r"TransformerBlock: mlp_ratio=0\.1 gives an MLP of .* = 0 hidden"),
    (nn.TransformerBlock, dict(eps=0.0), ValueError, r"TransformerBlock: eps must be a finite number > 0\.0, got 0\.0"),
    (nn.TransformerBlock, dict(dropout=-0.5), ValueError, r"TransformerBlock: dropout .*got -0\.5"),
    (nn.TransformerBlock, dict(qkv_bias="no"), TypeError, r"TransformerBlock: qkv_bias must be True or False"),
]
CONV_AND_INIT = [
    (nn.Conv2d, dict(kernel_size=0), ValueError, r"Conv2d: kernel_size must be an int >= 1 or a pair .*got 0"),
    (nn.Conv2d, dict(stride=0), ValueError, r"Conv2d: stride must be an int >= 1 .*got 0"),
    (nn.Conv2d, dict(stride=(1, 0)), ValueError, r"Conv2d: stride .*got \(1, 0\)"),
    (nn.Conv2d, dict(padding=-1), ValueError, r"Conv2d: padding must be an int >= 0 .*got -1"),
    (nn.Conv2d, dict(kernel_size=2.5), TypeError, r"Conv2d: kernel_size .*got 2\.5 \(float\)"),
    (nn.Conv2d, dict(kernel_size=(3, 3.0)), TypeError, r"Conv2d: kernel_size .*holds 3\.0 \(float\)"),
    (nn.Conv2d, dict(kernel_size=(3,)), ValueError, r"Conv2d: kernel_size .*\(1 values\)"),
    (nn.Conv2d, dict(in_channels=0), ValueError, r"Conv2d: in_channels must be an int >= 1, got 0"),
    (nn.Conv2d, dict(out_channels=4.0), TypeError, r"Conv2d: out_channels .*got 4\.0 \(float\)"),
    (nn.Conv2d, dict(bias=None), TypeError, r"Conv2d: bias must be True or False, got None"),
    (nn.MaxPool2d, dict(kernel_size=0), ValueError, r"MaxPool2d: kernel_size must be an int >= 1 .*got 0"),
    (nn.AvgPool2d, dict(stride=0), ValueError, r"AvgPool2d: stride must be an int >= 1 .*got 0"),
    (nn.AvgPool2d, dict(kernel_size=None), TypeError, r"AvgPool2d: kernel_size .*got None"),
    (nn.Flatten, dict(start_dim=1.5), TypeError, r"Flatten: start_dim must be an int, got 1\.5"),
    (nn.init.as_rng, dict(seed=-1), ValueError, r"seed must be an int >= 0 .*got -1"),
    (nn.init.as_rng, dict(seed=1.5), TypeError, r"seed must be an int or numpy\.random\.Generator, got 1\.5"),
    (nn.init.trunc_normal, dict(std=0.0), ValueError, r"trunc_normal: std must be a finite number > 0\.0, got 0\.0"),
    (nn.init.trunc_normal, dict(std=-0.02), ValueError, r"trunc_normal: std .*got -0\.02"),
    (nn.init.trunc_normal, dict(a=NAN), ValueError, r"trunc_normal: a must be a finite number, got nan"),
    (nn.init.trunc_normal, dict(shape=(2, -1)), ValueError, r"trunc_normal: shape\[1\] must be an int >= 0, got -1"),
    (nn.init.trunc_normal, dict(shape=(2.0, 3)), TypeError, r"trunc_normal: shape\[0\] .*got 2\.0 \(float\)"),
    (nn.init.xavier_uniform, dict(shape=(3,)), ValueError, r"xavier_uniform: needs a weight of at least 2 axes"),
    (nn.init.xavier_uniform, dict(gain=0.0), ValueError, r"xavier_uniform: gain must be a finite number > 0\.0"),
    (nn.init.uniform_fan_in, dict(fan_in=0), ValueError, r"uniform_fan_in: fan_in must be an int >= 1, got 0"),
    (nn.init.zeros, dict(dtype=np.int32), TypeError, r"zeros: dtype must be float16, float32 or float64, got int32"),
]
MODELS = [
    (PatchEmbed, dict(patch_size=5), ValueError, r"PatchEmbed: patch size 5 does not divide the image height 32"),
    (PatchEmbed, dict(patch_size=0), ValueError, r"PatchEmbed: patch_size must be an int >= 1, got 0"),
    (PatchEmbed, dict(patch_size=4.0), TypeError, r"PatchEmbed: patch_size .*got 4\.0 \(float\)"),
    (PatchEmbed, dict(embed_dim=0), ValueError, r"PatchEmbed: embed_dim must be an int >= 1, got 0"),
    (PatchEmbed, dict(in_chans=0), ValueError, r"PatchEmbed: in_chans must be an int >= 1, got 0"),
    (PatchEmbed, dict(img_size=0), ValueError, r"PatchEmbed: img_size must be an int >= 1 or a pair .*got 0"),
    (PatchEmbed, dict(img_size=32.0), TypeError, r"PatchEmbed: img_size .*got 32\.0 \(float\)"),
    (check_patch_grid, dict(patch_size=0), ValueError, r"check_patch_grid: patch_size must be an int >= 1, got 0"),
    (check_patch_grid, dict(height=0), ValueError, r"check_patch_grid: height must be an int >= 1, got 0"),
    (unpatchify, dict(grid=2), TypeError, r"unpatchify: grid must be a pair \(gh, gw\) of ints, got 2"),
    (unpatchify, dict(patch_size=0), ValueError, r"unpatchify: patch_size must be an int >= 1, got 0"),
    (SmallCNN, dict(img_size=10), ValueError, r"SmallCNN: img_size must be a multiple of 4"),
    (SmallCNN, dict(img_size=0), ValueError, r"SmallCNN: img_size must be an int >= 4, got 0"),
    (SmallCNN, dict(width=0), ValueError, r"SmallCNN: width must be an int >= 1, got 0"),
    (SmallCNN, dict(num_classes=0), ValueError, r"SmallCNN: num_classes must be an int >= 1, got 0"),
    (SmallCNN, dict(in_chans=1.0), TypeError, r"SmallCNN: in_chans .*got 1\.0 \(float\)"),
    (sincos_2d, dict(dim=6), ValueError, r"sincos_2d: dim must be a multiple of 4 .*got 6"),
    (sincos_2d, dict(dim=0), ValueError, r"sincos_2d: dim must be an int >= 4, got 0"),
    (sincos_2d, dict(temperature=0.0), ValueError, r"sincos_2d: temperature must be a finite number > 0\.0"),
    (sincos_2d, dict(temperature=NAN), ValueError, r"sincos_2d: temperature .*got nan"),
    (sincos_2d, dict(grid_w=2.0), TypeError, r"sincos_2d: grid_w .*got 2\.0 \(float\)"),
    (interpolation_matrix, dict(n_in=0), ValueError, r"interpolation_matrix: n_in must be an int >= 1, got 0"),
    (nn.ConvTranspose2d, dict(output_padding=2), ValueError,
     r"ConvTranspose2d: output_padding \(2, 2\) must be smaller than the stride \(2, 2\)"),
    (nn.ConvTranspose2d, dict(in_channels=0), ValueError, r"ConvTranspose2d: in_channels must be an int >= 1, got 0"),
    (nn.Upsample, dict(mode="area"), ValueError, r'Upsample: mode must be "nearest" or "bilinear", got \'area\''),
    (nn.Upsample, dict(scale_factor=0), ValueError, r"Upsample: scale_factor"),
    (nn.BatchNorm2d, dict(momentum=1.5), ValueError, r"BatchNorm2d: momentum must be a finite number in \[0\.0, 1\.0\]"),
    (nn.BatchNorm2d, dict(eps=0.0), ValueError, r"BatchNorm2d: eps must be a finite number > 0\.0, got 0\.0"),
    (nn.GroupNorm, dict(num_groups=3), ValueError, r"GroupNorm: num_groups=3 does not divide num_channels=4"),
    (nn.LeakyReLU, dict(negative_slope="0.2"), TypeError, r"LeakyReLU: negative_slope must be a finite number"),
    (interpolation_matrix, dict(mode="trilinear"), ValueError,
     r"interpolation_matrix: mode must be one of \('nearest', 'bilinear', 'bicubic'\), got 'trilinear'"),
    (resample_pos_embed, dict(num_prefix_tokens=-1), ValueError,
     r"resample_pos_embed: num_prefix_tokens must be an int >= 0, got -1"),
    (resample_pos_embed, dict(num_prefix_tokens=6), ValueError,
     r"resample_pos_embed: num_prefix_tokens=6 is more than the 5 tokens"),
    (resample_pos_embed, dict(interpolation="nearest"), ValueError,
     r"resample_pos_embed: interpolation must be one of"),
    (resample_pos_embed, dict(new_size=3), TypeError,
     r"resample_pos_embed: new_size must be a pair \(h, w\) .*got the int 3"),
    (resample_pos_embed, dict(new_size=(0, 3)), ValueError, r"resample_pos_embed: new_size .*got \(0, 3\)"),
    (TextTransformer, dict(vocab_size=0), ValueError, r"TextTransformer: vocab_size must be an int >= 1, got 0"),
    (TextTransformer, dict(eot_id=12), ValueError, r"TextTransformer: eot_id must be .* \[0, vocab_size=12\), got 12"),
    (TextTransformer, dict(eot_id=-1), ValueError, r"TextTransformer: eot_id .*got -1"),
    (TextTransformer, dict(eot_id=2.0), TypeError, r"TextTransformer: eot_id must be an int, got 2\.0 \(float\)"),
    (TextTransformer, dict(heads=0), ValueError, r"TextTransformer: heads must be an int >= 1, got 0"),
    (TextTransformer, dict(width=10, heads=3), ValueError, r"TextTransformer: width=10 is not divisible by heads=3"),
    (TextTransformer, dict(depth=-1), ValueError, r"TextTransformer: depth must be an int >= 0, got -1"),
    (TextTransformer, dict(context_length=0), ValueError,
     r"TextTransformer: context_length must be an int >= 1, got 0"),
    (TextTransformer, dict(embed_dim=0), ValueError, r"TextTransformer: embed_dim must be an int >= 1, got 0"),
    (TextTransformer, dict(eps=0.0), ValueError, r"TextTransformer: eps must be a finite number > 0\.0"),
    (TextTransformer, dict(mlp_ratio=-1.0), ValueError, r"TextTransformer: mlp_ratio .*got -1\.0"),
    (CLIP, dict(embed_dim=0), ValueError, r"CLIP: embed_dim must be an int >= 1, got 0"),
    (CLIP, dict(text={**_CLIP_TEXT, "vocab_size": 0}), ValueError, r"TextTransformer: vocab_size must be an int >= 1"),
    (CLIP, dict(text={**_CLIP_TEXT, "eot_id": 40}), ValueError, r"TextTransformer: eot_id .*vocab_size=12\), got 40"),
    (CLIP, dict(text={**_CLIP_TEXT, "embed_dim": 4}), ValueError, r"CLIP: text must not set \['embed_dim'\]"),
    (CLIP, dict(vision=[("img_size", 8)]), TypeError, r"CLIP: vision must be a dict of keyword arguments, got list"),
    (CLIP, dict(init_logit_scale=NAN), ValueError, r"CLIP: init_logit_scale must be a finite number, got nan"),
    (CLIP, dict(init_logit_bias=INF), ValueError, r"CLIP: init_logit_bias must be a finite number, got inf"),
    (l2_normalize, dict(eps=0.0), ValueError, r"l2_normalize: eps must be a finite number > 0\.0, got 0\.0"),
    (l2_normalize, dict(axis=1.0), TypeError, r"l2_normalize: axis must be an int, got 1\.0"),
    (clip_loss, dict(logit_scale=NAN), ValueError, r"clip_loss: logit_scale must be a finite number, got nan"),
    (clip_loss, dict(logit_scale=True), TypeError, r"clip_loss: logit_scale .*got True \(bool\)"),
    (clip_loss, dict(normalize="yes"), TypeError, r"clip_loss: normalize must be True or False, got 'yes'"),
    (siglip_bias_init, dict(batch_size=1), ValueError, r"siglip_bias_init: batch_size must be an int >= 2, got 1"),
    (siglip_bias_init, dict(batch_size=64.0), TypeError, r"siglip_bias_init: batch_size .*got 64\.0 \(float\)"),
    (clamp_logit_scale, dict(max_value=NAN), ValueError,
     r"clamp_logit_scale: max_value must be a finite number, got nan"),
    (zero_shot_predict, dict(scale=NAN), ValueError,
     r"zero_shot_predict: scale must be a finite number > 0\.0, got nan"),
    (zero_shot_predict, dict(scale=-100.0), ValueError, r"zero_shot_predict: scale .*got -100\.0"),
    (zero_shot_predict, dict(normalize=1), TypeError, r"zero_shot_predict: normalize must be True or False, got 1"),
    (recall_at_k, dict(ks=(1, 0)), ValueError, r"recall_at_k: ks\[1\] must be an int >= 1, got 0"),
    (recall_at_k, dict(ks=(1.5,)), TypeError, r"recall_at_k: ks\[0\] .*got 1\.5 \(float\)"),
    (recall_at_k, dict(ks=5), TypeError, r"recall_at_k: ks must be a sequence of ints .*pass \(5,\)"),
    (retrieval_report, dict(ks=(0,)), ValueError, r"retrieval_report: ks\[0\] must be an int >= 1, got 0"),
    (eot_index, dict(eot_id=2.0), TypeError, r"eot_index: eot_id must be an int, got 2\.0 \(float\)"),
    (Tokenizer.train, dict(min_count=1.5), TypeError, r"Tokenizer\.train: min_count must be an int >= 1, got 1\.5"),
    (Tokenizer, dict(vocab="<pad><sot>"), TypeError, r"Tokenizer: vocab must be a list of str, got str"),
    (_TOKENIZER.encode_batch, dict(on_overflow=None), TypeError,
     r"Tokenizer\.encode_batch: on_overflow must be one of"),
]
OPTIM_AND_TRAINING = [
    (Adam, dict(eps=0.0), ValueError, r"Adam: eps must be a finite number > 0\.0, got 0\.0"),
    (Adam, dict(eps=NAN), ValueError, r"Adam: eps .*got nan"),
    (Adam, dict(lr=-1e-3), ValueError, r"Adam: lr must be a finite number >= 0\.0, got -0\.001"),
    (Adam, dict(lr="1e-3"), TypeError, r"Adam: lr must be a finite number >= 0\.0, got '1e-3' \(str\)"),
    (Adam, dict(lr=None), TypeError, r"Adam: lr .*got None"),
    (AdamW, dict(lr=True), TypeError, r"AdamW: lr .*got True \(bool\)"),
    (Adam, dict(betas=(1.0, 0.999)), ValueError,
     r"Adam: betas\[0\] must be a finite number in \[0\.0, 1\.0\), got 1\.0"),
    (AdamW, dict(betas=(0.9, 1.0)), ValueError, r"AdamW: betas\[1\] .*got 1\.0"),
    (AdamW, dict(betas=(-0.1, 0.9)), ValueError, r"AdamW: betas\[0\] .*got -0\.1"),
    (AdamW, dict(betas=0.9), TypeError, r"AdamW: betas must be a pair \(beta1, beta2\), got 0\.9 \(float\)"),
    (AdamW, dict(betas=(0.9,)), ValueError, r"AdamW: betas must be a pair"),
    (AdamW, dict(betas=("0.9", 0.999)), TypeError, r"AdamW: betas\[0\] .*got '0\.9' \(str\)"),
    (AdamW, dict(weight_decay=-0.01), ValueError, r"AdamW: weight_decay must be a finite number >= 0\.0, got -0\.01"),
    (AdamW, dict(params=[{"params": _params(), "lr": "x"}]), TypeError,
     r"AdamW param_groups\[0\]: lr .*got 'x' \(str\)"),
    (SGD, dict(lr=NAN), ValueError, r"SGD: lr .*got nan"),
    (SGD, dict(momentum=1.0), ValueError, r"SGD: momentum must be a finite number in \[0\.0, 1\.0\), got 1\.0"),
    (SGD, dict(momentum=0.9, nesterov=1), TypeError, r"SGD: nesterov must be True or False, got 1"),
    (clip_grad_norm, dict(max_norm=0.0), ValueError,
     r"clip_grad_norm: max_norm must be a finite number > 0\.0, got 0\.0"),
    (clip_grad_norm, dict(max_norm="1"), TypeError, r"clip_grad_norm: max_norm .*got '1' \(str\)"),
    (param_groups_no_decay, dict(skip="bias"), TypeError, r"param_groups_no_decay: skip must be a tuple .*\('bias',\)"),
    (param_groups_no_decay, dict(module=[1]), TypeError, r"param_groups_no_decay: module must be a Module, got list"),
    (warmup_cosine, dict(warmup_steps=11), ValueError,
     r"warmup_cosine: warmup_steps \(11\) must be <= total_steps \(10\)"),
    (warmup_cosine, dict(total_steps=2.5), TypeError, r"warmup_cosine: total_steps must be an int >= 1, got 2\.5"),
    (warmup_cosine, dict(step=True), TypeError, r"warmup_cosine: step .*got True \(bool\)"),
    (warmup_cosine, dict(base_lr=NAN), ValueError, r"warmup_cosine: base_lr must be a finite number >= 0\.0, got nan"),
    (WarmupCosine, dict(warmup_steps=11), ValueError,
     r"WarmupCosine: warmup_steps \(11\) must be <= total_steps \(10\)"),
    (WarmupCosine, dict(total_steps=2.5), TypeError, r"WarmupCosine: total_steps must be an int >= 1, got 2\.5"),
    (WarmupCosine, dict(optimizer=[]), TypeError, r"WarmupCosine: optimizer must be an optimizer with param_groups"),
    (predict, dict(batch_size=0), ValueError, r"predict: batch_size must be an int >= 1, got 0"),
    (train_classifier, dict(epochs=0), ValueError, r"train_classifier: epochs must be an int >= 1, got 0"),
    (train_classifier, dict(batch_size=2.5), TypeError, r"train_classifier: batch_size .*got 2\.5 \(float\)"),
    (train_classifier, dict(lr=-1.0), ValueError, r"train_classifier: lr must be a finite number >= 0\.0"),
    (train_classifier, dict(warmup_fraction=1.5), ValueError,
     r"train_classifier: warmup_fraction must be a finite number in \[0\.0, 1\.0\], got 1\.5"),
    (train_classifier, dict(label_smoothing=1.0), ValueError, r"train_classifier: label_smoothing .*\[0\.0, 1\.0\)"),
    (train_classifier, dict(max_grad_norm=0.0), ValueError,
     r"train_classifier: max_grad_norm must be a finite number > 0"),
    (train_classifier, dict(augment="flip"), TypeError,
     r"train_classifier: augment must be None or a function, got str"),
    (train_classifier, dict(x_val=_X), ValueError,
     r"train_classifier: pass x_val and y_val together \(got only x_val\)"),
    (train_classifier, dict(val_every=-1), ValueError, r"train_classifier: val_every must be an int >= 0, got -1"),
]
ALL = LAYERS + ATTENTION + CONV_AND_INIT + MODELS + OPTIM_AND_TRAINING


def _name(what) -> str:
    return getattr(what, "__qualname__", getattr(what, "__name__", repr(what)))


def _build(what, changes):
    return what(**{**VALID.get(what, {}), **changes})


@pytest.mark.parametrize("what", list(VALID), ids=_name)
def test_valid_arguments_build(what):
    _build(what, {})


@pytest.mark.parametrize("what, changes, error, message", ALL,
                         ids=[f"{_name(w)}-{'-'.join(f'{k}={v!r}' for k, v in c.items())}"[:80] for w, c, _, _ in ALL])
def test_bad_hyperparameter_raises_naming_the_argument(what, changes, error, message):
    with pytest.raises(error, match=message) as caught:
        _build(what, changes)
    assert type(caught.value) is error, f"expected exactly {error.__name__}, got {type(caught.value).__name__}"


def test_numpy_integers_count_as_ints_and_numpy_floats_as_numbers():
    layer = nn.Linear(np.int64(3), np.int32(2), seed=np.int64(0))
    assert layer.weight.shape == (3, 2) and type(layer.in_features) is int
    block = nn.TransformerBlock(np.int64(8), np.int64(2), mlp_ratio=np.float32(2.0), eps=np.float64(1e-6), seed=0)
    assert block.mlp.fc1.out_features == 16
    opt = AdamW(_params(), lr=np.float32(0.5), betas=np.array([0.9, 0.99]), eps=1)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["betas"] == (0.9, 0.99)
    assert opt.param_groups[0]["eps"] == 1.0 and type(opt.param_groups[0]["eps"]) is float


def _check_id(value):
    return value.__name__ if callable(value) else repr(value)


@pytest.mark.parametrize("check, args", [
    (check_number, (1.0, 0.0, 1.0)),           # closed ends are inclusive
    (check_number, (0.0, 0.0, None)),
    (check_probability, (0.0,)),
    (check_int, (np.int8(3), 0, 5)),
    (check_int_pair, ([2, 3], 1)),
    (check_float_dtype, ("float32",)),
], ids=_check_id)
def test_checks_accept_the_edges(check, args):
    check("f", "n", *args)


@pytest.mark.parametrize("check, args, error, message", [
    (check_int, (1.0,), TypeError, r"f: n must be an int, got 1\.0 \(float\); round it first, e\.g\. int\(1\.0\)"),
    (check_int, (np.bool_(True),), TypeError, r"f: n must be an int, got .*True.* \(bool"),
    (check_int, (5, 0, 5), ValueError, r"f: n must be an int in \[0, 5\), got 5"),
    (check_number, (NAN,), ValueError, r"f: n must be a finite number, got nan"),
    (check_probability, (1.0,), ValueError, r"f: n must be a finite number in \[0\.0, 1\.0\), got 1\.0"),
    (check_int_pair, ("ab", 1), TypeError, r"f: n must be an int >= 1 or a pair \(h, w\) of them, got 'ab'"),
    (check_float_dtype, ("complex64",), TypeError, r"f: n must be float16, float32 or float64, got complex64"),
], ids=_check_id)
def test_checks_refuse_the_rest(check, args, error, message):
    with pytest.raises(error, match=message):
        check("f", "n", *args)


# --- the fused AdamW kernel is used only where it applies --------------------------------------
def _needs_numba():
    why = kernels.why_unavailable("numba")
    if why is not None:
        pytest.skip(f"the Numba kernels do not load here: {why}")


def _adamw_steps(choice, dtype, steps=4):
    """Final weights and buffers after `steps` AdamW updates under kernels.use(choice).

    The gradients stay in 0.5 <= |g| <= 2: in float16 a |g| below ~5e-3 makes (1 - beta2) g^2
    round to 0, and eps = 1e-8 is 0 there too, so the NumPy step would be m / 0 = inf (see Adam's
    docstring); that is float16's range, not the dispatch under test.
    """
    rng = np.random.default_rng(0)
    p = nn.Parameter(rng.standard_normal((5, 7)).astype(dtype))
    opt = AdamW([p], lr=0.01, weight_decay=0.1)
    grads = [(rng.uniform(0.5, 2.0, (5, 7)) * rng.choice([-1, 1], (5, 7))).astype(dtype) for _ in range(steps)]
    with kernels.use(choice):
        for g in grads:
            p.grad = g.copy()
            opt.step()
    state = opt.state[id(p)]
    return p.data, state["exp_avg"], state["exp_avg_sq"], grads


@pytest.mark.parametrize("choice", ["numba", "auto"])
def test_float16_adamw_steps_under_the_numba_switch_equal_the_numpy_steps(choice):
    _needs_numba()
    p, m, v, grads = _adamw_steps(choice, np.float16)
    p_ref, m_ref, v_ref, _ = _adamw_steps("reference", np.float16)
    assert p.dtype == np.float16 and m.dtype == np.float32 and v.dtype == np.float32   # moments in float32
    np.testing.assert_array_equal(p, p_ref)
    np.testing.assert_array_equal(m, m_ref)
    np.testing.assert_array_equal(v, v_ref)
    # and the NumPy float16 update is AdamW: close to the float64 formula, to float16 rounding
    start = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float16).astype(np.float64)
    q, m64, v64 = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        q = q - 0.01 * 0.1 * q
        m64, v64 = 0.9 * m64 + 0.1 * g, 0.999 * v64 + 0.001 * g * g
        q = q - 0.01 * (m64 / (1 - 0.9 ** t)) / (np.sqrt(v64 / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(p.astype(np.float64), q, atol=8e-3)
    assert np.abs(p.astype(np.float64) - start).max() > 0.02   # it moved: four steps of about lr each


def test_fused_kernel_runs_for_float32_and_float64_only(monkeypatch):
    _needs_numba()
    fused = kernels.kernel("adamw", "numba")
    seen, original = [], fused.update

    def counted(param, *args, **kwargs):
        seen.append(param.dtype)
        return original(param, *args, **kwargs)

    monkeypatch.setattr(fused, "update", counted)
    dtypes = (np.float16, np.float32, np.float64)
    params = [nn.Parameter(np.ones(3, dtype)) for dtype in dtypes]
    opt = AdamW(params, lr=0.1)
    for p in params:
        p.grad = np.ones(3, p.dtype)
    with kernels.use("numba"):
        opt.step()
    assert seen == [np.float32, np.float64]
    assert all(p.dtype == dtype and np.all(p.data < 1) for p, dtype in zip(params, dtypes))


def test_float16_sgd_and_adam_train_under_every_kernel_choice():
    for choice in ("reference", "numba", "auto"):
        if kernels.why_unavailable(choice) is not None:
            continue
        for make in (lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: Adam(ps, lr=0.1, weight_decay=0.1)):
            p = nn.Parameter(np.full(4, 2.0, np.float16))
            opt = make([p])
            with kernels.use(choice):
                for _ in range(3):
                    p.grad = np.ones(4, np.float16)
                    opt.step()
            assert p.dtype == np.float16 and np.all(p.data < 2.0) and np.all(np.isfinite(p.data)), (choice, make)
