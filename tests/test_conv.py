"""Convolution and pooling: identities that pin the layout, argument errors, and a tiny CNN that learns.

Forward values and gradients against loop references are checked for every op by test_ops.py
(entries conv2d, avg_pool2d, max_pool2d in op_registry.py); this file checks what those
cannot: the (C, kh, kw) flattening order that ViT's patch embedding relies on, the meaning of
stride and padding pairs, the messages of bad calls, and the nn layers.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvision as tv
import tinyvision.ops as F
from strategies import arrays
from tinyvision import nn
from tinyvision.ops.conv import fold_windows, im2col, sliding_windows


def conv(x, w, b=None, **kw):
    """conv2d on float64 arrays, returning an array."""
    return F.conv2d(tv.Tensor(x), tv.Tensor(w), None if b is None else tv.Tensor(b), **kw).numpy()


# --- identities ------------------------------------------------------------------------------------------
@given(data=st.data())
def test_patch_conv_equals_patch_flatten_then_matmul(data):
    """ViT's patch embedding: a conv with kernel = stride = P is "cut P x P patches, flatten each in
    (C, P, P) order, multiply by the weight reshaped (D, C P P)" (Dosovitskiy et al. 2021, eq. 1)."""
    b, c, d = (data.draw(st.integers(1, 3)) for _ in range(3))
    p, nh, nw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    x = data.draw(arrays((b, c, nh * p, nw * p)))
    w, bias = data.draw(arrays((d, c, p, p))), data.draw(arrays((d,)))
    patches = x.reshape(b, c, nh, p, nw, p).transpose(0, 2, 4, 1, 3, 5).reshape(b, nh * nw, c * p * p)
    tokens = patches @ w.reshape(d, c * p * p).T + bias                               # (B, N, D)
    y = conv(x, w, bias, stride=p)                                                    # (B, D, nh, nw)
    np.testing.assert_allclose(y.reshape(b, d, nh * nw).transpose(0, 2, 1), tokens, rtol=1e-12, atol=1e-12)


@given(data=st.data())
def test_1x1_conv_equals_per_pixel_matmul(data):
    b, c, d, h, w = (data.draw(st.integers(1, 4)) for _ in range(5))
    x, weight, bias = data.draw(arrays((b, c, h, w))), data.draw(arrays((d, c, 1, 1))), data.draw(arrays((d,)))
    expected = np.einsum("bchw,dc->bdhw", x, weight[:, :, 0, 0]) + bias[:, None, None]
    np.testing.assert_allclose(conv(x, weight, bias), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h, k, s, p", [(1, 1, 1, 0), (5, 3, 1, 1), (5, 3, 2, 0), (7, 3, 3, 2), (6, 2, 4, 1),
                                        (4, 5, 1, 1), (8, 3, 2, 1)])
def test_output_shape_follows_the_formula(h, k, s, p):
    """H_out = (H + 2p - k) // s + 1, with H not a multiple of s in most rows."""
    x, w = np.zeros((2, 3, h, h + 1)), np.zeros((4, 3, k, k))
    expected = (2, 4, (h + 2 * p - k) // s + 1, (h + 1 + 2 * p - k) // s + 1)
    assert conv(x, w, stride=s, padding=p).shape == expected


@given(data=st.data())
def test_stride_and_padding_pairs_act_on_h_and_w_separately(data):
    """padding (p_h, p_w) equals padding the image by hand; stride (s_h, s_w) equals striding 1 and
    keeping every s_h-th row and s_w-th column; an int equals the pair (n, n)."""
    c, d, kh, kw = (data.draw(st.integers(1, 3)) for _ in range(4))
    ph, pw = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    x = data.draw(arrays((2, c, data.draw(st.integers(kh, 6)), data.draw(st.integers(kw, 6)))))
    w = data.draw(arrays((d, c, kh, kw)))
    by_hand = conv(np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))), w)
    np.testing.assert_allclose(conv(x, w, padding=(ph, pw)), by_hand, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv(x, w, stride=(sh, sw)), conv(x, w)[:, :, ::sh, ::sw], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(conv(x, w, stride=sh, padding=ph), conv(x, w, stride=(sh, sh), padding=(ph, ph)))


@given(data=st.data())
def test_pooling_with_kernel_equal_stride_equals_block_reduction(data):
    b, c, p, nh, nw = (data.draw(st.integers(1, 3)) for _ in range(5))
    x = data.draw(arrays((b, c, nh * p, nw * p), "distinct"))
    blocks = x.reshape(b, c, nh, p, nw, p)
    np.testing.assert_allclose(F.avg_pool2d(tv.Tensor(x), p).numpy(), blocks.mean(axis=(3, 5)), rtol=1e-12)
    np.testing.assert_array_equal(F.max_pool2d(tv.Tensor(x), p).numpy(), blocks.max(axis=(3, 5)))


def test_max_pool_splits_the_gradient_of_a_tie_evenly_and_adds_over_overlapping_windows():
    x = tv.Tensor(np.ones((1, 1, 3, 3)), requires_grad=True)
    F.max_pool2d(x, 2, stride=1).sum().backward()          # four 2x2 windows, every entry ties
    covered = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]])  # how many windows contain each pixel
    np.testing.assert_allclose(x.grad[0, 0], covered / 4)


@given(data=st.data())
def test_fold_windows_is_the_adjoint_of_sliding_windows(data):
    """<windows(x), G> = <x, fold(G)> for every x and G: the identity every backward here relies on."""
    kernel, stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))), (data.draw(st.integers(1, 3)),) * 2
    x = data.draw(arrays((2, 2, data.draw(st.integers(kernel[0], 6)), data.draw(st.integers(kernel[1], 6)))))
    windows = sliding_windows(x, kernel, stride)
    g = np.random.default_rng(0).standard_normal(windows.shape)
    np.testing.assert_allclose(np.sum(windows * g), np.sum(x * fold_windows(g, x.shape, stride)), rtol=1e-10)
    cols = im2col(x, kernel, stride)
    assert cols.shape == (2, windows.shape[2] * windows.shape[3], 2 * kernel[0] * kernel[1])


# --- errors --------------------------------------------------------------------------------------------------
def t(shape):
    return tv.Tensor(np.ones(shape, np.float32))


@given(data=st.data())
def test_conv_transpose2d_is_the_adjoint_of_conv2d(data):
    """<conv2d(z, W), x> = <z, conv_transpose2d(x, W)> for the same W, stride and padding: the
    transposed convolution is conv2d's input gradient, whatever the sizes (z sized so that the
    strides leave no rows over, output_padding picking the right size back)."""
    b, c, d = (data.draw(st.integers(1, 3)) for _ in range(3))
    kh, kw, sh, sw = (data.draw(st.integers(1, 3)) for _ in range(4))
    ph, pw = data.draw(st.integers(0, kh - 1)), data.draw(st.integers(0, kw - 1))
    h_out, w_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    extra_h, extra_w = data.draw(st.integers(0, sh - 1)), data.draw(st.integers(0, sw - 1))
    h, w = (h_out - 1) * sh + kh - 2 * ph + extra_h, (w_out - 1) * sw + kw - 2 * pw + extra_w
    if h < 1 or w < 1:
        return
    z, weight = data.draw(arrays((b, c, h, w))), data.draw(arrays((d, c, kh, kw)))
    x = data.draw(arrays((b, d, h_out, w_out)))
    y = conv(z, weight, stride=(sh, sw), padding=(ph, pw))
    assert y.shape == x.shape
    back = F.conv_transpose2d(tv.Tensor(x), tv.Tensor(weight), stride=(sh, sw), padding=(ph, pw),
                              output_padding=(extra_h, extra_w)).numpy()
    assert back.shape == z.shape
    np.testing.assert_allclose(np.sum(y * x), np.sum(z * back), rtol=1e-10, atol=1e-10)


def test_upsample_nearest_repeats_pixels_and_bilinear_keeps_constants_and_means():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    up = F.upsample(tv.Tensor(x), (2, 3)).numpy()
    np.testing.assert_array_equal(up, x.repeat(2, axis=2).repeat(3, axis=3))
    flat = F.upsample(tv.Tensor(np.full((1, 1, 3, 3), 7.0)), 4, "bilinear").numpy()
    np.testing.assert_allclose(flat, 7.0, rtol=0, atol=1e-14)        # interpolation weights sum to 1
    smooth = F.upsample(tv.Tensor(x), 2, "bilinear").numpy()
    np.testing.assert_allclose(smooth.mean(axis=(2, 3)), x.mean(axis=(2, 3)), atol=1e-12)   # even factor: mean kept
    with pytest.raises(ValueError, match='upsample: mode must be "nearest" or "bilinear", got \'bicubic\''):
        F.upsample(tv.Tensor(x), 2, "bicubic")
    with pytest.raises(ValueError, match="upsample: x must be 4-D"):
        F.upsample(tv.Tensor(np.ones((3, 4))), 2)


def test_conv_transpose2d_errors_name_the_sizes():
    x, w = tv.Tensor(np.ones((1, 2, 3, 3))), tv.Tensor(np.ones((2, 4, 3, 3)))
    assert F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1).shape == (1, 4, 6, 6)
    with pytest.raises(ValueError, match=r"output_padding \(2, 2\) must be smaller than the stride \(2, 2\)"):
        F.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="x has D=2 channels .* but weight expects D=3"):
        F.conv_transpose2d(x, tv.Tensor(np.ones((3, 4, 3, 3))))
    with pytest.raises(ValueError, match="bias has shape \\(2,\\), expected \\(4,\\)"):
        F.conv_transpose2d(x, w, tv.Tensor(np.ones(2)))
    with pytest.raises(ValueError, match="cuts the whole 5x5 output"):
        F.conv_transpose2d(x, w, padding=3)


def test_conv2d_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"conv2d: x has C=3 channels \(shape \(2, 3, 8, 8\)\) but weight expects C=4"):
        F.conv2d(t((2, 3, 8, 8)), t((5, 4, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d: x must be 4-D \(B, C, H, W\), got shape \(3, 8, 8\)"):
        F.conv2d(t((3, 8, 8)), t((5, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d: weight must be 4-D \(D, C, kh, kw\), got shape \(5, 3\)"):
        F.conv2d(t((2, 3, 8, 8)), t((5, 3)))
    too_big = r"conv2d: the 5x5 kernel is larger than the padded input 4x4 \(x is \(1, 1, 2, 2\), padding \(1, 1\)\)"
    with pytest.raises(ValueError, match=too_big):
        F.conv2d(t((1, 1, 2, 2)), t((1, 1, 5, 5)), padding=1)
    with pytest.raises(ValueError, match=r"conv2d: the 3x1 kernel is larger than the input 2x2"):
        F.conv2d(t((1, 1, 2, 2)), t((1, 1, 3, 1)))
    with pytest.raises(ValueError, match=r"conv2d: bias has shape \(4,\), expected \(5,\)"):
        F.conv2d(t((2, 3, 8, 8)), t((5, 3, 3, 3)), t((4,)))
    with pytest.raises(ValueError, match=r"conv2d: stride must be an int >= 1 or a pair \(h, w\) of them, got 0"):
        F.conv2d(t((2, 3, 8, 8)), t((5, 3, 3, 3)), stride=0)
    with pytest.raises(ValueError, match=r"conv2d: padding must be an int >= 0 .*got \(1, -1\)"):
        F.conv2d(t((2, 3, 8, 8)), t((5, 3, 3, 3)), padding=(1, -1))


def test_pool_errors_name_the_sizes():
    with pytest.raises(ValueError, match=r"max_pool2d: the 3x3 kernel is larger than the input 2x5"):
        F.max_pool2d(t((1, 1, 2, 5)), 3)
    with pytest.raises(ValueError, match=r"avg_pool2d: kernel_size must be an int >= 1 .*got \(2, 2, 2\)"):
        F.avg_pool2d(t((1, 1, 4, 4)), (2, 2, 2))
    with pytest.raises(ValueError, match=r"avg_pool2d: stride must be an int >= 1 .*got 0"):
        F.avg_pool2d(t((1, 1, 4, 4)), 2, stride=0)
    with pytest.raises(ValueError, match=r"max_pool2d: x must be 4-D \(B, C, H, W\), got shape \(4, 4\)"):
        F.max_pool2d(t((4, 4)), 2)


# --- layers --------------------------------------------------------------------------------------------------
def test_conv2d_layer_has_pytorch_names_layout_and_init_bound():
    layer = nn.Conv2d(3, 8, (3, 5), seed=0)
    state = layer.state_dict()
    assert list(state) == ["weight", "bias"]
    assert state["weight"].shape == (8, 3, 3, 5) and state["bias"].shape == (8,)
    bound = 1 / np.sqrt(3 * 3 * 5)
    assert np.abs(state["weight"]).max() <= bound and np.abs(state["weight"]).max() > 0.9 * bound
    np.testing.assert_array_equal(state["weight"], nn.Conv2d(3, 8, (3, 5), seed=0).weight.numpy())  # seeded
    assert list(nn.Conv2d(3, 8, 3, bias=False, seed=0).state_dict()) == ["weight"]
    assert repr(layer) == "Conv2d(3, 8, kernel_size=(3, 5), stride=(1, 1), padding=(0, 0), bias=True)"


def test_flatten_keeps_the_batch_axis():
    assert nn.Flatten()(t((2, 3, 4, 5))).shape == (2, 60)
    assert nn.Flatten()(t((0, 3, 4))).shape == (0, 12)
    assert nn.Flatten(start_dim=2)(t((2, 3, 4, 5))).shape == (2, 3, 20)


def _bars(n, seed):
    """8x8 images with one vertical (label 0) or horizontal (label 1) bar somewhere, plus noise."""
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((n, 1, 8, 8))
    labels = rng.integers(0, 2, n)
    for img, label, pos in zip(x, labels, rng.integers(0, 8, n)):
        if label == 0:
            img[0, :, pos] += 1.0
        else:
            img[0, pos, :] += 1.0
    return tv.Tensor(x.astype(np.float32)), labels


def test_tiny_cnn_learns_bars_with_sgd():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, seed=0), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 2, seed=1))
    x, labels = _bars(32, seed=0)
    opt = tv.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(50):
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}"
    x_test, labels_test = _bars(64, seed=1)
    accuracy = (model(x_test).numpy().argmax(axis=1) == labels_test).mean()
    assert accuracy >= 0.95, f"held-out accuracy {accuracy:.2f}"
