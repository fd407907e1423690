"""Contrastive image-text learning: one embedding space for two towers, learned from matching pairs.

An image encoder and a text encoder each map their input to a vector of width E. Training sees a
batch of B true pairs (image i, caption i) and nothing else: pair i is the positive for row i, the
other B - 1 captions in the batch are its negatives. The losses below push I_i . T_i up and
I_i . T_j (j != i) down, so that afterwards cosine similarity means "these belong together".

I, T: (B, E) L2-normalised embeddings (rows of unit length), so I T^T holds cosine similarities.
s = exp(logit_scale): a learned inverse temperature; logit_scale is the raw parameter.

CLIP (Radford et al. 2021, Figure 3 pseudo-code; open_clip ClipLoss):
    logits = s I T^T  (+ b)                       (B, B); row i: image i against every caption
    loss   = ( CE(logits, arange B) + CE(logits^T, arange B) ) / 2
  Each row is a B-way softmax classification "which caption is mine?"; the transpose asks each
  caption "which image is mine?". A scalar bias b shifts every logit of a row equally, and softmax
  ignores such shifts: it changes neither the loss nor anything's gradient (open_clip #1076).

SigLIP (Zhai et al. 2023, eq. 1 and Algorithm 1; open_clip SigLipLoss):
    logits = s I T^T + b,     z_ij = +1 if i = j else -1      (labels = 2 eye(B) - 1)
    loss   = -(1/B) sum_{i,j} log sigmoid(z_ij logits_ij)
  Every one of the B^2 pairs is an independent binary "match or not?" question; no softmax over
  the batch. The sum runs over all B^2 pairs and is divided by B, NOT averaged over B^2.

Pitfalls, each a real bug report:
- sum / B, not mean (google-research/big_vision #115): a mean over B^2 pairs makes the SigLIP
  loss, and its gradients, B times too small.
- logit_scale starts at log(1/0.07) = 2.6593, s = 14.29 (CLIP). Starting the raw parameter at 1
  instead (transformers #13430, fixed in PR #13436) gives s = e = 2.7: logits of cosines times 2.7
  barely separate, and training stalls. SigLIP starts at log 10 with b = -10.
- Keep logit_scale (and logit_bias) out of weight decay (open_clip #815): decay pulls the raw
  parameter toward 0, i.e. s toward 1, and collapses the logits. tinyvision.optim's
  param_groups_no_decay exempts every parameter with fewer than 2 axes for this reason.
- Clamp the raw parameter to [0, log 100] after each optimizer step (clamp_logit_scale), so
  s <= 100, as the CLIP paper does (the released OpenAI code lacked it, openai/CLIP #46). Reaching
  the cap on long runs is normal (open_clip #214).
- SigLIP's b = -10 makes sigmoid(b) = 4.5e-5, the prior "probability that a pair matches" for a
  batch of ~22k; the better prior is p = 1/B, b = log(p / (1 - p)) (open_clip #650). For B = 64
  that is -4.14, and -10 there starts the model far too sure that nothing matches.

Using the trained space (zero-shot classification, retrieval) is the next file, retrieval.py.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import ops as F
from ..backend import xp_of
from ..checks import check_bool, check_int, check_number
from ..tensor import Tensor, as_tensor

__all__ = ["CLIP_LOGIT_SCALE_INIT", "SIGLIP_LOGIT_BIAS_INIT", "SIGLIP_LOGIT_SCALE_INIT", "clamp_logit_scale",
           "clip_loss", "l2_normalize", "siglip_bias_init", "siglip_loss"]

CLIP_LOGIT_SCALE_INIT = math.log(1 / 0.07)   # s = 14.29 (CLIP)
SIGLIP_LOGIT_SCALE_INIT = math.log(10.0)     # s = 10    (SigLIP)
SIGLIP_LOGIT_BIAS_INIT = -10.0               # b = -10   (SigLIP)


# --- the differentiable part: built from tinyvision ops, so gradients flow without a new op -------
def l2_normalize(x, axis: int = -1, eps: float = 1e-12) -> Tensor:
    """x / sqrt(sum_axis x^2 + eps): rows of unit length (a zero row stays zero instead of NaN; eps > 0)."""
    axis = check_int("l2_normalize", "axis", axis)
    eps = check_number("l2_normalize", "eps", eps, low=0.0, low_open=True)
    x = as_tensor(x)
    return F.div(x, F.sqrt(F.sum(x * x, axis=axis, keepdims=True) + eps))


def _check_pair(where: str, image_emb, text_emb):
    image_emb, text_emb = as_tensor(image_emb), as_tensor(text_emb)
    if image_emb.ndim != 2 or text_emb.shape != image_emb.shape or image_emb.shape[0] == 0:
        raise ValueError(f"{where}: image_emb has shape {image_emb.shape} and text_emb has shape {text_emb.shape}; "
                         "expected both (B, E) with the same B >= 1 (pair i is image i with text i) and the same E")
    return image_emb, text_emb


def _check_scalar(where: str, name: str, value, like: Tensor) -> Tensor:
    """A learnable scalar: a 0-d or (1,) Tensor (or a plain finite number, a constant)."""
    if isinstance(value, (numbers.Real, bool, np.bool_)):
        return as_tensor(check_number(where, name, value), like)
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}: {name} must be a Tensor of shape () or (1,), got {type(value).__name__}")
    if value.shape not in ((), (1,)):
        raise ValueError(f"{where}: {name} has shape {value.shape}; expected a scalar, shape () or (1,)")
    return value


def _logits(where, image_emb, text_emb, logit_scale, logit_bias, normalize):
    """s I T^T (+ b): (B, B), entry (i, j) = image i against text j."""
    image_emb, text_emb = _check_pair(where, image_emb, text_emb)
    if check_bool(where, "normalize", normalize):
        image_emb, text_emb = l2_normalize(image_emb), l2_normalize(text_emb)
    raw = _check_scalar(where, "logit_scale", logit_scale, image_emb)
    s = F.exp(raw)
    if not bool(xp_of(s.data).isfinite(s.data).all()):
        # e^89 overflows float32, and inf * cos would make NaN logits. CLIP clamps the raw scale at
        # ln 100 = 4.605 (clamp_logit_scale); a value near the dtype's limit means a diverged run.
        raise FloatingPointError(f"{where}: exp(logit_scale) overflows {s.dtype} (logit_scale = "
                                 f"{raw.numpy().max()}); clamp it, as CLIP does at ln 100 (clamp_logit_scale)")
    logits = s * F.matmul(image_emb, F.transpose(text_emb))
    if logit_bias is not None:
        logits = logits + _check_scalar(where, "logit_bias", logit_bias, image_emb)
    return logits


def clip_loss(image_emb, text_emb, logit_scale, logit_bias=None, normalize: bool = False) -> Tensor:
    """The symmetric InfoNCE loss of CLIP, a scalar.

    image_emb, text_emb: (B, E), assumed L2-normalised already (the towers end with l2_normalize);
    pass normalize=True to normalise here. logit_scale: the RAW parameter, s = exp(logit_scale).
        loss = ( CE(s I T^T, arange B) + CE(s T I^T, arange B) ) / 2
    F.cross_entropy works from log-softmax via a max-shifted logsumexp, so s = 100 is safe.
    """
    logits = _logits("clip_loss", image_emb, text_emb, logit_scale, logit_bias, normalize)
    labels = np.arange(logits.shape[0])              # the positive of row i is column i
    image_to_text = F.cross_entropy(logits, labels)
    text_to_image = F.cross_entropy(F.transpose(logits), labels)   # logits^T = s T I^T
    return (image_to_text + text_to_image) / 2


def siglip_loss(image_emb, text_emb, logit_scale, logit_bias, normalize: bool = False) -> Tensor:
    """The pairwise sigmoid loss of SigLIP, a scalar: -(1/B) sum_ij log sigmoid(z_ij (s I_i.T_j + b)).

    Same inputs as clip_loss, plus the raw bias b (init -10, or siglip_bias_init(B)).
    """
    logits = _logits("siglip_loss", image_emb, text_emb, logit_scale, logit_bias, normalize)
    batch = logits.shape[0]
    # With y = (z + 1) / 2 = eye(B), binary cross-entropy with logits is
    #   BCE(x, y) = softplus(x) - x y,   softplus(x) = log(1 + e^x) = -log sigmoid(-x)
    #   y = 1 (z = +1): softplus(x) - x = log(1 + e^-x) = -log sigmoid(x)  = -log sigmoid(z x)
    #   y = 0 (z = -1): softplus(x)                     = -log sigmoid(-x) = -log sigmoid(z x)
    # and the op evaluates softplus without overflow at any |x|.
    targets = np.eye(batch, dtype=logits.dtype)
    total = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")   # all B^2 pairs
    return total / batch                                                         # sum / B, not mean


def siglip_bias_init(batch_size: int | None = None) -> float:
    """The initial SigLIP bias b: -10 (the paper), or logit(1/B) = log(1 / (B - 1)) given a batch size.

    At init s cos ~ 0, so sigmoid(b) is the model's probability that a pair matches. In a batch,
    B of the B^2 pairs match: p = 1/B, b = log(p / (1 - p)) (open_clip #650). B = 64 gives -4.14;
    b = -10 corresponds to B ~ 22,000, SigLIP's own batch size.
    """
    if batch_size is None:
        return SIGLIP_LOGIT_BIAS_INIT
    # B >= 2: with B = 1 every pair matches, p = 1 and logit(p) is infinite
    batch_size = check_int("siglip_bias_init", "batch_size", batch_size, low=2)
    p = 1.0 / batch_size
    return math.log(p / (1 - p))


def clamp_logit_scale(param: Tensor, max_value: float = math.log(100), min_value: float = 0.0) -> Tensor:
    """Clamp the raw logit_scale IN PLACE to [min_value, max_value] = [0, log 100], i.e. 1 <= s <= 100.

    Call it after each optimizer step, outside the graph (like open_clip's
    `model.logit_scale.clamp_(0, math.log(100))`). Returns param, for chaining.
    """
    if not isinstance(param, Tensor):
        raise TypeError(f"clamp_logit_scale: param must be a Tensor (the raw parameter), got {type(param).__name__}")
    max_value = check_number("clamp_logit_scale", "max_value", max_value)
    min_value = check_number("clamp_logit_scale", "min_value", min_value)
    if not min_value <= max_value:
        raise ValueError(f"clamp_logit_scale: min_value {min_value} exceeds max_value {max_value}")
    # Write into the same array (not a new one), as clamp_ does: any alias of the parameter sees it.
    param.data[...] = xp_of(param.data).clip(param.data, min_value, max_value)
    return param
