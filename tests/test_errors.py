"""Bad input gets a clear error that names the argument, what was seen and what was expected."""
import numpy as np
import pytest

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import nn
from tinyvision.backend import DeviceUnavailableError, cuda_available, optional_import


def t(shape, dtype=np.float32):
    return tv.Tensor(np.ones(shape, dtype))


def test_mismatched_shapes_name_both_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        t((2, 3)) + t((4,))


def test_matmul_inner_dimension_error_names_k():
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: a is \(2, 3\) \(k=3\) and b is \(4, 5\) \(k=4\)"):
        t((2, 3)) @ t((4, 5))


def test_mixed_float_dtypes_are_refused():
    with pytest.raises(TypeError, match="argument 1 has dtype float64 but another argument has float32"):
        t((2,)) * t((2,), np.float64)


def test_integer_tensor_dtype_is_refused():
    with pytest.raises(TypeError, match="dtype must be one of float16, float32, float64; got int64"):
        tv.Tensor(np.arange(3), dtype=np.int64)


def test_reshape_to_wrong_size_names_sizes():
    with pytest.raises(ValueError, match=r"reshape: cannot view 6 values of shape \(2, 3\) as shape \(4,\)"):
        t((2, 3)).reshape(4)


def test_log_of_negative_raises_instead_of_nan():
    with pytest.raises(FloatingPointError, match="log is undefined for negative inputs"):
        F.log(tv.Tensor([-1.0, 2.0]))
    with pytest.raises(FloatingPointError, match="sqrt"):
        F.sqrt(tv.Tensor([-1.0]))
    with pytest.raises(FloatingPointError, match="negative x"):
        tv.Tensor([-2.0]) ** 0.5


def test_cross_entropy_target_errors():
    logits = t((3, 4))
    with pytest.raises(ValueError, match=r"target has shape \(2,\), expected .*\(3,\)"):
        F.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(IndexError, match=r"targets must be in \[0, 4\) or equal ignore_index=-100; found 7"):
        F.cross_entropy(logits, np.array([0, 7, 1]))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="every target equals ignore_index"):
        F.cross_entropy(logits, np.array([-100, -100, -100]))


def test_bce_targets_outside_unit_interval_are_refused():
    with pytest.raises(ValueError, match=r"targets must be in \[0, 1\]"):
        F.binary_cross_entropy_with_logits(t((2,)), tv.Tensor([0.0, 2.0]))


def test_embedding_index_out_of_range_names_the_table_size():
    with pytest.raises(IndexError, match=r"indices must be in \[0, 5\) for a table of 5 rows; got values from 0 to 5"):
        F.embedding(np.array([0, 5]), t((5, 2)))


def test_attention_shape_errors():
    with pytest.raises(ValueError, match="head dim d"):
        F.scaled_dot_product_attention(t((3, 4)), t((3, 5)), t((3, 5)))
    with pytest.raises(ValueError, match="same number of keys"):
        F.scaled_dot_product_attention(t((3, 4)), t((3, 4)), t((2, 4)))
    with pytest.raises(TypeError, match="mask must be boolean"):
        F.scaled_dot_product_attention(t((3, 4)), t((3, 4)), t((3, 4)), mask=np.ones((3, 3)))


def test_layer_errors_name_expected_shapes():
    with pytest.raises(ValueError, match=r"Linear\(3, 2\): input has shape \(4, 5\), expected \(\.\.\., 3\)"):
        nn.Linear(3, 2, seed=0)(t((4, 5)))
    with pytest.raises(ValueError, match=r"weight has shape \(3,\), expected \(4,\)"):
        F.layer_norm(t((2, 4)), t((3,)))
    with pytest.raises(ValueError, match="dim=10 is not divisible by num_heads=3"):
        nn.MultiHeadAttention(10, 3, seed=0)
    with pytest.raises(TypeError, match="seed must be an int or numpy.random.Generator"):
        nn.Linear(2, 2, seed=None)


def test_bad_axis_is_named():
    with pytest.raises(ValueError, match="sum: axis 2 is out of range for a tensor with 2 dimensions"):
        t((2, 3)).sum(axis=2)


def test_unknown_device_name_is_refused():
    with pytest.raises(ValueError, match=r"device must be one of \('cpu', 'cuda'\), got 'tpu'"):
        t((2,)).to("tpu")


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU; the no-GPU error cannot be provoked")
def test_cuda_without_gpu_says_what_is_missing():
    with pytest.raises(DeviceUnavailableError, match='device "cuda" is unavailable: .*(pip install -e ".\\[gpu\\]"|no CUDA|device count 0)'):
        t((2,)).to("cuda")


class _FakeGPUArray(np.ndarray):
    """A NumPy array that reports itself as CuPy's, to test the device check without a GPU."""


_FakeGPUArray.__module__ = "cupy._fake"


def test_tensors_on_different_devices_are_refused():
    on_gpu = tv.Tensor(np.ones(2, np.float32).view(_FakeGPUArray))
    assert on_gpu.device == "cuda"
    with pytest.raises(ValueError, match=r"argument 1 is on device 'cuda' but argument 0 is on 'cpu'; move one with \.to\('cpu'\)"):
        t((2,)) + on_gpu


def test_missing_optional_dependency_names_the_extra():
    with pytest.raises(ImportError, match=r'plotting needs the package .* pip install -e "\.\[dev\]"'):
        optional_import("no_such_package_tv", "dev", "plotting")


def test_axis_errors_are_named():
    with pytest.raises(ValueError, match="sum: axis 0 is out of range for a tensor with 0 dimensions"):
        F.sum(tv.Tensor(2.0), axis=0)
    with pytest.raises(TypeError, match=r"softmax: axis must be one int, got \(0, 1\)"):
        F.softmax(t((2, 3)), axis=(0, 1))


def test_mse_loss_refuses_shapes_that_would_broadcast():
    with pytest.raises(ValueError, match=r"prediction has shape \(4, 1\) but target has \(4,\)"):
        F.mse_loss(t((4, 1)), t((4,)))


def test_float_tensor_index_is_refused():
    with pytest.raises(TypeError, match="must hold whole numbers"):
        t((3,))[tv.Tensor([1.7])]


def test_small_bare_errors_are_explained():
    with pytest.raises(TypeError, match="0-d tensor"):
        len(tv.Tensor(1.0))
    with pytest.raises(ValueError, match=r"pad: pad_width .* does not fit 2 axes"):
        F.pad(t((2, 3)), ((1, 1), (1, 1), (1, 1)))


def test_trunc_normal_with_hopeless_bounds_raises_instead_of_looping():
    with pytest.raises(ValueError, match="too little of N"):
        nn.init.trunc_normal((4,), std=0.02, seed=0, a=1.0, b=2.0)


def test_dropout_layer_needs_a_seed():
    with pytest.raises(TypeError, match=r"__init__\(\) missing 1 required keyword-only argument: 'seed'"):
        nn.Dropout(0.5)


def test_linear_checks_its_bias_against_x_and_never_narrows_it_silently():
    x, w = tv.Tensor(np.ones((2, 3), np.float32)), tv.Tensor(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match="linear: argument 2 has dtype float64 but another argument has float32"):
        F.linear(x, w, tv.Tensor(np.ones(4, np.float64)))
    out = F.linear(x, w, np.arange(4.0))          # a plain array is a constant in x's dtype
    assert out.dtype == np.float32 and np.array_equal(out.numpy(), np.full((2, 4), 3.0) + np.arange(4.0))


def test_linear_with_no_input_features_gives_the_bias():
    x, w, b = tv.Tensor(np.ones((2, 5, 0)), requires_grad=True), tv.Tensor(np.ones((0, 3)), requires_grad=True), \
        tv.Tensor(np.arange(3.0), requires_grad=True)
    out = F.linear(x, w, b)
    assert out.shape == (2, 5, 3) and np.array_equal(out.numpy(), np.broadcast_to(np.arange(3.0), (2, 5, 3)))
    out.sum().backward()
    assert x.grad.shape == (2, 5, 0) and w.grad.shape == (0, 3) and np.array_equal(b.grad, np.full(3, 10.0))
