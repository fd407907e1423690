"""DETR: detection as set prediction (Carion et al. 2020), on a small ViT.

    encoder    a ViT's patch tokens (B, N, D): the picture as a set of vectors
    decoder    Q learned object queries (Q, D); each layer: self-attention among the queries (so two
               queries can agree who takes which object), cross-attention to the patch tokens, an MLP
    heads      per query: class logits over K classes + "no object" (index K, the LAST one), and a
               box (cx, cy, w, h) = sigmoid(MLP(query)) in [0, 1]
    matching   per picture, the Hungarian algorithm (boxes.linear_sum_assignment) pairs each true
               object with one query at the lowest cost
                   C(i, j) = -w_class p_j(class_i) + w_L1 |b_j - b_i|_1 - w_giou GIoU(b_j, b_i)
    loss       cross-entropy of every query against its matched class or "no object" (weight eos_coef
               = 0.1 for "no object": most queries are empty), L1 and 1 - GIoU of matched boxes, summed
               and divided by the number of objects; repeated on every decoder layer's output with
               the same heads (auxiliary losses), each with its own matching.

Departures from the paper, for a picture of 32x32: the encoder is the ViT itself (no CNN backbone),
the queries start as learned vectors (DETR starts them at zero and adds the learned query position
at every attention); weights w_class 1, w_L1 5, w_giou 2 as DETR's defaults.
"""
from __future__ import annotations

import numpy as np

from .. import ops as F
from ..checks import check_int, check_number
from ..nn import MLP, CrossAttention, LayerNorm, Linear, Module, ModuleList, MultiHeadAttention, Parameter
from ..nn.init import as_rng, trunc_normal
from ..tensor import Tensor, no_grad
from .boxes import box_cxcywh_to_xyxy, generalized_box_iou, generalized_box_iou_pairs, linear_sum_assignment
from .vit import ViT

__all__ = ["DETR", "DecoderLayer", "hungarian_match", "matching_cost", "set_loss"]


class DecoderLayer(Module):
    """Pre-norm: queries += SelfAttn(LN(queries)); += CrossAttn(LN(queries), memory); += MLP(LN(queries))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, *, seed):
        rng = as_rng(seed)
        self.norm1, self.norm2, self.norm3 = LayerNorm(dim), LayerNorm(dim), LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads, seed=rng)
        self.cross_attn = CrossAttention(dim, heads, seed=rng)
        self.mlp = MLP(dim, int(dim * mlp_ratio), seed=rng)

    def forward(self, queries: Tensor, memory: Tensor) -> Tensor:
        queries = queries + self.self_attn(self.norm1(queries))
        queries = queries + self.cross_attn(self.norm2(queries), memory)
        return queries + self.mlp(self.norm3(queries))


class DETR(Module):
    """forward(images (B, C, H, W)) -> list over decoder layers of (logits (B, Q, K+1), boxes (B, Q, 4));
    the last entry is the model's answer, the others feed the auxiliary losses."""

    def __init__(self, num_classes: int, img_size=32, patch_size=4, in_chans=3, dim=64, encoder_depth=2,
                 decoder_depth=2, heads=4, num_queries=8, mlp_ratio=2.0, *, seed):
        where = "DETR"
        self.num_classes = check_int(where, "num_classes", num_classes, low=1)
        self.num_queries = check_int(where, "num_queries", num_queries, low=1)
        decoder_depth = check_int(where, "decoder_depth", decoder_depth, low=1)
        rng = as_rng(seed)
        self.encoder = ViT(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=dim,
                           depth=encoder_depth, num_heads=heads, mlp_ratio=mlp_ratio, class_token=False,
                           global_pool="avg", seed=rng)
        self.encoder.head = self.encoder.fc_norm = None          # the patch tokens are used, never a pooled class
        self.encoder_norm = LayerNorm(dim)
        self.query_embed = Parameter(trunc_normal((1, num_queries, dim), std=1.0, seed=rng))
        self.layers = ModuleList([DecoderLayer(dim, heads, mlp_ratio, seed=rng) for _ in range(decoder_depth)])
        self.norm = LayerNorm(dim)
        self.class_embed = Linear(dim, num_classes + 1, seed=rng)                # the last class: no object
        self.bbox_embed = ModuleList([Linear(dim, dim, seed=rng), Linear(dim, dim, seed=rng), Linear(dim, 4, seed=rng)])

    def memory(self, images) -> Tensor:
        x = self.encoder.embed(images if isinstance(images, Tensor) else Tensor(np.asarray(images, np.float32)))
        for block in self.encoder.blocks:
            x = block(x)
        return self.encoder_norm(x)

    def heads(self, queries: Tensor) -> tuple[Tensor, Tensor]:
        h = self.norm(queries)
        b = h
        for i, layer in enumerate(self.bbox_embed):
            b = layer(b)
            if i < len(self.bbox_embed) - 1:
                b = F.relu(b)
        return self.class_embed(h), F.sigmoid(b)

    def forward(self, images) -> list[tuple[Tensor, Tensor]]:
        memory = self.memory(images)
        queries = F.mul(self.query_embed, np.ones((memory.shape[0], 1, 1), dtype=memory.dtype))   # (B, Q, D)
        outputs = []
        for layer in self.layers:
            queries = layer(queries, memory)
            outputs.append(self.heads(queries))
        return outputs


def _targets(where, targets, batch, num_classes):
    if len(targets) != batch:
        raise ValueError(f"{where}: targets must hold one (labels, boxes) pair per picture ({batch}), got {len(targets)}")
    out = []
    for b, (labels, boxes) in enumerate(targets):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(labels) else np.zeros((0, 4))
        if boxes.shape != (len(labels), 4):
            raise ValueError(f"{where}: picture {b} has {len(labels)} labels but boxes of shape {boxes.shape}; "
                             f"expected ({len(labels)}, 4) boxes (cx, cy, w, h)")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{where}: picture {b} has labels {sorted(set(labels.tolist()))}; expected classes in "
                             f"0..{num_classes - 1} ({num_classes} is 'no object', never a target)")
        out.append((labels, boxes))
    return out


def hungarian_match(logits, boxes, targets, w_class=1.0, w_l1=5.0, w_giou=2.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per picture (query indices, target indices) minimising DETR's matching cost (module docstring).

    logits (B, Q, K+1), boxes (B, Q, 4) cxcywh (Tensors or arrays); targets: per picture (labels (n,),
    boxes (n, 4) cxcywh). Computed without gradients: the matching is a choice, not a function to learn."""
    logits = np.asarray(logits.numpy() if isinstance(logits, Tensor) else logits, dtype=np.float64)
    boxes = np.asarray(boxes.numpy() if isinstance(boxes, Tensor) else boxes, dtype=np.float64)
    targets = _targets("hungarian_match", targets, logits.shape[0], logits.shape[-1] - 1)
    return [linear_sum_assignment(matching_cost(logits[b], boxes[b], labels, tboxes, w_class, w_l1, w_giou))
            for b, (labels, tboxes) in enumerate(targets)]


def matching_cost(logits, boxes, labels, target_boxes, w_class=1.0, w_l1=5.0, w_giou=2.0) -> np.ndarray:
    """The cost (Q, n) of giving object i to query j, for one picture: logits (Q, K+1), boxes (Q, 4),
    labels (n,), target_boxes (n, 4), boxes as (cx, cy, w, h); float64.

        C(j, i) = -w_class p_j(label_i) + w_l1 |b_j - b_i|_1 - w_giou GIoU(b_j, b_i)
    DETR uses -p rather than -log p: a constant-free cost on the scale of the box terms."""
    logits = np.asarray(logits, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    target_boxes = np.asarray(target_boxes, dtype=np.float64).reshape(-1, 4)
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    return (-w_class * prob[:, labels]
            + w_l1 * np.abs(boxes[:, None] - target_boxes[None]).sum(-1)
            - w_giou * generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes)))


def set_loss(outputs, targets, eos_coef=0.1, w_class=1.0, w_l1=5.0, w_giou=2.0, match_weights=(1.0, 5.0, 2.0)
             ) -> tuple[Tensor, dict]:
    """DETR's loss summed over the decoder layers' outputs [(logits, boxes), ...]; (loss, parts of the last layer).

    Per layer: weighted cross-entropy sum(w_i nll_i) / sum(w_i) with w = eos_coef for "no object";
    w_l1 * L1 + w_giou * (1 - GIoU) of the matched boxes, summed and divided by the number of objects
    (at least 1). match_weights: (class, L1, GIoU) weights of the matching cost, apart from the loss's
    own weights as in DETR (its defaults are equal: 1, 5, 2)."""
    eos_coef = check_number("set_loss", "eos_coef", eos_coef, low=0.0, low_open=True)
    total, parts = None, {}
    for logits, boxes in outputs:
        B, Q, K1 = logits.shape
        tg = _targets("set_loss", targets, B, K1 - 1)
        with no_grad():
            matches = hungarian_match(logits, boxes, tg, *match_weights)
        classes = np.full((B, Q), K1 - 1, dtype=np.int64)
        bq, bt = [], []
        for b, (q, t) in enumerate(matches):
            classes[b, q] = tg[b][0][t]
            bq += [(b, qi) for qi in q]
            bt += [tg[b][1][ti] for ti in t]
        weights = np.where(classes == K1 - 1, eos_coef, 1.0).astype(logits.dtype)
        nll = F.cross_entropy(logits.reshape(B * Q, K1), classes.reshape(-1), reduction="none")
        loss_ce = F.sum(nll * weights.reshape(-1)) * (1.0 / weights.sum())
        n_boxes = max(len(bq), 1)
        if bq:
            idx = np.array(bq)
            pred = boxes[idx[:, 0], idx[:, 1]]                                       # (n, 4)
            true = np.array(bt, dtype=boxes.dtype)
            diff = pred - true
            loss_l1 = F.sum(F.where(diff.data >= 0, diff, -diff)) * (1.0 / n_boxes)     # |d|: d/dd = sign(d)
            giou = generalized_box_iou_pairs(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(true))
            loss_giou = F.sum(1.0 - giou) * (1.0 / n_boxes)
            layer_loss = w_class * loss_ce + w_l1 * loss_l1 + w_giou * loss_giou
        else:
            loss_l1 = loss_giou = None
            layer_loss = w_class * loss_ce
        total = layer_loss if total is None else total + layer_loss
        parts = {"ce": float(loss_ce.item()), "l1": None if loss_l1 is None else float(loss_l1.item()),
                 "giou": None if loss_giou is None else float(loss_giou.item())}
    return total, parts
