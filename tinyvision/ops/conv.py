"""Ops over sliding windows of an image: 2-D convolution (by im2col) and pooling.

A window op looks at every kh x kw window of each image, one every s_h rows and s_w columns,
after a border of p_h rows and p_w columns of zeros is added on each side. The windows of an
H x W image form an H_out x W_out grid:

    H_out = (H + 2 p_h - kh) // s_h + 1,        W_out = (W + 2 p_w - kw) // s_w + 1

Convolution (LeCun et al. 1998; as in every deep-learning library it is a cross-correlation,
the kernel is not flipped). x: (B, C, H, W), weight: (D, C, kh, kw) (PyTorch's layout), bias: (D,):

    y[b, d, i, j] = bias[d] + sum_{c, u, v} weight[d, c, u, v] x_pad[b, c, i s_h + u, j s_w + v]

im2col (Chellapilla, Puri & Simard 2006) turns that sum into one matrix product: copy every
window into a row,

    cols[b, (i, j), (c, u, v)] = x_pad[b, c, i s_h + u, j s_w + v]      (B, H_out W_out, C kh kw)

so that y = cols @ w_mat^T + bias with w_mat = weight.reshape(D, C kh kw). The copy costs kh kw
times the input's memory; in exchange the arithmetic is one large matmul, which is what BLAS
(and cuBLAS) do fastest.

Pooling replaces the weighted sum over a window of one channel by its mean or its maximum.

Every backward here ends in the same movement, the adjoint of cutting windows (col2im): each
pixel receives the sum of the gradients of all the windows it fell into (windows overlap when
the stride is smaller than the kernel), and the gradient of the zero border is dropped.
"""
from __future__ import annotations

import numpy as np

from ..backend import xp_of
from ..checks import check_int_pair
from ..tensor import Tensor
from ._common import tensors_for

__all__ = ["conv2d", "conv_transpose2d", "avg_pool2d", "max_pool2d",
           # raw-array helpers (not differentiable ops): the window view, its adjoint, im2col
           "pair", "sliding_windows", "fold_windows", "im2col"]


# --- argument checks ------------------------------------------------------------------------------
_MAX_VALUES = 2**37    # 512 GiB of float32: refused by name rather than deep inside NumPy's pad


def pair(op: str, name: str, value, minimum: int) -> tuple:
    """An int or an (h, w) pair of ints, each >= minimum, as an (h, w) tuple of ints."""
    return check_int_pair(op, name, value, minimum)


def _check_image(op: str, name: str, t: Tensor, layout: str = "(B, C, H, W)"):
    if t.ndim != 4:
        raise ValueError(f"{op}: {name} must be 4-D {layout}, got shape {t.shape}")


def _check_window_fits(op: str, shape, kernel, padding):
    """The kernel must fit inside the (padded) image at least once: H + 2 p_h >= kh, same for W."""
    h, w = shape[2] + 2 * padding[0], shape[3] + 2 * padding[1]
    if shape[0] * shape[1] * h * w > _MAX_VALUES:
        raise ValueError(f"{op}: padding {padding} makes the {shape} input {h}x{w} per channel, "
                         f"{shape[0] * shape[1] * h * w:.3g} values: too large to allocate")
    if kernel[0] > h or kernel[1] > w:
        what = f"padded input {h}x{w} (x is {shape}, padding {padding})" if any(padding) else \
            f"input {h}x{w} (x is {shape})"
        raise ValueError(f"{op}: the {kernel[0]}x{kernel[1]} kernel is larger than the {what}; "
                         "use a smaller kernel, more padding or a larger image")


def _conv_args(op: str, x, weight, bias, transposed: bool):
    """(tensors, x, weight, bias) checked for a convolution: 4-D x and weight (D, C, kh, kw), x's channels
    matching the weight's input axis (C for conv2d, D for the transposed one), bias one per output channel."""
    tensors = tensors_for(op, x, weight, *([] if bias is None else [bias]))
    x, weight = tensors[0], tensors[1]
    bias = tensors[2] if bias is not None else None
    _check_image(op, "x", x)
    _check_image(op, "weight", weight, "(D, C, kh, kw)")
    d, c = weight.shape[:2]
    (name_in, n_in), (name_out, n_out) = ((("D", d), ("C", c)) if transposed else (("C", c), ("D", d)))
    layout = "(D in, C out, kh, kw)" if transposed else "(D out, C in, kh, kw)"
    if x.shape[1] != n_in:
        raise ValueError(f"{op}: x has {name_in}={x.shape[1]} channels (shape {x.shape}) but weight expects "
                         f"{name_in}={n_in} (shape {weight.shape}, laid out {layout})")
    if bias is not None and bias.shape != (n_out,):
        raise ValueError(f"{op}: bias has shape {bias.shape}, expected ({n_out},), one per output channel "
                         f"{name_out} of weight {weight.shape}")
    return tensors, x, weight, bias


# --- windows: the view, its adjoint, im2col -------------------------------------------------------
def _as_strided(array, shape, strides):
    """NumPy's or CuPy's as_strided (CuPy's has no `writeable` flag; NumPy's view is made read-only,
    because its windows overlap in memory and a write through one would change others)."""
    if xp_of(array) is np:
        return np.lib.stride_tricks.as_strided(array, shape, strides, writeable=False)
    return xp_of(array).lib.stride_tricks.as_strided(array, shape, strides)


def sliding_windows(x, kernel, stride):
    """Every kh x kw window of x (B, C, H, W), as a view (B, C, H_out, W_out, kh, kw); no copy.

    Element [b, c, i, j, u, v] is x[b, c, i s_h + u, j s_w + v]. Moving one window down (i + 1)
    moves s_h rows in memory, moving one row inside the window (u + 1) moves one row, so the
    view needs no data of its own, only those strides (in bytes, read off x: any layout works).
    """
    (kh, kw), (sh, sw) = kernel, stride
    b, c, h, w = x.shape
    h_out, w_out = (h - kh) // sh + 1, (w - kw) // sw + 1
    s_b, s_c, s_row, s_col = x.strides
    return _as_strided(x, (b, c, h_out, w_out, kh, kw), (s_b, s_c, sh * s_row, sw * s_col, s_row, s_col))


def fold_windows(grad_windows, image_shape, stride):
    """The adjoint of sliding_windows: add each window's gradient onto the pixels it covers.

    grad_windows: (B, C, H_out, W_out, kh, kw) -> (B, C, H, W). Offset (u, v) of window (i, j)
    is pixel (u + i s_h, v + j s_w), so for one fixed offset the windows touch distinct pixels,
    one strided slice of the image: a loop over the kh kw offsets adds whole slices at once.
    Overlapping windows meet at the same pixel in different offsets and so are summed.
    """
    xp = xp_of(grad_windows)
    _, _, h_out, w_out, kh, kw = grad_windows.shape
    sh, sw = stride
    out = xp.zeros(image_shape, dtype=grad_windows.dtype)
    for u in range(kh):
        for v in range(kw):
            out[:, :, u:u + sh * (h_out - 1) + 1:sh, v:v + sw * (w_out - 1) + 1:sw] += grad_windows[:, :, :, :, u, v]
    return out


def im2col(x, kernel, stride):
    """cols[b, (i, j), (c, u, v)] = x[b, c, i s_h + u, j s_w + v]: (B, H_out W_out, C kh kw), a copy.

    x is the already padded image. Row (i, j) of image b is its window (i, j), flattened in
    (c, u, v) order, the order of the columns of weight.reshape(D, C kh kw).
    """
    windows = sliding_windows(x, kernel, stride)
    b, c, h_out, w_out, kh, kw = windows.shape
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(b, h_out * w_out, c * kh * kw)


# --- convolution ------------------------------------------------------------------------------------
def conv2d(x, weight, bias=None, stride=1, padding=0) -> Tensor:
    """2-D convolution (cross-correlation) by im2col.   x: (B, C, H, W) -> (B, D, H_out, W_out).

    weight: (D, C, kh, kw), bias: (D,) or None; stride and padding: an int or an (h, w) pair.

    Forward, with L = H_out W_out windows and K = C kh kw numbers per window:
        cols = im2col(pad(x))       (B, L, K)
        Y = cols @ w_mat^T + bias   (B, L, D),  w_mat = weight.reshape(D, K);  y = Y moved to (B, D, H_out, W_out)

    Backward. Y is a matmul, so with G = dL/dY (B, L, D), g moved into Y's layout:
        dL/dw_mat = sum_b G_b^T cols_b          (D, K): one matmul over the B L rows stacked
        dL/dbias  = sum over b, i, j of g       (D,)
        dL/dcols  = G @ w_mat                   (B, L, K)
    cols is a copy of pixels, pixel (r, q) appearing once in every window that covers it, so
        dL/dx_pad[b, c, r, q] = sum over (i, j, u, v) with i s_h + u = r, j s_w + v = q
                                of dL/dcols[b, (i, j), (c, u, v)]                     (col2im)
    and dL/dx is dL/dx_pad with the padded border cut off (those zeros are constants).
    """
    tensors, x, weight, bias = _conv_args("conv2d", x, weight, bias, transposed=False)
    d, c, kh, kw = weight.shape
    stride = pair("conv2d", "stride", stride, 1)
    ph, pw = pair("conv2d", "padding", padding, 0)
    _check_window_fits("conv2d", x.shape, (kh, kw), (ph, pw))

    xp = xp_of(x.data)
    b, _, h, w = x.shape
    x_pad = xp.pad(x.data, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    padded_shape = x_pad.shape
    cols = im2col(x_pad, (kh, kw), stride)                  # (B, L, K)
    h_out, w_out = (padded_shape[2] - kh) // stride[0] + 1, (padded_shape[3] - kw) // stride[1] + 1
    w_mat = weight.data.reshape(d, c * kh * kw)             # (D, K)
    y = cols @ w_mat.T                                      # (B, L, D)
    if bias is not None:
        y = y + bias.data
    y = xp.ascontiguousarray(y.transpose(0, 2, 1).reshape(b, d, h_out, w_out))

    def backward(g):
        g_mat = g.reshape(b, d, h_out * w_out).transpose(0, 2, 1)              # G: (B, L, D), Y's layout
        d_w = g_mat.reshape(b * h_out * w_out, d).T @ cols.reshape(b * h_out * w_out, c * kh * kw)  # sum_b G_b^T cols_b
        d_cols = g_mat @ w_mat                                                   # (B, L, K)
        d_windows = d_cols.reshape(b, h_out, w_out, c, kh, kw).transpose(0, 3, 1, 2, 4, 5)
        d_x = fold_windows(d_windows, padded_shape, stride)[:, :, ph:ph + h, pw:pw + w]   # col2im, crop
        grads = [xp.ascontiguousarray(d_x), d_w.reshape(weight.shape)]
        if bias is not None:
            grads.append(g.sum(axis=(0, 2, 3)))
        return tuple(grads)
    return Tensor.from_op(y, tuple(tensors), backward, "conv2d")


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0) -> Tensor:
    """Transposed convolution: the adjoint of conv2d's map x -> y, used to grow an image (a decoder).

    x: (B, D, H, W), weight: (D, C, kh, kw) (PyTorch's layout: in channels first), bias: (C,) or None
    -> (B, C, H_out, W_out),   H_out = (H - 1) s_h - 2 p_h + kh + output_padding_h   (likewise W).

    Every input pixel paints its kernel, scaled by its value, onto the output at a stride:
        y_full[b, c, i s_h + u, j s_w + v] += sum_d x[b, d, i, j] weight[d, c, u, v]
    then the border of p rows and columns is cut from each side (output_padding extra rows and
    columns at the bottom and right: stride s maps several output sizes to one input size, and
    this picks one). Where the kernel is larger than the stride the paintings overlap and add.

    It is conv2d's input gradient as a forward pass: with the same weight, stride and padding,
        <conv2d(z, weight), x> = <z, conv_transpose2d(x, weight)>   for every z and x
    (tests/test_conv.py checks that identity). So its backward is conv2d's forward:
        dL/dx[b, d, i, j]   = sum_{c, u, v} weight[d, c, u, v] g_full[b, c, i s_h + u, j s_w + v]
        dL/dweight[d, c, u, v] = sum_{b, i, j} x[b, d, i, j] g_full[b, c, i s_h + u, j s_w + v]
        dL/dbias[c]         = sum over b, i, j of g[b, c, i, j]
    with g_full = g placed back into the uncut (H_full, W_full) frame (zeros on the cut border).
    Forward and backward are the same two moves as conv2d's, in the other order: one matmul and a
    fold (forward), windows and one matmul (backward).
    """
    tensors, x, weight, bias = _conv_args("conv_transpose2d", x, weight, bias, transposed=True)
    d, c, kh, kw = weight.shape
    sh, sw = pair("conv_transpose2d", "stride", stride, 1)
    ph, pw = pair("conv_transpose2d", "padding", padding, 0)
    oph, opw = pair("conv_transpose2d", "output_padding", output_padding, 0)
    if oph >= sh or opw >= sw:
        raise ValueError(f"conv_transpose2d: output_padding {(oph, opw)} must be smaller than the stride {(sh, sw)} "
                         "(it chooses among the output sizes one stride maps to the same input size)")
    b, _, h, w = x.shape
    h_full, w_full = (h - 1) * sh + kh + oph, (w - 1) * sw + kw + opw
    h_out, w_out = h_full - 2 * ph, w_full - 2 * pw
    if h_out < 1 or w_out < 1:
        raise ValueError(f"conv_transpose2d: padding {(ph, pw)} cuts the whole {h_full}x{w_full} output of x {x.shape} "
                         f"with a {kh}x{kw} kernel; the output would be {h_out}x{w_out}")
    if b * c * h_full * w_full > _MAX_VALUES:
        raise ValueError(f"conv_transpose2d: the output of x {x.shape} would hold {b * c * h_full * w_full:.3g} "
                         "values: too large to allocate")

    xp = xp_of(x.data)
    w_mat = weight.data.reshape(d, c * kh * kw)                          # (D, K), K = C kh kw
    rows = x.data.transpose(0, 2, 3, 1).reshape(b * h * w, d)           # one row per input pixel
    paint = (rows @ w_mat).reshape(b, h, w, c, kh, kw).transpose(0, 3, 1, 2, 4, 5)   # (B, C, H, W, kh, kw)
    y_full = fold_windows(paint, (b, c, h_full, w_full), (sh, sw))
    y = y_full[:, :, ph:ph + h_out, pw:pw + w_out]
    if bias is not None:
        y = y + bias.data[:, None, None]
    y = xp.ascontiguousarray(y)

    def backward(g):
        g_full = xp.zeros((b, c, h_full, w_full), dtype=g.dtype)
        g_full[:, :, ph:ph + h_out, pw:pw + w_out] = g
        windows = sliding_windows(g_full, (kh, kw), (sh, sw))[:, :, :h, :w]        # (B, C, H, W, kh, kw)
        g_rows = windows.transpose(0, 2, 3, 1, 4, 5).reshape(b * h * w, c * kh * kw)   # (B H W, K)
        d_x = (g_rows @ w_mat.T).reshape(b, h, w, d).transpose(0, 3, 1, 2)
        d_w = rows.T @ g_rows                                                      # (D, K)
        grads = [xp.ascontiguousarray(d_x), d_w.reshape(weight.shape)]
        if bias is not None:
            grads.append(g.sum(axis=(0, 2, 3)))
        return tuple(grads)
    return Tensor.from_op(y, tuple(tensors), backward, "conv_transpose2d")


# --- pooling -----------------------------------------------------------------------------------------
def _pool_args(op, x, kernel_size, stride):
    (x,) = tensors_for(op, x)
    _check_image(op, "x", x)
    kernel = pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair(op, "stride", stride, 1)
    _check_window_fits(op, x.shape, kernel, (0, 0))
    return x, kernel, stride


def avg_pool2d(x, kernel_size, stride=None) -> Tensor:
    """Mean of every kh x kw window of each channel; no padding.   x: (B, C, H, W) -> (B, C, H_out, W_out).

        y[b, c, i, j] = 1/(kh kw) sum_{u, v} x[b, c, i s_h + u, j s_w + v]

    stride defaults to kernel_size (windows tile the image; rows or columns left over at the
    bottom or right that do not fill a window are ignored, as in PyTorch).
    Backward: every pixel of window (i, j) receives g[b, c, i, j] / (kh kw), summed over the
    windows that contain it.
    """
    x, kernel, stride = _pool_args("avg_pool2d", x, kernel_size, stride)
    xp = xp_of(x.data)
    windows = sliding_windows(x.data, kernel, stride)
    windows_shape, area = windows.shape, kernel[0] * kernel[1]
    y = windows.mean(axis=(4, 5))

    def backward(g):
        share = xp.broadcast_to((g / area)[..., None, None], windows_shape)
        return (fold_windows(share, x.shape, stride),)
    return Tensor.from_op(y, (x,), backward, "avg_pool2d")


def max_pool2d(x, kernel_size, stride=None) -> Tensor:
    """Maximum of every kh x kw window of each channel; no padding.   x: (B, C, H, W) -> (B, C, H_out, W_out).

        y[b, c, i, j] = max_{u, v} x[b, c, i s_h + u, j s_w + v]

    stride defaults to kernel_size. Backward: within each window the gradient goes to the
    argmax, d y / d x = 1 there and 0 elsewhere, summed over overlapping windows. Ties are
    split evenly, 1/k to each of k equal maxima, as tinyvision.ops.max does (PyTorch gives it
    all to one of them instead; both are valid subgradients and agree whenever there is no tie).
    """
    x, kernel, stride = _pool_args("max_pool2d", x, kernel_size, stride)
    windows = sliding_windows(x.data, kernel, stride)
    y = windows.max(axis=(4, 5))

    def backward(g):
        winners = windows == y[..., None, None]                     # (B, C, H_out, W_out, kh, kw)
        share = winners * (g / winners.sum(axis=(4, 5), dtype=g.dtype))[..., None, None]
        return (fold_windows(share, x.shape, stride),)
    return Tensor.from_op(y, (x,), backward, "max_pool2d")
