"""Optimizers: how a gradient becomes a change of the weights.

Every optimizer here walks its parameter groups and, for each parameter p with a gradient
g = dL/dp, applies one update rule in place on the raw array p.data. The rules, with
learning rate lr (alpha in the papers) and step counter t = 1, 2, ...:

    SGD with momentum mu (PyTorch's form of Sutskever et al. 2013, the lr outside the buffer):
        b_t = mu b_{t-1} + g_t                      b_0 = 0, so b_1 = g_1
        p_t = p_{t-1} - lr b_t                      (heavy ball)
        p_t = p_{t-1} - lr (g_t + mu b_t)           (nesterov=True)

    Adam (Kingma & Ba 2015, Algorithm 1):
        m_t = beta1 m_{t-1} + (1 - beta1) g_t       first moment, m_0 = 0
        v_t = beta2 v_{t-1} + (1 - beta2) g_t^2     second moment, v_0 = 0
        m^_t = m_t / (1 - beta1^t),  v^_t = v_t / (1 - beta2^t)     bias correction
        p_t = p_{t-1} - lr m^_t / (sqrt(v^_t) + eps)

    Weight decay lambda, two different things (Loshchilov & Hutter 2019):
        L2 (SGD, Adam):      g_t <- g_t + lambda p_{t-1}     the gradient of (lambda/2)||p||^2
        decoupled (AdamW):   p_t <- p_{t-1} - lr lambda p_{t-1}, then the Adam step on g_t alone
    For plain SGD the two coincide. For Adam they do not: L2's lambda p is divided by sqrt(v^), so
    weights with large gradients are barely decayed. AdamW decays every weight at the same rate.

Parameter groups, per-parameter state and state_dict / load_state_dict are the same for every
rule: they live in base.py (class Optimizer). `param_groups_no_decay` below builds the usual two
groups: matrices decayed, biases / norm weights / scalars not.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import xp_of
from ..checks import check_bool, check_number
from .base import Optimizer, check_params

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "clip_grad_norm", "param_groups_no_decay"]


# --- SGD -------------------------------------------------------------------------------------
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

        g <- g + weight_decay p                    (L2; without momentum, the same as decoupled decay)
        b <- momentum b + g                        (b = g at the first step)
        p <- p - lr b            or, nesterov,     p <- p - lr (g + momentum b)

    These are torch.optim.SGD's formulas with dampening 0. Sutskever et al. (2013, eq. 1-4) put
    the lr inside the buffer (v <- mu v - lr g); with a constant lr the two are the same, and
    this form keeps the buffer unchanged when a schedule changes the lr.
    """

    state_names = ("momentum_buffer",)

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay})

    def _check_hyperparameters(self, hyper, where):
        hyper["lr"] = check_number(where, "lr", hyper["lr"], low=0.0)
        hyper["momentum"] = check_number(where, "momentum", hyper["momentum"], 0.0, 1.0, high_open=True)
        hyper["weight_decay"] = check_number(where, "weight_decay", hyper["weight_decay"], low=0.0)
        hyper["nesterov"] = check_bool(where, "nesterov", hyper["nesterov"])
        if hyper["nesterov"] and hyper["momentum"] == 0:
            raise ValueError(f"{where}: nesterov=True needs momentum > 0, got momentum={hyper['momentum']}")
        return hyper

    def _update(self, p, grad, state, group):
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        g = grad + wd * p.data if wd != 0 else grad
        if mu != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                # b_1 = g_1 (= mu * 0 + g_1). xp.array copies (g may be p.grad itself) and makes a
                # 0-d g, which NumPy arithmetic returns as an immutable scalar, an updatable array.
                buf = state["momentum_buffer"] = xp_of(p.data).array(g)
            else:
                buf *= mu
                buf += g
            # Nesterov looks ahead: the step uses the gradient plus the momentum it is about to apply.
            g = g + mu * buf if group["nesterov"] else buf
        p.data -= lr * g


# --- Adam and AdamW --------------------------------------------------------------------------
class Adam(Optimizer):
    """Adam (Kingma & Ba 2015, Algorithm 1), with weight decay as an L2 term in the gradient.

        g <- g + weight_decay p                    (L2, as torch.optim.Adam)
        m <- beta1 m + (1 - beta1) g               v <- beta2 v + (1 - beta2) g^2
        p <- p - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

    m and v start at 0, so early on they are biased toward 0; dividing by 1 - beta^t removes
    exactly that bias (the paper's section 3). Each parameter counts its own t, so a
    parameter that had no gradient on some steps is still corrected correctly.

    The paper's faster variant folds the correction into the lr and adds eps to sqrt(v)
    uncorrected; that moves eps slightly. We keep Algorithm 1 as printed, which is also what
    torch.optim.Adam computes (up to rounding).

    The fused kernel (tinyvision/kernels/adamw_numba.py) takes float32 and float64 parameters;
    others, float16 included, get this NumPy update under any kernel choice. In float16 it is
    computed with float32 state and arithmetic: in float16 itself eps = 1e-8 rounds to 0, and
    (1 - beta2) g^2 rounds to 0 for |g| below about 5e-3, so a step would be m / 0 = inf.
    """

    state_names = ("step", "exp_avg", "exp_avg_sq")
    decoupled_weight_decay = False  # AdamW sets this: the one line in which the two differ

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def step(self) -> None:
        """Optimizer.step; where the fused CPU kernel is chosen, Numba's thread count is set once
        around all the parameters (kernels/_threads.py) instead of once per parameter: a ViT has
        dozens of small parameters, and each change of Numba's pool costs microseconds."""
        from .. import kernels  # noqa: PLC0415 - kernels imports nothing from optim
        if kernels.implementation("adamw", "cpu") == "reference":
            return super().step()
        from ..kernels._threads import kernel_threads  # noqa: PLC0415
        with kernel_threads():
            return super().step()

    def state_dtype(self, p):
        """float32 moments for float16 parameters (see the class docstring), else p's dtype."""
        return np.dtype(np.float32) if p.data.dtype == np.float16 else p.data.dtype

    def _check_hyperparameters(self, hyper, where):
        # lr >= 0 (0 freezes a group); betas in [0, 1), since beta = 1 never updates m or v and
        # makes the bias correction 1 / (1 - 1^t) infinite; eps > 0, or a zero gradient gives 0 / 0.
        hyper["lr"] = check_number(where, "lr", hyper["lr"], low=0.0)
        betas = hyper["betas"]
        if isinstance(betas, np.ndarray):
            betas = betas.tolist()
        if not isinstance(betas, (tuple, list)):
            raise TypeError(f"{where}: betas must be a pair (beta1, beta2), got {betas!r} ({type(betas).__name__})")
        if len(betas) != 2:
            raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got {hyper['betas']!r}")
        hyper["betas"] = tuple(check_number(where, f"betas[{k}]", b, 0.0, 1.0, high_open=True)
                               for k, b in enumerate(betas))
        hyper["eps"] = check_number(where, "eps", hyper["eps"], low=0.0, low_open=True)
        hyper["weight_decay"] = check_number(where, "weight_decay", hyper["weight_decay"], low=0.0)
        return hyper

    def _update(self, p, grad, state, group):
        xp = xp_of(p.data)
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        # float16 parameters keep m and v in float32 and compute the step in float32: in float16,
        # eps = 1e-8 rounds to 0 and (1 - beta2) g^2 to 0 for |g| below ~5e-3, so a step would be
        # m / 0 = inf. The weights themselves stay float16, so a step smaller than half a float16 ulp
        # of a weight is lost; mixed-precision training keeps a float32 master copy for that.
        wide = self.state_dtype(p)
        if not state:
            state.update(step=0, exp_avg=xp.zeros(p.data.shape, wide), exp_avg_sq=xp.zeros(p.data.shape, wide))
        state["step"] += 1
        t = state["step"]
        fast = _fused_adam(p, grad, state)
        if fast is not None:  # the same update as one compiled pass (tinyvision/kernels/adamw_numba.py)
            fast.update(p.data, grad, state["exp_avg"], state["exp_avg_sq"], lr, beta1, beta2, eps, wd, t,
                        decoupled=self.decoupled_weight_decay)
            return

        g = grad.astype(wide, copy=False)
        w = p.data.astype(wide, copy=False)     # p.data itself unless p is float16
        if wd != 0 and self.decoupled_weight_decay:
            # AdamW: shrink p directly, p <- p - lr wd p, outside the adaptive scaling below.
            # Written as one multiply, as torch.optim.AdamW does.
            w *= 1 - lr * wd
        elif wd != 0:
            g = g + wd * w

        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * (g * g)
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        w -= lr * m_hat / (xp.sqrt(v_hat) + eps)
        if w is not p.data:
            p.data[...] = w


# What the fused kernels take (adamw_numba.adamw_update: C-contiguous float32 / float64 NumPy
# arrays, all of the parameter's dtype). Anything else, float16 included, takes the NumPy update
# above: a kernel switch chooses the speed, never whether a parameter can be trained.
_FUSED_ADAM_DTYPES = (np.float32, np.float64)


def _fused_adam(p, grad, state):
    """The fused Adam(W) kernel when the kernel switch picks one and every buffer suits it, else None."""
    from .. import kernels  # noqa: PLC0415 - kernels imports nothing from optim
    arrays = (p.data, grad, state["exp_avg"], state["exp_avg_sq"])
    if p.data.dtype not in _FUSED_ADAM_DTYPES:
        return None
    if not all(a.flags.c_contiguous and a.dtype == p.data.dtype for a in arrays):
        return None
    impl = kernels.implementation("adamw", p.device, arrays)   # honours a kernel's own `accepts`, if it has one
    return None if impl == "reference" else kernels.kernel("adamw", impl)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2).

        p <- p - lr weight_decay p                 (decay first, on the weights themselves)
        then Adam's update with the raw gradient g (no L2 term).

    With L2 in Adam, the decay gradient wd p is divided by sqrt(v^) like every gradient, so
    weights with a large gradient history are hardly decayed. Decoupling restores weight
    decay's meaning: every weight shrinks by the same factor (1 - lr wd) per step.

    The paper scales the decay by the schedule multiplier eta_t alone (p <- p - eta_t lambda p);
    PyTorch, timm and we multiply by the lr, so a wd tuned with torch.optim.AdamW carries over.
    With weight_decay=0 this is exactly Adam.
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# --- helpers used around an optimizer --------------------------------------------------------
def param_groups_no_decay(module, weight_decay: float, skip: tuple = ()) -> list:
    """Two groups: [weights with ndim >= 2, decayed], [everything with ndim <= 1, not decayed].

    Weight decay pulls weights toward 0, a prior that suits the matrices of linear, conv and
    embedding layers (it limits their norm). It does not suit the rest:
      - biases and LayerNorm shifts only move activations; pulling them to 0 is no prior at all;
      - LayerNorm scales (init 1) would be pulled toward 0, i.e. toward switching the layer off;
      - a scalar like CLIP's logit_scale (log of the temperature, init ln(1/0.07)) would be
        pulled toward s = exp(0) = 1, which collapses the contrastive logits (open_clip #815).
    So, like timm and open_clip, decay only what has at least 2 axes. `skip` names further
    parameters to exempt (timm also exempts `pos_embed` and `cls_token`). Frozen parameters
    (requires_grad=False) are left out of both groups.
    """
    weight_decay = check_number("param_groups_no_decay", "weight_decay", weight_decay, low=0.0)
    if not callable(getattr(module, "named_parameters", None)):
        raise TypeError(f"param_groups_no_decay: module must be a Module, got {type(module).__name__}")
    if isinstance(skip, str) or not isinstance(skip, (tuple, list, set, frozenset)):
        raise TypeError(f"param_groups_no_decay: skip must be a tuple of parameter names, got {skip!r}"
                        + (f"; for one name write ({skip!r},)" if isinstance(skip, str) else ""))
    names = dict(module.named_parameters())
    unknown = sorted(set(skip) - set(names))
    if unknown:
        raise ValueError(f"param_groups_no_decay: skip names {unknown} are not parameters of {type(module).__name__}")
    decay, no_decay = [], []
    for name, p in names.items():
        if p.requires_grad:
            (decay if p.ndim >= 2 and name not in skip else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm is at most max_norm.

        norm = sqrt(sum over parameters p of sum(p.grad^2))
        if norm > max_norm: every grad <- grad * max_norm / (norm + 1e-6)

    Returns the norm measured BEFORE clipping (what is worth logging: a growing value warns of
    divergence). Parameters without a gradient are skipped. All gradients share one factor, so
    the update keeps its direction and only its length shrinks (Pascanu et al. 2013, Algorithm 1).
    The 1e-6 is PyTorch's (clip_grad_norm_), as is applying the factor min(1, max_norm /
    (norm + 1e-6)); so a norm within 1e-6 under max_norm is scaled by a hair as well.

    A NaN or infinite norm raises FloatingPointError naming the offending parameters: scaling by
    max_norm / inf would silently turn every gradient into 0 or NaN.
    """
    max_norm = check_number("clip_grad_norm", "max_norm", max_norm, low=0.0, low_open=True)
    params = check_params("clip_grad_norm", params)
    unique = {id(p): p for p in params}            # a parameter listed twice is still one gradient
    params = list(unique.values())
    grads = [(i, p.grad) for i, p in enumerate(params) if p.grad is not None]
    # Squares summed in float64: a million float32 squares would lose digits, or overflow to inf.
    squares = [float(xp_of(g).sum(g.astype(np.float64) ** 2)) for _, g in grads]
    norm = math.sqrt(sum(squares))
    if not math.isfinite(norm):
        bad = [f"params[{i}] {tuple(g.shape)}" for (i, g), s in zip(grads, squares) if not math.isfinite(s)]
        raise FloatingPointError(f"clip_grad_norm: the gradient norm is {norm}; non-finite gradients in {bad}. "
                                 "Look for a NaN loss, a log of 0 or an overflow in float16.")
    scale = max_norm / (norm + 1e-6)
    if scale < 1:
        for p in params:
            if p.grad is not None:
                # Not `p.grad *= scale`: the grad of a 0-d parameter can be a NumPy scalar, which
                # an in-place multiply would silently leave unchanged.
                p.grad = p.grad * scale
    return norm
