"""Matrix multiplication, batched and broadcast like NumPy's matmul; and the Linear layer's op, x W + b.

For a (..., n, k) and b (..., k, m), y = a @ b is (..., n, m). With G = dL/dy:
    dL/da = G @ b^T      (..., n, k)
    dL/db = a^T @ G      (..., k, m)
each then summed over the batch axes that broadcasting added (unbroadcast). A 1-D operand
is treated as a row (on the left) or a column (on the right) and the extra axis removed,
exactly as NumPy does, by reshapes around the 2-D rule.
"""
from __future__ import annotations

import math

from ..tensor import Tensor
from ._common import broadcast_shape, product_threads, tensors_for, unbroadcast
from .shape import reshape

__all__ = ["linear", "matmul"]


def _swap_last(a):
    return a.swapaxes(-1, -2)


def matmul(a, b) -> Tensor:
    """a @ b: a (..., n, k), b (..., k, m) -> (..., n, m); dL/da = G b^T, dL/db = a^T G (see above)."""
    a, b = tensors_for("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dimension, got shapes {a.shape} and {b.shape}")
    if a.ndim == 1 and b.ndim == 1:
        return reshape(matmul(reshape(a, (1, a.shape[0])), reshape(b, (b.shape[0], 1))), ())
    if a.ndim == 1:
        return reshape(matmul(reshape(a, (1, a.shape[0])), b), b.shape[:-2] + b.shape[-1:])
    if b.ndim == 1:
        return reshape(matmul(a, reshape(b, (b.shape[0], 1))), a.shape[:-1])
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: inner dimensions differ: a is {a.shape} (k={a.shape[-1]}) and b is "
                         f"{b.shape} (k={b.shape[-2]}); expected a (..., n, k) @ b (..., k, m)")
    broadcast_shape("matmul (batch axes)", a.shape[:-2], b.shape[:-2])
    if b.ndim == 2 and a.ndim > 2:
        return linear(a, b)      # one matrix shared by every row: a Linear layer's product (below)

    per_call = a.shape[-2] * a.shape[-1] * b.shape[-1]     # multiply-adds of one product in the batch

    def backward(g):
        with product_threads(g, per_call):
            return unbroadcast(g @ _swap_last(b.data), a.shape), unbroadcast(_swap_last(a.data) @ g, b.shape)
    with product_threads(a.data, per_call):
        out = a.data @ b.data
    return Tensor.from_op(out, (a, b), backward, "matmul")


def linear(x, weight, bias=None) -> Tensor:
    """y = x W + b, one op: x (..., k), W (k, m), b (m,) or None -> (..., m).

    The rows of every batch entry share one W, so the batch axes are folded into rows first,
    X = x.reshape(R, k) with R = prod(...): each product below is one large (R x k)(k x m) GEMM, and
    dL/dW = X^T G is one product instead of a batch of (k x n)(n x m) products summed afterwards
    (which would also build a (..., k, m) temporary). matmul(a, W) with a 2-D W comes here too.
    The same math as matmul(x, W) + b, with the bias added into the product's fresh output array
    in place: no second (..., m) array, and one node instead of two in the graph. Backward, with
    the rows of x and of G = dL/dy flattened to (R, k) and (R, m):
        dL/dx = G W^T,     dL/dW = X^T G,     dL/db = sum of G over the rows
    """
    x, weight, *rest = tensors_for("linear", x, weight, *(() if bias is None else (bias,)))
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be (in_features, out_features), got shape {weight.shape}")
    k, m = weight.shape
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"linear: x has shape {x.shape}, expected (..., {k}) to match weight {weight.shape}")
    parents = (x, weight)
    if bias is not None:
        (bias,) = rest
        if bias.shape != (m,):
            raise ValueError(f"linear: bias has shape {bias.shape}, expected ({m},) to match weight {weight.shape}")
        parents += (bias,)
    rows = x.data.reshape(math.prod(x.shape[:-1]), k)    # (R, k); -1 would be ambiguous when k = 0
    size = rows.shape[0] * k * m          # multiply-adds: small products run on one BLAS thread
    with product_threads(rows, size):
        out = rows @ weight.data
    if bias is not None:
        out += bias.data         # in place, into the product's own output

    def backward(g):
        g_rows = g.reshape(-1, m)
        with product_threads(g, size):
            grads = ((g_rows @ weight.data.T).reshape(x.shape), rows.T @ g_rows)
        return grads + ((g_rows.sum(axis=0),) if bias is not None else ())
    return Tensor.from_op(out.reshape(x.shape[:-1] + (m,)), parents, backward, "linear")
