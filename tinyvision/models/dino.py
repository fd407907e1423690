"""DINO: self-distillation with no labels (Caron et al. 2021).

A student network learns to predict, from any view of a picture, what a teacher network says about
the picture's large (global) views. The teacher is not trained: it is an exponential moving average
(EMA) of the student's past weights. Nothing tells either network what the picture shows.

    views        2 global crops (large, both networks) and several local crops (small, student only)
    outputs      a ViT's class token -> DINOHead: MLP, L2-normalise, weight-normalised linear to K dims
    teacher      q = softmax((t - c) / tau_t), no gradient; tau_t small (0.04): sharpening
    student      log p = log_softmax(s / tau_s), tau_s = 0.1
    loss         mean over pairs (global view a of the teacher, any other view b of the student) of
                 -sum_k q_a[k] log p_b[k]                          (each pair a != b; eq. 3 of the paper)
    centre       c <- m_c c + (1 - m_c) mean_batch(t), m_c = 0.9, after each step
    EMA          teacher <- m teacher + (1 - m) student, m from 0.996 to 1 on a cosine

Why it does not collapse: two forces pull opposite ways. Centring (subtracting c) stops any one of
the K dimensions from winning for every picture, but alone it drives the teacher towards the uniform
distribution (entropy ln K). Sharpening (a low tau_t) makes the teacher confident, but alone it drives
every picture to the same one dimension (entropy 0). Together they balance; tests/test_dino.py shows
each alone collapsing.

Departures for 32x32 pictures: local crops are 16x16, read by the same ViT with its position table
resampled (bicubic) to the smaller grid, as DINO interpolates it for 96-pixel crops; K is small.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops as F
from ..backend import to_device
from ..checks import check_int, check_number
from ..nn import GELU, Buffer, Linear, Module, ModuleList, Parameter
from ..nn.init import as_rng, trunc_normal
from ..ops.resample import interpolation_matrix
from ..tensor import Tensor, no_grad
from .vit import ViT

__all__ = ["DINO", "DINOHead", "class_token_features", "cosine_schedule", "dino_loss", "ema_update", "teacher_temperatures",
           "update_center", "vit_class_token"]


class WeightNormLinear(Module):
    """y = x W^T with W = g v / ||v|| per output row (Salimans & Kingma 2016), no bias.

    norm_last_layer=True (DINO's default) fixes g = 1: a Buffer, not a Parameter, so no optimiser
    moves it and every output row keeps unit norm."""

    def __init__(self, in_dim: int, out_dim: int, norm_last_layer: bool = True, *, seed):
        self.weight_v = Parameter(trunc_normal((out_dim, in_dim), std=0.02, seed=seed))
        g = np.ones((out_dim, 1), dtype=np.float32)
        self.weight_g = Buffer(g) if norm_last_layer else Parameter(g)

    def forward(self, x: Tensor) -> Tensor:
        v = self.weight_v
        w = v * self.weight_g / F.sqrt(F.sum(v * v, axis=1, keepdims=True))
        return F.matmul(x, F.transpose(w, (1, 0)))


class DINOHead(Module):
    """Linear-GELU-Linear-GELU-Linear to a bottleneck, L2-normalise, WeightNormLinear to out_dim."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 256, bottleneck_dim: int = 64,
                 norm_last_layer: bool = True, *, seed):
        rng = as_rng(seed)
        self.mlp = ModuleList([Linear(in_dim, hidden_dim, seed=rng), GELU(), Linear(hidden_dim, hidden_dim, seed=rng),
                               GELU(), Linear(hidden_dim, bottleneck_dim, seed=rng)])
        for layer in self.mlp:
            if isinstance(layer, Linear):
                layer.weight.data = to_device(trunc_normal(layer.weight.shape, std=0.02, seed=rng), layer.weight.device)
                layer.bias.data = layer.bias.data * 0
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, norm_last_layer, seed=rng)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.mlp:
            x = layer(x)
        x = x / F.sqrt(F.sum(x * x, axis=-1, keepdims=True) + 1e-12)          # L2-normalise
        return self.last_layer(x)


def vit_class_token(vit: ViT, images) -> Tensor:
    """The ViT's normalised class token (B, D) for images of any size its patches divide: at another grid
    than its table's, the position table is resampled (bicubic, a fixed linear map, so gradients reach it)."""
    x = images if isinstance(images, Tensor) else Tensor(np.asarray(images, dtype=np.float32))
    pe = vit.patch_embed
    grid = (x.shape[2] // pe.patch_size, x.shape[3] // pe.patch_size)
    if grid == tuple(pe.grid_size):
        tokens = vit.embed(x)
    else:
        patches = pe(x)                                                          # (B, N', D)
        if not hasattr(vit, "pos_embed"):
            raise ValueError(f"vit_class_token: a {x.shape[2]}x{x.shape[3]} input needs the ViT's learned position "
                             f"table resampled, and this ViT has pos_embed={vit.pos_embed_kind!r}")
        gh, gw = pe.grid_size
        m = np.kron(interpolation_matrix(gh, grid[0], "bicubic"), interpolation_matrix(gw, grid[1], "bicubic"))
        pos = vit.pos_embed                                                      # (1, 1 + N, D)
        pos_patches = F.matmul(m.astype(np.float32), pos[0, 1:])                 # (N', D)
        cls = F.mul(vit.cls_token + pos[:, :1], np.ones((x.shape[0], 1, 1), dtype=np.float32))
        tokens = F.concatenate([cls, patches + pos_patches], axis=1)
    for block in vit.blocks:
        tokens = block(tokens)
    return vit.norm(tokens)[:, 0]


class DINO(Module):
    """Student (ViT + DINOHead, trained) and teacher (a copy, EMA only, kept out of parameters())."""

    def __init__(self, vit_kwargs: dict, out_dim: int = 256, hidden_dim: int = 256, bottleneck_dim: int = 64, *, seed):
        self.out_dim = check_int("DINO", "out_dim", out_dim, low=2)
        if vit_kwargs.get("pos_embed", "learn") != "learn":
            raise ValueError(f"DINO: the ViT needs a learned position table (pos_embed='learn'), which local crops "
                             f"resample; got pos_embed={vit_kwargs['pos_embed']!r}")
        vit_kwargs = {**vit_kwargs, "class_token": True, "global_pool": "token"}

        def build(rng):
            return ViT(**vit_kwargs, seed=rng), DINOHead(vit_kwargs["embed_dim"], out_dim, hidden_dim, bottleneck_dim,
                                                          seed=rng)
        rng = as_rng(seed)
        self.backbone, self.head = build(rng)
        teacher_backbone, teacher_head = build(rng)
        for t, s in zip(teacher_backbone.parameters() + teacher_head.parameters(),
                        self.backbone.parameters() + self.head.parameters()):
            t.data = s.data.copy()                                # the teacher starts as the student
        self._teacher = [teacher_backbone, teacher_head]          # a list: not this module's parameters
        self.center = Buffer(np.zeros((1, out_dim), dtype=np.float32))     # saved with the model, never learned

    @property
    def teacher(self) -> tuple[ViT, DINOHead]:
        return self._teacher[0], self._teacher[1]

    def student_out(self, images) -> Tensor:
        return self.head(vit_class_token(self.backbone, images))

    def teacher_out(self, images) -> np.ndarray:
        backbone, head = self.teacher
        with no_grad():
            return head(vit_class_token(backbone, images)).numpy()

    def train_step(self, views, opt, teacher_temp: float = 0.04, momentum: float = 0.996,
                   center_momentum: float | None = 0.9, freeze_last_layer: bool = False) -> dict:
        """One DINO step on the views of a batch (tinyvision.data.augment.multi_crop: two global views first,
        then the local ones): the loss, the student's update (the head's last layer left alone when
        freeze_last_layer), the EMA teacher, the centre.

        center_momentum=None keeps the centre where it is (an experiment: sharpening without centring).
        Returns the loss and the entropy of the teacher's distribution on the first global view."""
        teacher = [self.teacher_out(v) for v in views[:2]]
        loss = dino_loss([self.student_out(v) for v in views], teacher, self.center.numpy(), teacher_temp=teacher_temp)
        opt.zero_grad()
        loss.backward()
        if freeze_last_layer:                        # DINO's first epoch: the prototypes wait for the features
            for p in self.head.last_layer.parameters():
                p.grad = None
        opt.step()
        for t, s in zip(self.teacher, (self.backbone, self.head)):
            ema_update(t, s, momentum)
        z = (teacher[0] - self.center.numpy()) / teacher_temp
        q = np.exp(z - z.max(-1, keepdims=True))
        q /= q.sum(-1, keepdims=True)
        if center_momentum is not None:
            self.center.data = to_device(update_center(self.center.numpy(), teacher, center_momentum),
                                         self.center.device)
        return {"loss": float(loss.item()), "teacher_entropy": float(np.mean(-(q * np.log(q + 1e-30)).sum(-1)))}

    def features(self, images, batch: int = 500) -> np.ndarray:
        """The teacher backbone's class tokens (what DINO evaluates with k-NN), float32 (n, D)."""
        return class_token_features(self.teacher[0], images, batch)


def class_token_features(vit: ViT, images, batch: int = 500) -> np.ndarray:
    """vit_class_token of every picture (n, C, H, W), in batches, without gradients: (n, D) float32."""
    with no_grad():
        parts = [vit_class_token(vit, images[i:i + batch]).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, vit.embed_dim), dtype=np.float32)


def dino_loss(student_out, teacher_out, center, student_temp: float = 0.1, teacher_temp: float = 0.04) -> Tensor:
    """The mean over pairs (teacher view a, student view b != a) of -sum_k q_a log p_b (module docstring).

    student_out: one Tensor (B, K) per view, the global views first (same order as teacher_out);
    teacher_out: one array (B, K) per global view; center (1, K)."""
    student_temp = check_number("dino_loss", "student_temp", student_temp, low=0.0, low_open=True)
    teacher_temp = check_number("dino_loss", "teacher_temp", teacher_temp, low=0.0, low_open=True)
    if len(teacher_out) > len(student_out) or not teacher_out:
        raise ValueError(f"dino_loss: the teacher's views ({len(teacher_out)}) must be the first of the student's "
                         f"({len(student_out)}) and at least one")
    qs = []
    for t in teacher_out:
        z = (np.asarray(t, dtype=np.float64) - center) / teacher_temp
        z = np.exp(z - z.max(-1, keepdims=True))
        qs.append(z / z.sum(-1, keepdims=True))
    total, terms = None, 0
    for a, q in enumerate(qs):
        for b, s in enumerate(student_out):
            if a == b:
                continue
            logp = F.log_softmax(s * (1.0 / student_temp), axis=-1)
            term = F.mean(F.sum(logp * (-q.astype(logp.dtype)), axis=-1))
            total = term if total is None else total + term
            terms += 1
    if total is None:
        raise ValueError("dino_loss: one view alone gives no pair (a, b != a); give at least two views")
    return total * (1.0 / terms)


def update_center(center, teacher_out, momentum: float = 0.9) -> np.ndarray:
    """c <- m c + (1 - m) mean over the batch of every global view's raw teacher output."""
    batch_mean = np.concatenate([np.asarray(t) for t in teacher_out]).mean(0, keepdims=True)
    return (momentum * np.asarray(center) + (1 - momentum) * batch_mean).astype(np.float32)


def ema_update(teacher, student, momentum: float) -> None:
    """teacher <- m teacher + (1 - m) student, parameter by parameter (modules of the same layout)."""
    tp, sp = teacher.parameters(), student.parameters()
    if len(tp) != len(sp):
        raise ValueError(f"ema_update: teacher has {len(tp)} parameters, student {len(sp)}; same layout expected")
    m = float(momentum)              # a Python float: a NumPy float64 scalar would turn float32 weights float64
    for t, s in zip(tp, sp):
        t.data = m * t.data + (1.0 - m) * s.data


def cosine_schedule(base: float, final: float, steps: int, warmup_steps: int = 0, start_warmup: float = 0.0) -> np.ndarray:
    """DINO's per-step schedule: linear from start_warmup to base over warmup_steps, then
    final + (base - final) (1 + cos(pi i / n)) / 2 over the remaining n steps."""
    steps = check_int("cosine_schedule", "steps", steps, low=1)
    warmup_steps = check_int("cosine_schedule", "warmup_steps", warmup_steps, low=0, high=steps)
    warm = np.linspace(start_warmup, base, warmup_steps) if warmup_steps else np.zeros(0)
    n = steps - warmup_steps
    i = np.arange(n)
    return np.concatenate([warm, final + 0.5 * (base - final) * (1 + np.cos(math.pi * i / n))])


def teacher_temperatures(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int) -> np.ndarray:
    """Per epoch: linspace(warmup_temp, temp, warmup_epochs), then temp."""
    epochs = check_int("teacher_temperatures", "epochs", epochs, low=1)
    warmup_epochs = check_int("teacher_temperatures", "warmup_epochs", warmup_epochs, low=0, high=epochs)
    return np.concatenate([np.linspace(warmup_temp, temp, warmup_epochs), np.full(epochs - warmup_epochs, temp)])
