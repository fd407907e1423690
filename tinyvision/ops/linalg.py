"""Matrix multiplication, batched and broadcast like NumPy's matmul; and the Linear layer's op, x W + b.

For a (..., n, k) and b (..., k, m), y = a @ b is (..., n, m). With G = dL/dy:
    dL/da = G @ b^T      (..., n, k)
    dL/db = a^T @ G      (..., k, m)
each then summed over the batch axes that broadcasting added (unbroadcast). A 1-D operand
is treated as a row (on the left) or a column (on the right) and the extra axis removed,
exactly as NumPy does, by reshapes around the 2-D rule.
"""
from __future__ import annotations

from ..tensor import Tensor
from ._common import blas_threads_for, broadcast_shape, tensors_for, unbroadcast
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
        return _matmul_shared_weight(a, b)

    per_call = a.shape[-2] * a.shape[-1] * b.shape[-1]     # multiply-adds of one product in the batch

    def backward(g):
        with blas_threads_for(g, per_call):
            return unbroadcast(g @ _swap_last(b.data), a.shape), unbroadcast(_swap_last(a.data) @ g, b.shape)
    with blas_threads_for(a.data, per_call):
        out = a.data @ b.data
    return Tensor.from_op(out, (a, b), backward, "matmul")


def _matmul_shared_weight(a, b):
    """(..., n, k) @ (k, m): one matrix shared by every row of every batch entry (a Linear layer).

    Same math as above, arranged as single large products: fold the batch axes into rows,
    A = a.reshape(R, k) with R = prod(...) * n. Then dL/db = A^T G is one (k x R)(R x m) product,
    instead of a batch of (k x n)(n x m) products summed afterwards over the batch (which also
    builds a (..., k, m) temporary). Same result, several times faster on a CPU.
    """
    k, m = b.shape
    rows = a.data.reshape(-1, k)

    size = rows.shape[0] * k * m

    def backward(g):
        g_rows = g.reshape(-1, m)
        with blas_threads_for(g, size):
            return (g_rows @ b.data.T).reshape(a.shape), rows.T @ g_rows
    with blas_threads_for(rows, size):
        out = (rows @ b.data).reshape(a.shape[:-1] + (m,))
    return Tensor.from_op(out, (a, b), backward, "matmul")


def linear(x, weight, bias=None) -> Tensor:
    """y = x W + b, one op: x (..., k), W (k, m), b (m,) or None -> (..., m).

    The same math as matmul(x, W) + b, with the bias added into the product's fresh output array
    in place: no second (..., m) array, and one node instead of two in the graph. Backward, with
    the rows of x and of G = dL/dy flattened to (R, k) and (R, m):
        dL/dx = G W^T,     dL/dW = X^T G,     dL/db = sum of G over the rows
    """
    x, weight = tensors_for("linear", x, weight)
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be (in_features, out_features), got shape {weight.shape}")
    k, m = weight.shape
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"linear: x has shape {x.shape}, expected (..., {k}) to match weight {weight.shape}")
    parents = (x, weight)
    if bias is not None:
        (bias,) = tensors_for("linear", bias)
        if bias.shape != (m,):
            raise ValueError(f"linear: bias has shape {bias.shape}, expected ({m},) to match weight {weight.shape}")
        parents += (bias,)
    rows = x.data.reshape(-1, k)
    size = rows.shape[0] * k * m          # multiply-adds: small products run on one BLAS thread
    with blas_threads_for(rows, size):
        out = rows @ weight.data
    if bias is not None:
        out += bias.data         # in place, into the product's own output

    def backward(g):
        g_rows = g.reshape(-1, m)
        with blas_threads_for(g, size):
            grads = ((g_rows @ weight.data.T).reshape(x.shape), rows.T @ g_rows)
        return grads + ((g_rows.sum(axis=0),) if bias is not None else ())
    return Tensor.from_op(out.reshape(x.shape[:-1] + (m,)), parents, backward, "linear")
