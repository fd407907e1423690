"""Every public differentiable op, paired with a float64 NumPy reference and an input domain.

An entry is OpSpec(draw, op, ref):
    draw(data) -> (arrays, kwargs)     hypothesis picks shapes, values and options
    op(*tensors, **kwargs) -> Tensor   the tinyvision op under test
    ref(*arrays, **kwargs) -> ndarray  the textbook formula, written independently in NumPy

The references are deliberately naive (the formula as printed, loops where clearer) and
never call tinyvision. tests/test_ops.py checks each op's forward against its reference
and its backward against finite differences; test_every_op_is_registered fails when an op
is exported from tinyvision.ops without an entry here.
"""
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import tinyvision.ops as F
from strategies import arrays, axis_of, broadcastable_to, shapes


@dataclass
class OpSpec:
    draw: Callable
    op: Callable
    ref: Callable
    rtol: float = 1e-6       # gradcheck tolerances (float64 central differences)
    atol: float = 1e-6


REGISTRY = {}


def register(name, **kw):
    def deco(draw):
        REGISTRY[name] = OpSpec(draw=draw, **kw)
        return draw
    return deco


def _erf(x):
    return np.vectorize(math.erf)(x)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- elementwise binary, with broadcasting -------------------------------------------------------
def _binary(data, domain_b="real"):
    shape = data.draw(shapes(0, 3))
    a_first = data.draw(st.booleans())
    other = broadcastable_to(data.draw, shape)
    sa, sb = (shape, other) if a_first else (other, shape)
    return [data.draw(arrays(sa)), data.draw(arrays(sb, domain_b))], {}


register("add", op=F.add, ref=lambda a, b: a + b)(_binary)
register("sub", op=F.sub, ref=lambda a, b: a - b)(_binary)
register("mul", op=F.mul, ref=lambda a, b: a * b)(_binary)
register("div", op=F.div, ref=lambda a, b: a / b)(lambda data: _binary(data, "away_from_zero"))


def _unary(domain):
    def draw(data):
        return [data.draw(arrays(data.draw(shapes(0, 3)), domain))], {}
    return draw


register("neg", op=F.neg, ref=lambda x: -x)(_unary("real"))
register("exp", op=F.exp, ref=np.exp)(_unary("real"))
register("log", op=F.log, ref=np.log)(_unary("positive"))
register("sqrt", op=F.sqrt, ref=np.sqrt)(_unary("positive"))
register("tanh", op=F.tanh, ref=np.tanh)(_unary("real"))
register("sigmoid", op=F.sigmoid, ref=lambda x: 1 / (1 + np.exp(-x)))(_unary("real"))
register("relu", op=F.relu, ref=lambda x: np.maximum(x, 0))(_unary("away_from_zero"))
register("silu", op=F.silu, ref=lambda x: x / (1 + np.exp(-x)))(_unary("real"))


@register("leaky_relu", op=lambda x, negative_slope: F.leaky_relu(x, negative_slope),
          ref=lambda x, negative_slope: np.where(x > 0, x, negative_slope * x))
def _draw_leaky_relu(data):
    slope = data.draw(st.sampled_from([0.01, 0.2, 0.0, 1.0, -0.3, 2.5]))
    return [data.draw(arrays(data.draw(shapes(0, 3)), "away_from_zero"))], {"negative_slope": slope}


@register("pow", op=lambda x, exponent: F.pow(x, exponent), ref=lambda x, exponent: x ** exponent)
def _draw_pow(data):
    exponent = data.draw(st.sampled_from([-1.5, -1, 0, 0.5, 1, 2, 3, 2.5]))
    domain = "real" if exponent in (0, 1, 2, 3) else "positive"
    return [data.draw(arrays(data.draw(shapes(0, 3)), domain))], {"exponent": exponent}


def _gelu_ref(x, *bias, approximate):
    u = x + bias[0] if bias else x
    if approximate == "none":
        return 0.5 * u * (1 + _erf(u / math.sqrt(2)))
    return 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))


@register("gelu", op=lambda x, *bias, approximate: F.gelu(x, approximate, *bias), ref=_gelu_ref)
def _draw_gelu(data):
    shape = data.draw(shapes(0, 3))
    tensors = [data.draw(arrays(shape))]
    if shape and data.draw(st.booleans()):       # the fused bias of a Linear layer, along the last axis
        tensors.append(data.draw(arrays(shape[-1:])))
    return tensors, {"approximate": data.draw(st.sampled_from(["none", "tanh"]))}


@register("clip", op=lambda x, low, high: F.clip(x, low, high),
          ref=lambda x, low, high: np.minimum(np.maximum(x, -np.inf if low is None else low), np.inf if high is None else high))
def _draw_clip(data):
    x = data.draw(arrays(data.draw(shapes(0, 3))))
    x[np.abs(np.abs(x) - 0.5) < 1e-3] += 0.01  # keep off the clip points (in place: keeps x's layout)
    low, high = data.draw(st.sampled_from([(-0.5, 0.5), (None, 0.5), (-0.5, None)]))
    return [x], {"low": low, "high": high}


def _mask_for(data, shape):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    return rng.random(broadcastable_to(data.draw, shape)) < 0.5


@register("where", op=lambda a, b, cond: F.where(cond, a, b), ref=lambda a, b, cond: np.where(cond, a, b))
def _draw_where(data):
    (a, b), _ = _binary(data)
    shape = np.broadcast_shapes(a.shape, b.shape)
    return [a, b], {"cond": _mask_for(data, shape)}


@register("masked_fill", op=lambda x, mask, value: F.masked_fill(x, mask, value),
          ref=lambda x, mask, value: np.where(mask, value, x))
def _draw_masked_fill(data):
    shape = data.draw(shapes(0, 3))
    return [data.draw(arrays(shape))], {"mask": _mask_for(data, shape), "value": data.draw(st.sampled_from([0.0, -1e4, 3.5]))}


# --- reductions and the softmax family ------------------------------------------------------------
def _reduction(domain="real", allow_tuple=True, allow_none=True):
    def draw(data):
        shape = data.draw(shapes(1, 3))
        return ([data.draw(arrays(shape, domain))],
                {"axis": data.draw(axis_of(len(shape), allow_none, allow_tuple)), "keepdims": data.draw(st.booleans())})
    return draw


register("sum", op=lambda x, axis, keepdims: F.sum(x, axis, keepdims),
         ref=lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims))(_reduction())
register("mean", op=lambda x, axis, keepdims: F.mean(x, axis, keepdims),
         ref=lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims))(_reduction())
register("max", op=lambda x, axis, keepdims: F.max(x, axis, keepdims),
         ref=lambda x, axis, keepdims: np.max(x, axis=axis, keepdims=keepdims))(_reduction("distinct"))
register("logsumexp", op=lambda x, axis, keepdims: F.logsumexp(x, axis, keepdims),
         ref=lambda x, axis, keepdims: np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims)))(_reduction())


@register("var", op=lambda x, axis, keepdims, ddof: F.var(x, axis, keepdims, ddof),
          ref=lambda x, axis, keepdims, ddof: np.var(x, axis=axis, keepdims=keepdims, ddof=ddof))
def _draw_var(data):
    (x,), kw = _reduction()(data)
    n = x.size if kw["axis"] is None else int(np.prod([x.shape[a] for a in np.atleast_1d(kw["axis"])]))
    kw["ddof"] = data.draw(st.sampled_from([0, 1])) if n > 1 else 0
    return [x], kw


def _axis_only(data):
    shape = data.draw(shapes(1, 3))
    return [data.draw(arrays(shape))], {"axis": data.draw(st.integers(-len(shape), len(shape) - 1))}


register("softmax", op=lambda x, axis: F.softmax(x, axis), ref=lambda x, axis: _softmax(x, axis))(_axis_only)
register("log_softmax", op=lambda x, axis: F.log_softmax(x, axis),
         ref=lambda x, axis: np.log(_softmax(x, axis)))(_axis_only)


# --- shape ops --------------------------------------------------------------------------------------
@register("reshape", op=lambda x, shape: F.reshape(x, shape), ref=lambda x, shape: np.reshape(x, shape))
def _draw_reshape(data):
    shape = data.draw(shapes(0, 3))
    target = data.draw(st.sampled_from([(-1,), tuple(reversed(shape)), (1,) + shape, shape + (1,)]))
    return [data.draw(arrays(shape))], {"shape": target}


@register("permute", op=lambda x, axes: F.permute(x, axes), ref=lambda x, axes: np.transpose(x, axes))
def _draw_permute(data):
    shape = data.draw(shapes(1, 4))
    return [data.draw(arrays(shape))], {"axes": tuple(data.draw(st.permutations(range(len(shape)))))}


@register("transpose", op=lambda x, axes: F.transpose(x, axes),
          ref=lambda x, axes: x.T if axes is None else np.swapaxes(x, *axes))
def _draw_transpose(data):
    shape = data.draw(shapes(1, 3))
    nd = len(shape)
    axes = data.draw(st.one_of(st.none(), st.tuples(st.integers(-nd, nd - 1), st.integers(-nd, nd - 1))))
    return [data.draw(arrays(shape))], {"axes": axes}


@register("getitem", op=lambda x, index: F.getitem(x, index), ref=lambda x, index: x[index])
def _draw_getitem(data):
    shape = data.draw(shapes(1, 3, min_side=2))
    kind = data.draw(st.sampled_from(["int", "slice", "step", "array_repeats", "mixed", "bool", "newaxis"]))
    n0 = shape[0]
    index = {
        "int": lambda: data.draw(st.integers(-n0, n0 - 1)),
        "slice": lambda: slice(data.draw(st.integers(0, n0 - 1)), None),
        "step": lambda: (Ellipsis, slice(None, None, data.draw(st.sampled_from([-1, 2])))),
        # repeated integer indices: the backward must add, not overwrite
        "array_repeats": lambda: np.array(data.draw(st.lists(st.integers(0, n0 - 1), min_size=1, max_size=6))),
        "mixed": lambda: (slice(None, None, -1), np.array([0, -1, 0])) if len(shape) > 1 else np.array([0, 0]),
        "bool": lambda: np.arange(n0) % 2 == 0,
        "newaxis": lambda: (None, slice(1, None)),
    }[kind]()
    if kind == "mixed" and len(shape) > 1:
        index = (slice(None, None, -1), np.array([0, shape[1] - 1, 0]))
    return [data.draw(arrays(shape))], {"index": index}


def _joinable(data, n_min, same):
    shape = data.draw(shapes(1, 3))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = data.draw(st.integers(n_min, 3))
    out = []
    for _ in range(n):
        s = list(shape)
        if not same:
            s[axis] = data.draw(st.integers(1, 3))
        out.append(data.draw(arrays(tuple(s))))
    return out, axis


@register("concatenate", op=lambda *xs, axis: F.concatenate(xs, axis), ref=lambda *xs, axis: np.concatenate(xs, axis))
def _draw_concatenate(data):
    xs, axis = _joinable(data, 1, same=False)
    return xs, {"axis": axis}


@register("stack", op=lambda *xs, axis: F.stack(xs, axis), ref=lambda *xs, axis: np.stack(xs, axis))
def _draw_stack(data):
    xs, _ = _joinable(data, 1, same=True)
    return xs, {"axis": data.draw(st.integers(-(xs[0].ndim + 1), xs[0].ndim))}


# split returns a list; the test joins the pieces back after weighting piece i by (i + 1), so a
# backward that routes a gradient to the wrong piece cannot pass.
@register("split", op=lambda x, sections, axis: F.concatenate(
              [p * float(i + 1) for i, p in enumerate(F.split(x, sections, axis))], axis),
          ref=lambda x, sections, axis: np.concatenate(
              [p * (i + 1) for i, p in enumerate(np.split(x, sections, axis))], axis))
def _draw_split(data):
    shape = list(data.draw(shapes(1, 3, min_side=2)))
    axis = data.draw(st.integers(0, len(shape) - 1))
    if data.draw(st.booleans()):
        shape[axis] = 2 * data.draw(st.integers(1, 3))
        sections = 2
    else:
        sections = sorted(data.draw(st.lists(st.integers(0, shape[axis]), min_size=1, max_size=3)))
    return [data.draw(arrays(tuple(shape)))], {"sections": sections, "axis": axis}


@register("pad", op=lambda x, pad_width, value: F.pad(x, pad_width, value),
          ref=lambda x, pad_width, value: np.pad(x, pad_width, constant_values=value))
def _draw_pad(data):
    shape = data.draw(shapes(1, 3))
    widths = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in shape)
    return [data.draw(arrays(shape))], {"pad_width": widths, "value": data.draw(st.sampled_from([0.0, -1.0]))}


# --- linear algebra ---------------------------------------------------------------------------------
def _matmul_ref(a, b):
    # The definition, sum_k a[..., i, k] b[..., k, j], by einsum with explicit 1-D promotion.
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    out = np.einsum("...ik,...kj->...ij", a2, b2)
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


@register("matmul", op=F.matmul, ref=_matmul_ref)
def _draw_matmul(data):
    n, k, m = (data.draw(st.integers(1, 4)) for _ in range(3))
    kind = data.draw(st.sampled_from(["2d", "batched", "broadcast", "vec_left", "vec_right", "vec_vec", "vec_mat"]))
    batch = data.draw(shapes(1, 2, max_side=3))
    sa, sb = {
        "2d": ((n, k), (k, m)),
        "batched": (batch + (n, k), batch + (k, m)),
        "broadcast": (batch + (n, k), (k, m)) if data.draw(st.booleans()) else ((1,) + (n, k), batch + (k, m)),
        "vec_left": ((k,), batch + (k, m)),
        "vec_right": (batch + (n, k), (k,)),
        "vec_vec": ((k,), (k,)),
        "vec_mat": ((k,), (k, m)),
    }[kind]
    return [data.draw(arrays(sa)), data.draw(arrays(sb))], {}


def _linear_ref(x, w, b=None):
    # y[..., j] = sum_k x[..., k] w[k, j] + b[j], written out by einsum
    out = np.einsum("...k,kj->...j", x, w)
    return out if b is None else out + b


@register("linear", op=lambda *arrays: F.linear(*arrays), ref=_linear_ref)
def _draw_linear(data):
    k, m = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    lead = data.draw(shapes(0, 2, max_side=3))
    arrays_ = [data.draw(arrays(lead + (k,))), data.draw(arrays((k, m)))]
    if data.draw(st.booleans()):
        arrays_.append(data.draw(arrays((m,))))
    return arrays_, {}


# --- layers --------------------------------------------------------------------------------------------
def _layer_norm_ref(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


@register("layer_norm", op=lambda x, w, b, eps: F.layer_norm(x, w, b, eps), ref=_layer_norm_ref)
def _draw_layer_norm(data):
    shape = data.draw(shapes(1, 3, min_side=1))
    d = shape[-1]
    return ([data.draw(arrays(shape)), data.draw(arrays((d,))), data.draw(arrays((d,)))],
            {"eps": data.draw(st.sampled_from([1e-5, 1e-6, 0.1]))})


def _group_norm_ref(x, w, b, num_groups, eps):
    """Loop over images and groups: the group's values standardised, then each channel scaled and shifted."""
    out = np.empty_like(x)
    per = x.shape[1] // num_groups
    for n in range(x.shape[0]):
        for grp in range(num_groups):
            block = x[n, grp * per:(grp + 1) * per]
            out[n, grp * per:(grp + 1) * per] = (block - block.mean()) / np.sqrt(block.var() + eps)
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    return out * w.reshape(per_channel) + b.reshape(per_channel)


@register("group_norm", op=lambda x, w, b, num_groups, eps: F.group_norm(x, num_groups, w, b, eps), ref=_group_norm_ref)
def _draw_group_norm(data):
    groups, per = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
    c = groups * per
    spatial = tuple(data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    if per == 1 and not any(n > 1 for n in spatial):
        spatial = (2,)                          # a group of one value has no spread: x_hat is 0 and flat
    shape = (data.draw(st.integers(1, 2)), c) + spatial
    return ([data.draw(arrays(shape)), data.draw(arrays((c,))), data.draw(arrays((c,)))],
            {"num_groups": groups, "eps": data.draw(st.sampled_from([1e-5, 0.1]))})


def _batch_norm_ref(x, w, b, running_mean, running_var, training, eps):
    """Per channel: the batch's own statistics (training) or the given running ones (eval)."""
    out = np.empty_like(x)
    for ch in range(x.shape[1]):
        values = x[:, ch]
        mu, var = (values.mean(), values.var()) if training else (running_mean[ch], running_var[ch])
        out[:, ch] = (values - mu) / np.sqrt(var + eps) * w[ch] + b[ch]
    return out


@register("batch_norm", op=lambda x, w, b, running_mean, running_var, training, eps: F.batch_norm(
              x, running_mean.copy(), running_var.copy(), w, b, training=training, eps=eps),
          ref=_batch_norm_ref)
def _draw_batch_norm(data):
    c = data.draw(st.integers(1, 3))
    spatial = tuple(data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    batch = data.draw(st.integers(2 if not any(n > 1 for n in spatial) else 1, 3))   # >= 2 values per channel
    shape = (batch, c) + spatial
    return ([data.draw(arrays(shape)), data.draw(arrays((c,))), data.draw(arrays((c,)))],
            {"running_mean": data.draw(arrays((c,))), "running_var": 0.5 + np.abs(data.draw(arrays((c,)))),
             "training": data.draw(st.booleans()), "eps": data.draw(st.sampled_from([1e-5, 0.1]))})


def _dropout_ref(x, p, seed):
    keep = np.random.default_rng(seed).random(x.shape) >= p
    return x * keep / (1 - p)


@register("dropout", op=lambda x, p, seed: F.dropout(x, p, True, seed=seed), ref=_dropout_ref)
def _draw_dropout(data):
    return ([data.draw(arrays(data.draw(shapes(1, 3))))],
            {"p": data.draw(st.sampled_from([0.1, 0.5, 0.9])), "seed": data.draw(st.integers(0, 1000))})


@register("embedding", op=lambda w, ids: F.embedding(ids, w), ref=lambda w, ids: w[ids])
def _draw_embedding(data):
    v, d = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4))
    ids_shape = data.draw(shapes(1, 2, max_side=4))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    return [data.draw(arrays((v, d)))], {"ids": rng.integers(0, v, ids_shape)}  # repeats are likely


# --- losses -----------------------------------------------------------------------------------------------
def _cross_entropy_ref(logits, target, ignore_index, label_smoothing, reduction):
    c = logits.shape[-1]
    flat, t = logits.reshape(-1, c), target.reshape(-1)
    losses = []
    for row, label in zip(flat, t):
        if label == ignore_index:
            losses.append(0.0)  # an ignored position contributes nothing, and is not counted in the mean
            continue
        log_p = row - np.log(np.sum(np.exp(row - row.max()))) - row.max()
        q = np.full(c, label_smoothing / c)
        q[label] += 1 - label_smoothing
        losses.append(-(q * log_p).sum())
    losses = np.array(losses)
    if reduction == "none":
        return losses.reshape(target.shape)
    return losses.sum() / (np.sum(t != ignore_index) if reduction == "mean" else 1)


@register("cross_entropy", op=lambda x, target, ignore_index, label_smoothing, reduction: F.cross_entropy(
              x, target, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction),
          ref=_cross_entropy_ref)
def _draw_cross_entropy(data):
    lead = data.draw(shapes(1, 2, max_side=4))
    c = data.draw(st.integers(1, 5))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    target = rng.integers(0, c, lead)
    if data.draw(st.booleans()):
        target.reshape(-1)[1:][rng.random(target.size - 1) < 0.4] = -100  # keep the first one valid
    return ([data.draw(arrays(lead + (c,)))],
            {"target": target, "ignore_index": -100, "label_smoothing": data.draw(st.sampled_from([0.0, 0.1, 1.0])),
             "reduction": data.draw(REDUCTIONS)})


def _reduce_ref(losses, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction](losses)


REDUCTIONS = st.sampled_from(["mean", "sum", "none"])


@register("mse_loss", op=lambda p, t, reduction: F.mse_loss(p, t, reduction=reduction),
          ref=lambda p, t, reduction: _reduce_ref((p - t) ** 2, reduction))
def _draw_mse(data):
    shape = data.draw(shapes(0, 3))
    return [data.draw(arrays(shape)), data.draw(arrays(shape))], {"reduction": data.draw(REDUCTIONS)}


def _bce_ref(x, y, reduction):
    p = 1 / (1 + np.exp(-x))
    return _reduce_ref(-(y * np.log(p) + (1 - y) * np.log(1 - p)), reduction)


@register("binary_cross_entropy_with_logits",
          op=lambda x, y, reduction: F.binary_cross_entropy_with_logits(x, y, reduction=reduction), ref=_bce_ref)
def _draw_bce(data):
    shape = data.draw(shapes(0, 3))
    target = data.draw(arrays(shape, "probability"))  # the same shape: a broadcast target is refused (tests/test_numerics.py)
    return [data.draw(arrays(shape)), target], {"reduction": data.draw(REDUCTIONS)}


# --- attention ------------------------------------------------------------------------------------------
def _attention_ref(q, k, v, mask, causal, scale):
    """Loops over every (batch, query) row: the formula with nothing fused."""
    nq, nk = q.shape[-2], k.shape[-2]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q, k, v = (np.broadcast_to(t, batch + t.shape[-2:]) for t in (q, k, v))
    allowed = np.ones(batch + (nq, nk), bool)
    if mask is not None:
        allowed = allowed & mask
    if causal:
        allowed = allowed & (np.arange(nk)[None, :] <= np.arange(nq)[:, None] + (nk - nq))
    out = np.zeros(batch + (nq, v.shape[-1]))
    for idx in np.ndindex(*batch):
        for i in range(nq):
            keys = np.flatnonzero(allowed[idx + (i,)])
            if keys.size == 0:
                continue  # fully masked row: output 0
            tau = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
            scores = np.array([q[idx + (i,)] @ k[idx + (j,)] for j in keys]) * tau
            w = np.exp(scores - scores.max())
            out[idx + (i,)] = (w / w.sum()) @ v[idx][keys]
    return out


@register("scaled_dot_product_attention",
          op=lambda q, k, v, mask, causal, scale: F.scaled_dot_product_attention(q, k, v, mask=mask, causal=causal,
                                                                                 scale=scale),
          ref=_attention_ref)
def _draw_attention(data):
    batch = data.draw(shapes(0, 2, max_side=3))
    nq, nk = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    d, dv = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    kind = data.draw(st.sampled_from(["none", "causal", "mask", "mask_rows_empty"]))
    mask = None
    if kind in ("mask", "mask_rows_empty"):
        rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
        mask = rng.random((batch if data.draw(st.booleans()) else ()) + (nq, nk)) < 0.6  # shared or per batch entry
        if kind == "mask_rows_empty":
            mask[..., 0, :] = False  # a query that may attend to nothing
    kv_batch = batch if data.draw(st.booleans()) else ()  # keys shared across the batch broadcast
    return ([data.draw(arrays(batch + (nq, d))), data.draw(arrays(kv_batch + (nk, d))),
             data.draw(arrays(kv_batch + (nk, dv)))],
            {"mask": mask, "causal": kind == "causal", "scale": data.draw(st.sampled_from([None, 0.3, 2.0]))})


# --- convolution and pooling ---------------------------------------------------------------------------
# The references loop over every output position and apply the formula to one window at a time:
# no im2col, no strided views. An int stride / padding / kernel means the same value for H and W.
def _hw(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _hw_option(data, low, high):
    """An int, or an (h, w) pair that is usually unequal: both spellings must work."""
    if data.draw(st.booleans()):
        return data.draw(st.integers(low, high))
    return (data.draw(st.integers(low, high)), data.draw(st.integers(low, high)))


def _conv2d_ref(x, weight, *bias, stride, padding):
    (sh, sw), (ph, pw) = _hw(stride), _hw(padding)
    b, c, h, w = x.shape
    d, _, kh, kw = weight.shape
    x_pad = np.zeros((b, c, h + 2 * ph, w + 2 * pw))
    x_pad[:, :, ph:ph + h, pw:pw + w] = x
    h_out, w_out = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((b, d, h_out, w_out))
    for n in range(b):
        for o in range(d):
            for i in range(h_out):
                for j in range(w_out):
                    window = x_pad[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    out[n, o, i, j] = np.sum(window * weight[o]) + (bias[0][o] if bias else 0.0)
    return out


@register("conv2d", op=lambda x, weight, *bias, stride, padding: F.conv2d(
              x, weight, bias[0] if bias else None, stride=stride, padding=padding),
          ref=_conv2d_ref)
def _draw_conv2d(data):
    b, c, d = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    padding, stride = _hw_option(data, 0, 2), _hw_option(data, 1, 3)
    ph, pw = _hw(padding)
    # the smallest image the kernel still fits once padded, up to 5 (odd sizes, not multiples of the stride)
    h = data.draw(st.integers(max(1, kh - 2 * ph), 5))
    w = data.draw(st.integers(max(1, kw - 2 * pw), 5))
    inputs = [data.draw(arrays((b, c, h, w))), data.draw(arrays((d, c, kh, kw)))]
    if data.draw(st.booleans()):
        inputs.append(data.draw(arrays((d,))))
    return inputs, {"stride": stride, "padding": padding}


def _conv_transpose2d_ref(x, weight, *bias, stride, padding, output_padding):
    """Each input pixel scatters weight[d] * x[b, d, i, j] onto the output, then the border is cut."""
    (sh, sw), (ph, pw), (oh, ow) = _hw(stride), _hw(padding), _hw(output_padding)
    b, d, h, w = x.shape
    _, c, kh, kw = weight.shape
    full = np.zeros((b, c, (h - 1) * sh + kh + oh, (w - 1) * sw + kw + ow))
    for n in range(b):
        for i in range(h):
            for j in range(w):
                for ch in range(d):
                    full[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += x[n, ch, i, j] * weight[ch]
    out = full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw]
    return out + (bias[0][None, :, None, None] if bias else 0.0)


@register("conv_transpose2d", op=lambda x, weight, *bias, stride, padding, output_padding: F.conv_transpose2d(
              x, weight, bias[0] if bias else None, stride=stride, padding=padding, output_padding=output_padding),
          ref=_conv_transpose2d_ref)
def _draw_conv_transpose2d(data):
    b, d, c = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    stride = _hw_option(data, 1, 3)
    sh, sw = _hw(stride)
    output_padding = (data.draw(st.integers(0, sh - 1)), data.draw(st.integers(0, sw - 1)))
    h, w = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    # padding may cut up to all but one row / column of the uncut output
    full_h, full_w = (h - 1) * sh + kh + output_padding[0], (w - 1) * sw + kw + output_padding[1]
    padding = (data.draw(st.integers(0, (full_h - 1) // 2)), data.draw(st.integers(0, (full_w - 1) // 2)))
    inputs = [data.draw(arrays((b, d, h, w))), data.draw(arrays((d, c, kh, kw)))]
    if data.draw(st.booleans()):
        inputs.append(data.draw(arrays((c,))))
    return inputs, {"stride": stride, "padding": padding, "output_padding": output_padding}


def _upsample_ref(x, scale_factor, mode):
    """PyTorch's rule, output pixel by output pixel (align_corners=False for bilinear)."""
    fh, fw = _hw(scale_factor)
    b, c, h, w = x.shape
    out = np.zeros((b, c, h * fh, w * fw))
    for o in range(h * fh):
        for q in range(w * fw):
            if mode == "nearest":
                out[:, :, o, q] = x[:, :, o // fh, q // fw]
                continue
            ty, tx = max((o + 0.5) / fh - 0.5, 0.0), max((q + 0.5) / fw - 0.5, 0.0)
            y0, x0 = int(math.floor(ty)), int(math.floor(tx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            ay, ax = ty - y0, tx - x0
            out[:, :, o, q] = ((1 - ay) * (1 - ax) * x[:, :, y0, x0] + (1 - ay) * ax * x[:, :, y0, x1]
                               + ay * (1 - ax) * x[:, :, y1, x0] + ay * ax * x[:, :, y1, x1])
    return out


@register("upsample", op=lambda x, scale_factor, mode: F.upsample(x, scale_factor, mode), ref=_upsample_ref)
def _draw_upsample(data):
    shape = tuple(data.draw(st.integers(1, n)) for n in (2, 2, 4, 4))
    return [data.draw(arrays(shape))], {"scale_factor": _hw_option(data, 1, 3),
                                        "mode": data.draw(st.sampled_from(["nearest", "bilinear"]))}


def _pool_ref(reduce):
    def ref(x, kernel_size, stride):
        (kh, kw) = _hw(kernel_size)
        (sh, sw) = (kh, kw) if stride is None else _hw(stride)
        b, c, h, w = x.shape
        h_out, w_out = (h - kh) // sh + 1, (w - kw) // sw + 1
        out = np.zeros((b, c, h_out, w_out))
        for i in range(h_out):
            for j in range(w_out):
                out[:, :, i, j] = reduce(x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw], axis=(2, 3))
        return out
    return ref


def _draw_pool(domain):
    def draw(data):
        kernel_size = _hw_option(data, 1, 3)
        stride = data.draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
        kh, kw = _hw(kernel_size)
        shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)),
                 data.draw(st.integers(kh, 6)), data.draw(st.integers(kw, 6)))
        return [data.draw(arrays(shape, domain))], {"kernel_size": kernel_size, "stride": stride}
    return draw


register("avg_pool2d", op=lambda x, kernel_size, stride: F.avg_pool2d(x, kernel_size, stride),
         ref=_pool_ref(np.mean))(_draw_pool("real"))
# "distinct" values: no two entries of a window within the finite-difference step of each other
register("max_pool2d", op=lambda x, kernel_size, stride: F.max_pool2d(x, kernel_size, stride),
         ref=_pool_ref(np.max))(_draw_pool("distinct"))
