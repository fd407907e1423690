"""The public API under bad input: a clear tinyvision error, or a correct result. Never a raw traceback.

For every op and layer in tests/api_cases.py, hypothesis replaces one argument of a valid call by a
bad value drawn from a menu for that argument's kind: wrong Python types (str, None, a float where
an int is meant, a list of strings), wrong ranks, empty axes, integer / complex / bool arrays, a
float64 tensor among float32 ones, NaN, inf and magnitudes of 1e30, nonsense hyper-parameters
(negative, zero, NaN, fractional). The call must then either

- raise TypeError, ValueError, IndexError or FloatingPointError from tinyvision's own code (the
  innermost frame of the traceback is in the tinyvision package, not in NumPy or Numba), with a
  message that names the function; or
- succeed, and if every input was finite, return finite values or a documented overflow to inf
  (no NaN appears from finite inputs), with a backward that runs and gives gradients of the
  inputs' shapes.

The correctness of successful calls on valid inputs is tests/test_ops.py's job (float64 references);
here a success is checked for the properties that bad input breaks silently.
"""
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyvision as tv
from api_cases import CASES, LAYER_CASES, T

PACKAGE = str(Path(tv.__file__).resolve().parent)
# NaN, inf and 1e30 inputs are the point here: NumPy's warnings about them are expected
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
ALLOWED = (TypeError, ValueError, IndexError, FloatingPointError)


def bad_values(kind, valid):
    """(label, value) pairs: what a hurried user passes instead of `valid` for an argument of `kind`."""
    common = [("str", "x"), ("None", None), ("list of str", ["a"]), ("dict", {}), ("object", object())]
    if kind == "tensor":
        shape = valid.shape
        out = [("rank 0", T()), ("rank +1", T(1, *shape)), ("rank 5", T(1, 1, 1, 2, 3)),
               ("last axis empty", T(*shape[:-1], 0) if shape else T(0)),
               ("first axis empty", T(0, *shape[1:]) if shape else T(0)),
               ("second axis empty", T(shape[0], 0, *shape[2:]) if len(shape) > 1 else T(0)),
               ("last axis 1", T(*shape[:-1], 1) if shape else T(1)),
               ("float64", tv.Tensor(valid.numpy().astype(np.float64), requires_grad=True)),
               ("float16", tv.Tensor(valid.numpy().astype(np.float16), requires_grad=True)),
               ("nan", tv.Tensor(np.full(shape, np.nan, np.float32), requires_grad=True)),
               ("inf", tv.Tensor(np.full(shape, np.inf, np.float32), requires_grad=True)),
               ("-inf", tv.Tensor(np.full(shape, -np.inf, np.float32), requires_grad=True)),
               ("1e30", tv.Tensor(np.full(shape, 1e30, np.float32), requires_grad=True)),
               ("-1e30", tv.Tensor(np.full(shape, -1e30, np.float32), requires_grad=True)),
               ("int array", np.ones(shape, np.int64)), ("complex array", np.ones(shape, np.complex64)),
               ("bool array", np.ones(shape, bool)), ("python float", 2.5), ("strided view", strided(valid))]
        return common + out
    if kind in ("int", "seed"):
        return common + [("float", 2.5), ("whole float", 2.0), ("nan", math.nan), ("bool", True), ("negative", -3),
                         ("zero", 0), ("huge", 10**12), ("tuple", (1, 2)), ("array", np.array([1, 2]))]
    if kind == "axis":
        return common + [("float", 1.5), ("out of range", 7), ("very negative", -9), ("bool", True),
                         ("repeated", (1, 1)), ("tuple of float", (0.5,)), ("array", np.array([0]))]
    if kind in ("float", "prob"):
        return common + [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("negative", -1.0),
                         ("zero", 0.0), ("huge", 1e308), ("bool", True), ("list", [1.0, 2.0]),
                         ("array", np.array([0.1, 0.2])), ("complex", 1j), ("above one", 1.5)]
    if kind == "flag":
        return common + [("int", 2), ("float", 0.5), ("nan", math.nan), ("array", np.array([True, False]))]
    if kind == "choice":
        return common + [("unknown", "bogus"), ("int", 3), ("upper case", str(valid).upper())]
    if kind == "labels":
        return common + [("float array", valid.astype(np.float64) + 0.5), ("negative", valid - 5),
                         ("too large", valid + 100), ("2-d", valid[None]), ("empty", valid[:0]), ("bool", valid > 0),
                         ("scalar", 1), ("list", valid.tolist()), ("tensor", tv.Tensor(valid.astype(np.float32)))]
    if kind == "mask":
        return common + [("float mask", valid.astype(np.float32)), ("int mask", valid.astype(np.int64)),
                         ("wrong shape", np.ones((7, 2), bool)), ("all false", np.zeros_like(valid)),
                         ("scalar", True), ("list", valid.tolist())]
    if kind in ("shape", "sizes", "pad"):
        return common + [("floats", [2.9, 2.1]), ("negative", [-1, -2]), ("nested", [[1], [2]]), ("empty", []),
                         ("huge", [10**9, 10**9]), ("int", 3), ("float", 1.5), ("bool", [True]),
                         ("nan", [math.nan]), ("array", np.array([1.5]))]
    if kind == "index":
        return common + [("float", 1.5), ("out of range", 99), ("float array", np.array([0.5])),
                         ("bool wrong length", np.array([True, False])), ("tuple too long", (0, 0, 0, 0)),
                         ("nan", math.nan)]
    raise ValueError(kind)


def strided(t):
    """The same values as t, as a non-contiguous view (every other entry of a wider array)."""
    if not t.ndim:
        return t
    wide = np.repeat(t.numpy(), 2, axis=-1)
    return tv.Tensor(wide[..., ::2], requires_grad=True)


def _innermost_file(err):
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last.tb_frame.f_code.co_filename if last else ""


def _finite(value):
    if isinstance(value, tv.Tensor):
        return bool(np.isfinite(value.numpy()).all())
    if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
        return bool(np.isfinite(value).all())
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def check_call(case, name, label, value):
    """Run `case` with argument `name` replaced by `value`; return None if fine, else what went wrong."""
    return check_calls(case, {name: value})


def check_calls(case, replaced):
    """Run `case` with the arguments in `replaced` swapped in; None if fine, else what went wrong."""
    values = {k: v for k, (_, v) in case.args.items()}
    values.update(replaced)
    for v in values.values():
        if isinstance(v, tv.Tensor):
            v.zero_grad()
    try:
        out = case.call(**values)
    except ALLOWED as err:
        where = _innermost_file(err)
        if not where.startswith(PACKAGE):
            return f"{type(err).__name__} raised inside {where}: {err}"
        if case.name not in str(err):
            return f"{type(err).__name__} does not name {case.name!r}: {err}"
        return None
    except Exception as err:  # noqa: BLE001 - any other exception is the finding
        return f"{type(err).__name__} (not a tinyvision error) from {_innermost_file(err)}: {err}"
    outs = out if isinstance(out, (list, tuple)) else [out]
    if not all(isinstance(o, tv.Tensor) for o in outs):
        return f"returned {type(out).__name__}, not a Tensor"
    inputs_finite = all(_finite(v) for v in values.values())
    for o in outs:
        if inputs_finite and np.isnan(o.numpy()).any():
            return "a NaN from finite inputs"
    try:
        total = sum((o.sum() for o in outs if o.requires_grad and o.size), start=None) if any(
            o.requires_grad and o.size for o in outs) else None
        if total is not None:
            total.backward()
    except ALLOWED as err:
        if not _innermost_file(err).startswith(PACKAGE):
            return f"backward: {type(err).__name__} raised inside {_innermost_file(err)}: {err}"
        return None
    except Exception as err:  # noqa: BLE001
        return f"backward: {type(err).__name__} from {_innermost_file(err)}: {err}"
    for v in values.values():
        if isinstance(v, tv.Tensor) and v.grad is not None:
            if v.grad.shape != v.shape:
                return f"gradient of shape {v.grad.shape} for an input of shape {v.shape}"
            if inputs_finite and total is not None and np.isfinite(total.item()) and np.isnan(v.grad).any():
                return "a NaN gradient from finite inputs"
    return None


ALL = CASES + LAYER_CASES
MUTATIONS = [(case, name, label, value) for case in ALL for name, (kind, valid) in case.args.items()
             for label, value in bad_values(kind, valid)]


def test_the_cases_are_valid_calls():
    """Unmutated, every case runs and gives finite values: the fuzz starts from working calls."""
    for case in ALL:
        values = {k: v for k, (_, v) in case.args.items()}
        out = case.call(**values)
        outs = out if isinstance(out, (list, tuple)) else [out]
        assert all(np.isfinite(o.numpy()).all() for o in outs), case.name


def test_every_public_op_has_a_case():
    import tinyvision.ops as F
    names = {c.name for c in CASES}
    missing = [n for n in F.__all__ if n not in names and n != "attention_mask"]
    assert not missing, f"add these ops to tests/api_cases.py: {missing}"


def test_every_single_bad_argument_gets_a_clear_error_or_a_correct_result():
    """Each argument of each case replaced by each bad value of its kind, one at a time (about 2,300
    calls, a few seconds): all of them, every run."""
    findings = [f"{case.name}({name}={label}): {problem}" for case, name, label, value in MUTATIONS
                if (problem := check_call(case, name, label, value))]
    assert not findings, f"{len(findings)} of {len(MUTATIONS)} calls:\n" + "\n".join(findings[:40])


@st.composite
def two_bad_arguments(draw):
    """A case with two (or all, if fewer) of its arguments bad at once: the checks must not assume
    that only one thing is wrong, nor that they run in one particular order."""
    case = draw(st.sampled_from(ALL))
    names = draw(st.lists(st.sampled_from(sorted(case.args)), min_size=1, max_size=2, unique=True))
    bad = {}
    for name in names:
        kind, valid = case.args[name]
        bad[name] = draw(st.sampled_from(bad_values(kind, valid)))
    return case, bad


@settings(max_examples=int(os.environ.get("TINYVISION_FUZZ_EXAMPLES", 200)))
@given(two_bad_arguments())
def test_two_bad_arguments_at_once_get_a_clear_error_or_a_correct_result(drawn):
    case, bad = drawn
    problem = check_calls(case, {name: value for name, (label, value) in bad.items()})
    labels = ", ".join(f"{name}={label}" for name, (label, _) in bad.items())
    assert problem is None, f"{case.name}({labels}): {problem}"


if __name__ == "__main__":  # python tests/test_api_fuzz.py: every mutation once, a line per finding
    import sys
    import warnings
    warnings.simplefilter("ignore")
    found = 0
    for case, name, label, value in MUTATIONS:
        problem = check_call(case, name, label, value)
        if problem:
            found += 1
            print(f"{case.name}({name}={label}): {problem}"[:300])
    print(f"{found} findings in {len(MUTATIONS)} calls")
    sys.exit(1 if found else 0)


# --- the checks refuse bad input, not good input written another way -------------------------------
def test_valid_spellings_of_numbers_axes_and_widths_are_accepted():
    """0-d arrays (what a reduction returns) count as numbers, integer arrays as axes and widths,
    an int as one width for every side: the checks must not refuse what NumPy users write."""
    import tinyvision.ops as F
    x = T(2, 3)
    assert F.scaled_dot_product_attention(T(1, 2, 3), T(1, 2, 3), T(1, 2, 3), scale=np.array(0.5)).shape == (1, 2, 3)
    assert F.layer_norm(x, eps=np.array(1e-5)).shape == (2, 3)
    assert F.dropout(x, np.float32(0.5), seed=np.int64(0)).shape == (2, 3)
    assert F.masked_fill(x, np.array([True, False, True]), x.data.min()).shape == (2, 3)
    assert F.clip(x, np.array(0.0)).shape == (2, 3)
    assert F.pad(x, 1).shape == (4, 5) and F.pad(x, np.array([1, 1])).shape == (4, 5)
    assert F.sum(x, axis=np.array([0, 1])).shape == ()
    assert F.sum(x, axis=np.int64(1), keepdims=np.bool_(True)).shape == (2, 1)
    assert F.reshape(x, np.array([3, 2])).shape == (3, 2)


def test_cross_entropy_over_zero_classes_with_every_target_ignored():
    import tinyvision.ops as F
    logits = T(2, 0)
    assert F.cross_entropy(logits, np.array([-100, -100]), reduction="sum").item() == 0.0
    assert F.cross_entropy(logits, np.array([-100, -100]), reduction="none").shape == (2,)


def test_label_smoothing_one_with_a_masked_target_is_infinite_not_nan():
    import tinyvision.ops as F
    loss = F.cross_entropy(tv.Tensor(np.array([[-np.inf, 0.0]], np.float32)), np.array([0]), label_smoothing=1.0)
    assert loss.item() == np.inf


def test_python_ints_too_large_for_a_float_are_a_value_error():
    import tinyvision.ops as F
    with pytest.raises(ValueError, match="clip: low must be a number, got an int of 401 digits"):
        F.clip(T(2), low=10**400)
    with pytest.raises(ValueError, match="Adam: lr must be a finite number >= 0.0, got an int of 401 digits"):
        tv.optim.Adam([tv.nn.Parameter(np.ones(2))], lr=10**400)


def test_a_layer_error_names_the_layer_called_and_keeps_the_exception():
    """The outermost module's name goes in front of the message; the exception object, its type,
    its cause and its traceback are the ones raised inside."""
    from tinyvision import nn

    class Checked(nn.Module):
        def forward(self, x):
            try:
                {}["missing"]
            except KeyError as key_error:
                raise ValueError("inner: x is wrong") from key_error

    class Outer(nn.Module):
        def __init__(self):
            self.inner = Checked()

        def forward(self, x):
            return self.inner(x)

    with pytest.raises(ValueError, match=r"^Outer: inner: x is wrong$") as info:
        Outer()(T(2))
    assert isinstance(info.value.__cause__, KeyError)
    assert "raise ValueError" in "".join(__import__("traceback").format_tb(info.value.__traceback__))

    class Custom(ValueError):
        def __init__(self, shape):
            super().__init__(f"bad shape {shape}")
            self.shape = shape

    class Raises(nn.Module):
        def forward(self, x):
            raise Custom((2, 3))

    with pytest.raises(Custom) as info:
        Raises()(T(2))
    assert info.value.shape == (2, 3) and str(info.value) == "bad shape (2, 3)"
