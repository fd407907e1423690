"""Matrix multiplication, batched and broadcast like NumPy's matmul.

For a (..., n, k) and b (..., k, m), y = a @ b is (..., n, m). With G = dL/dy:
    dL/da = G @ b^T      (..., n, k)
    dL/db = a^T @ G      (..., k, m)
each then summed over the batch axes that broadcasting added (unbroadcast). A 1-D operand
is treated as a row (on the left) or a column (on the right) and the extra axis removed,
exactly as NumPy does, by reshapes around the 2-D rule.
"""
from __future__ import annotations

from ..tensor import Tensor
from ._common import broadcast_shape, tensors_for, unbroadcast
from .shape import reshape

__all__ = ["matmul"]


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

    def backward(g):
        return unbroadcast(g @ _swap_last(b.data), a.shape), unbroadcast(_swap_last(a.data) @ g, b.shape)
    return Tensor.from_op(a.data @ b.data, (a, b), backward, "matmul")


def _matmul_shared_weight(a, b):
    """(..., n, k) @ (k, m): one matrix shared by every row of every batch entry (a Linear layer).

    Same math as above, arranged as single large products: fold the batch axes into rows,
    A = a.reshape(R, k) with R = prod(...) * n. Then dL/db = A^T G is one (k x R)(R x m) product,
    instead of a batch of (k x n)(n x m) products summed afterwards over the batch (which also
    builds a (..., k, m) temporary). Same result, several times faster on a CPU.
    """
    k, m = b.shape
    rows = a.data.reshape(-1, k)

    def backward(g):
        g_rows = g.reshape(-1, m)
        return (g_rows @ b.data.T).reshape(a.shape), rows.T @ g_rows
    out = (rows @ b.data).reshape(a.shape[:-1] + (m,))
    return Tensor.from_op(out, (a, b), backward, "matmul")
