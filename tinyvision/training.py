"""The supervised training loop the lessons share, written out once.

    for each epoch, for each shuffled batch (x, y):
        loss = cross_entropy(model(augment(x)), y)        forward
        zero_grad; loss.backward()                        backward
        clip the global gradient norm; AdamW step         update
        lr <- warm-up then cosine schedule

AdamW with parameter groups (biases, norms and other 1-D parameters are not decayed), a linear
warm-up then cosine decay (Loshchilov & Hutter 2017), label smoothing and gradient clipping:
the standard recipe for training a ViT (Touvron et al. 2021), scaled down.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import ops as F
from .checks import check_int, check_number
from .data import batches
from .optim import AdamW, WarmupCosine, clip_grad_norm, param_groups_no_decay
from .tensor import Tensor, no_grad

__all__ = ["History", "accuracy", "model_device", "predict", "train_classifier"]


@dataclass
class History:
    """What happened during training, for printing and plotting."""
    steps: list = field(default_factory=list)        # step index of each logged loss
    loss: list = field(default_factory=list)         # training loss of that batch
    val_steps: list = field(default_factory=list)    # step index of each validation
    val_accuracy: list = field(default_factory=list)
    seconds: float = 0.0


def model_device(model) -> str:
    """The device of a model's parameters: where its input batches must go."""
    params = model.parameters()
    return params[0].device if params else "cpu"


def predict(model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits as a NumPy array, in eval mode and without building a graph (batches go to the model's device)."""
    batch_size = check_int("predict", "batch_size", batch_size, low=1)
    was_training = model.training
    model.eval()
    device = model_device(model)
    with no_grad():
        out = np.concatenate([model(Tensor(x[i:i + batch_size], device=device)).numpy()
                              for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """The fraction of examples whose largest logit is at their label y."""
    if len(x) != len(y):
        raise ValueError(f"accuracy: x has {len(x)} examples but y has {len(y)}")
    return float((predict(model, x, batch_size).argmax(axis=1) == y).mean())


def train_classifier(model, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int = 64, lr: float = 1e-3,
                     weight_decay: float = 0.05, warmup_fraction: float = 0.05, label_smoothing: float = 0.0,
                     max_grad_norm: float | None = 1.0, augment=None, seed: int = 0, x_val=None, y_val=None,
                     val_every: int = 0, log=None) -> History:
    """Train `model` on (x, y) in place and return its History.

    augment: None, or a function (x_batch, rng) -> x_batch applied to each training batch.
    val_every: evaluate on (x_val, y_val) every that many epochs (0 = only at the end).
    log: None, or a function called with one line of progress per validation.
    Every setting is checked before the first step: epochs, batch_size >= 1; lr, weight_decay >= 0;
    warmup_fraction in [0, 1]; label_smoothing in [0, 1); max_grad_norm None or > 0; val_every >= 0.
    """
    where = "train_classifier"
    if len(x) != len(y):
        raise ValueError(f"{where}: x has {len(x)} examples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError(f"{where}: x holds no examples")
    epochs = check_int(where, "epochs", epochs, low=1)
    batch_size = check_int(where, "batch_size", batch_size, low=1)
    lr = check_number(where, "lr", lr, low=0.0)
    weight_decay = check_number(where, "weight_decay", weight_decay, low=0.0)
    warmup_fraction = check_number(where, "warmup_fraction", warmup_fraction, 0.0, 1.0)
    label_smoothing = check_number(where, "label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
    if max_grad_norm is not None:
        max_grad_norm = check_number(where, "max_grad_norm", max_grad_norm, low=0.0, low_open=True)
    for name, fn in (("augment", augment), ("log", log)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{where}: {name} must be None or a function, got {type(fn).__name__}")
    seed = check_int(where, "seed", seed, low=0)
    val_every = check_int(where, "val_every", val_every, low=0)
    if (x_val is None) != (y_val is None):
        raise ValueError(f"{where}: pass x_val and y_val together (got only "
                         f"{'x_val' if y_val is None else 'y_val'})")
    if x_val is not None and len(x_val) != len(y_val):
        raise ValueError(f"{where}: x_val has {len(x_val)} examples but y_val has {len(y_val)}")
    opt = AdamW(param_groups_no_decay(model, weight_decay), lr=lr)
    steps_per_epoch = -(-len(x) // batch_size)
    total = epochs * steps_per_epoch
    schedule = WarmupCosine(opt, total_steps=total, warmup_steps=int(warmup_fraction * total))
    rng = np.random.default_rng((seed, 1))
    history, step, start = History(), 0, time.perf_counter()
    device = model_device(model)          # host batches are copied to the model's device, one at a time
    model.train()
    for epoch in range(epochs):
        for xb, yb in batches(x, y, batch_size=batch_size, seed=seed, epoch=epoch):
            if augment is not None:
                xb = augment(xb, rng)
            loss = F.cross_entropy(model(Tensor(xb, device=device)), yb, label_smoothing=label_smoothing)
            opt.zero_grad()
            loss.backward()
            if max_grad_norm is not None:
                clip_grad_norm(model.parameters(), max_grad_norm)
            schedule.step()   # set this step's learning rate first: step 0 is the smallest warm-up lr
            opt.step()
            history.steps.append(step)
            history.loss.append(loss.item())
            step += 1
        last = epoch == epochs - 1
        if x_val is not None and (last or (val_every and (epoch + 1) % val_every == 0)):
            history.val_steps.append(step)
            history.val_accuracy.append(accuracy(model, x_val, y_val))
            if log is not None:
                log(f"epoch {epoch + 1:3d}/{epochs}  loss {np.mean(history.loss[-steps_per_epoch:]):.4f}  "
                    f"val accuracy {history.val_accuracy[-1]:.4f}  ({time.perf_counter() - start:.0f} s)")
    history.seconds = time.perf_counter() - start
    return history
