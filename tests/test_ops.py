"""Every differentiable op against its float64 reference: forward values and backward gradients.

The registry (op_registry.py) supplies inputs and references; hypothesis draws the shapes
(size 1, odd sizes, broadcasting) and layouts (non-contiguous half the time).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels
from devices import DEVICES
from op_registry import REGISTRY
from strategies import cast_keeping_strides

NON_DIFFERENTIABLE = {"attention_mask"}  # helpers exported beside the ops

# Ops with a compiled kernel (tinyvision/kernels) are tested twice: the NumPy reference, and the kernel.
KERNEL_OPS = ("gelu", "layer_norm", "scaled_dot_product_attention", "softmax")
_numba_missing = kernels.why_unavailable("numba")
CASES = [pytest.param(n, "reference", id=f"{n}-reference") for n in sorted(REGISTRY)] + [
    pytest.param(n, "numba", id=f"{n}-numba",
                 marks=pytest.mark.skipif(_numba_missing is not None, reason=f"Numba kernels unavailable: {_numba_missing}"))
    for n in KERNEL_OPS]


def test_every_op_is_registered():
    """An op exported from tinyvision.ops without a reference and a gradient check fails here."""
    exported = set(F.__all__) - NON_DIFFERENTIABLE
    assert exported - set(REGISTRY) == set(), f"ops without a registry entry: {sorted(exported - set(REGISTRY))}"
    assert set(REGISTRY) - exported == set(), f"registry entries for ops not exported: {sorted(set(REGISTRY) - exported)}"


def _run(spec, arrays, kwargs, device="cpu", dtype=np.float64):
    tensors = [tv.Tensor(cast_keeping_strides(a, dtype), device=device) for a in arrays]
    return spec.op(*tensors, **kwargs)


# Forward tolerances per dtype: float64 should agree with the reference to rounding; float32 carries
# ~7 significant digits (the reference saw the inputs before they were rounded to float32).
FORWARD_TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, impl", CASES)
@given(data=st.data())
def test_forward_matches_float64_reference(name, impl, data, device, dtype):
    spec = REGISTRY[name]
    arrays, kwargs = spec.draw(data)
    expected = np.asarray(spec.ref(*arrays, **kwargs), dtype=np.float64)
    with kernels.use(impl):
        out = _run(spec, arrays, kwargs, device, dtype)
    assert out.dtype == dtype, f"{name}: {np.dtype(dtype)} inputs gave {out.dtype}"
    np.testing.assert_allclose(out.numpy(), expected, **FORWARD_TOLERANCE[dtype], err_msg=f"{name} forward, {kwargs}")


@pytest.mark.parametrize("name, impl", CASES)
@given(data=st.data())
def test_backward_matches_finite_differences(name, impl, data):
    spec = REGISTRY[name]
    arrays, kwargs = spec.draw(data)
    with kernels.use(impl):
        tv.gradcheck(lambda *ts: spec.op(*ts, **kwargs), arrays, name=f"{name}{kwargs}", rtol=spec.rtol, atol=spec.atol)


@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
@pytest.mark.parametrize("name", sorted(REGISTRY))
@given(data=st.data())
def test_backward_on_device_equals_cpu(name, data, device):
    """The same graph gives the same gradients on every non-CPU backend as on the CPU."""
    spec = REGISTRY[name]
    arrays, kwargs = spec.draw(data)
    grads = []
    for dev in ("cpu", device):
        ts = [tv.Tensor(a, device=dev, requires_grad=True) for a in arrays]
        out = spec.op(*ts, **kwargs)
        c = np.random.default_rng(0).standard_normal(out.shape)
        (out * tv.Tensor(c, device=dev)).sum().backward()
        grads.append([t.grad if dev == "cpu" else tv.Tensor(t.grad).numpy() for t in ts])
    for g_cpu, g_dev in zip(*grads):
        np.testing.assert_allclose(g_dev, g_cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, impl", CASES)
@given(data=st.data())
def test_float32_gradients_stay_float32(name, impl, data):
    """A backward must not promote: float32 in, float32 gradients out (an int count in a division would)."""
    spec = REGISTRY[name]
    arrays, kwargs = spec.draw(data)
    tensors = [tv.Tensor(cast_keeping_strides(a, np.float32), requires_grad=True) for a in arrays]
    with kernels.use(impl):
        out = spec.op(*tensors, **kwargs)
        (out * tv.Tensor(np.ones(out.shape, np.float32))).sum().backward()
    for i, t in enumerate(tensors):
        assert t.grad is not None and t.grad.dtype == np.float32, f"{name}: input {i} got a {None if t.grad is None else t.grad.dtype} gradient"


def test_layouts_reach_the_op_non_contiguous():
    """The strategies' strided and permuted draws arrive at the op as the same views, in either dtype."""
    base = np.arange(48.0).reshape(4, 3, 4)
    for a in (base[..., ::2], base[::2], base[:, ::-1], base.transpose(2, 1, 0)):
        for dtype in (np.float64, np.float32):
            t = tv.Tensor(cast_keeping_strides(a, dtype))
            assert not t.data.flags.c_contiguous
            assert [s // t.data.itemsize for s in t.data.strides] == [s // a.itemsize for s in a.strides]
            np.testing.assert_array_equal(t.numpy(), a)
