"""The gradient checker itself: it must catch a wrong backward and say where."""
import numpy as np
import pytest

import tinyvision as tv


def _square_with_wrong_backward(x):
    # forward x^2, backward claims 3x instead of 2x
    return tv.Tensor.from_op(x.data ** 2, (x,), lambda g: (g * 3 * x.data,), "broken_square")


def test_gradcheck_catches_a_wrong_backward_and_names_op_input_index_values():
    x = np.array([[0.5, -1.0], [2.0, 0.25]])
    with pytest.raises(tv.GradcheckError) as err:
        tv.gradcheck(_square_with_wrong_backward, [x], name="broken_square")
    msg = str(err.value)
    # the worst entry is reported: |3x - 2x| * |c| is largest where |x * c| is; x = 2.0 sits at (1, 0)
    c = np.random.default_rng(0).standard_normal((2, 2))
    worst = np.unravel_index(np.argmax(np.abs(x * c)), x.shape)
    assert f"gradcheck(broken_square): input 0 of shape (2, 2), index {tuple(int(i) for i in worst)}" in msg
    expected, received = 2 * x[worst] * c[worst], 3 * x[worst] * c[worst]
    assert f"expected {expected:.6g} (finite differences), received {received:.6g} (backward)" in msg


def test_gradcheck_passes_a_correct_backward_with_tiny_error():
    x = np.random.default_rng(0).standard_normal((3, 4)).T  # non-contiguous on purpose
    err = tv.gradcheck(lambda t: (t * t).sum(axis=0), [x], name="square")
    assert err < 1e-8


def test_gradcheck_leaves_the_callers_array_untouched():
    x = np.array([1.0, 2.0])
    before = x.copy()
    tv.gradcheck(lambda t: t * t, [x])
    np.testing.assert_array_equal(x, before)


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="finite differences need float64"):
        tv.gradcheck(lambda t: t, [np.ones(2, np.float32)])
