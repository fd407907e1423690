"""Checks for the hyper-parameters of layers, models, optimizers and schedules, written once.

A wrong setting should fail where it is written, not three calls deeper inside NumPy. Each
check returns the value normalised (a Python int, float, bool or tuple) or raises:

    TypeError   the kind is wrong: a str, None, a float where an int is meant (2.9 would be
                truncated silently, 2.0 hides a computation that went wrong), a bool where a
                number is meant (True == 1 in Python, so Linear(True, 3) would "work")
    ValueError  the kind is right but the value is not: 0 heads, a NaN eps, a negative stride

Every message names the function or class (`where`), the argument, what it got and what it
expected, e.g.

    Linear: in_features must be an int >= 1, got 2.9 (float); round it first, e.g. int(2.9)
    LayerNorm: eps must be a finite number > 0.0, got nan

Ints are Python or NumPy integers (numbers.Integral), bools excluded. Numbers are Python or NumPy
reals, ints included (lr=1 is a number), bools excluded, and finite.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_bool", "check_choice", "check_float_dtype", "check_int", "check_int_pair", "check_number",
           "check_probability", "check_real", "is_int", "scalar"]


def scalar(value):
    """A 0-d array (NumPy's, or CuPy's: a reduction's result) as the Python number it holds; anything
    else unchanged. So `scale=np.array(0.5)` or `value=x.data.min()` count as the numbers they are."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item") and getattr(value, "dtype", None) is not None \
            and value.dtype.kind in "biuf":
        return value.item()
    return value


def is_int(value) -> bool:
    """True for Python and NumPy integers; False for bools, floats (even 2.0) and everything else."""
    value = scalar(value)
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _as_float(where: str, name: str, value, wanted: str) -> float:
    """float(value); a Python int too large for a float (10**400) is a ValueError, not an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{where}: {name} must be {wanted}, got an int of {len(str(abs(value)))} digits") from None


def _seen(value) -> str:
    """`value` as a message shows it: its repr and, unless obvious, its type."""
    shown = repr(value)
    return shown if value is None else f"{shown} ({type(value).__name__})"


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    """' >= 0.0', ' in [0.0, 1.0)', ... : the accepted range as the messages print it."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def check_int(where: str, name: str, value, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high) (either bound optional), else TypeError / ValueError."""
    wanted = f"an int{_bounds(low, high, False, True)}"
    given, value = value, scalar(value)
    if not is_int(value):
        hint = ""
        if isinstance(value, float) and math.isfinite(value):
            hint = f"; round it first, e.g. int({value!r})"
        raise TypeError(f"{where}: {name} must be {wanted}, got {_seen(given)}{hint}")
    if (low is not None and value < low) or (high is not None and value >= high):
        raise ValueError(f"{where}: {name} must be {wanted}, got {value!r}")
    return int(value)


def check_number(where: str, name: str, value, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a finite float between low and high (closed ends unless *_open), else TypeError / ValueError."""
    wanted = f"a finite number{_bounds(low, high, low_open, high_open)}"
    given, value = value, scalar(value)
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be {wanted}, got {_seen(given)}")
    value = _as_float(where, name, value, wanted)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        raise ValueError(f"{where}: {name} must be {wanted}, got {value!r}")
    return float(value)


def check_real(where: str, name: str, value) -> float:
    """A real number for a fill value or a bound: +-inf allowed (no bound on that side), NaN refused."""
    value = scalar(value)
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be a number, got {_seen(value)}"[:200])
    value = _as_float(where, name, value, "a number")
    if math.isnan(value):
        raise ValueError(f"{where}: {name} must be a number, not NaN")
    return float(value)


def check_probability(where: str, name: str, value) -> float:
    """A drop rate p in [0, 1): p = 1 would drop everything, and 1 / (1 - p) is infinite."""
    return check_number(where, name, value, 0.0, 1.0, high_open=True)


def check_bool(where: str, name: str, value) -> bool:
    """True or False (a NumPy bool too); 0, 1, "yes" or None are refused with a TypeError."""
    value = scalar(value)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {_seen(value)}")
    return bool(value)


def check_choice(where: str, name: str, value, choices: tuple):
    """One of `choices` (strings, usually), else ValueError listing them."""
    if not isinstance(value, str) and any(isinstance(c, str) for c in choices):
        raise TypeError(f"{where}: {name} must be one of {choices}, got {_seen(value)}")
    if value not in choices:
        raise ValueError(f"{where}: {name} must be one of {choices}, got {value!r}")
    return value


def check_int_pair(where: str, name: str, value, low: int) -> tuple:
    """An int or an (h, w) pair of ints, each >= low, as an (h, w) tuple: kernel sizes, strides, image sizes."""
    wanted = f"an int >= {low} or a pair (h, w) of them"
    if is_int(value):
        values = (value, value)
    elif isinstance(value, (tuple, list)):
        values = tuple(value)
        if len(values) != 2:
            raise ValueError(f"{where}: {name} must be {wanted}, got {value!r} ({len(values)} values)")
    else:
        raise TypeError(f"{where}: {name} must be {wanted}, got {_seen(value)}")
    for v in values:
        if not is_int(v):
            raise TypeError(f"{where}: {name} must be {wanted}, got {value!r}, which holds {_seen(v)}")
    if any(v < low for v in values):
        raise ValueError(f"{where}: {name} must be {wanted}, got {value!r}")
    return int(values[0]), int(values[1])


def check_float_dtype(where: str, name: str, dtype) -> np.dtype:
    """A floating-point NumPy dtype (float16, float32, float64): the dtypes a Parameter can hold."""
    try:
        resolved = np.dtype(dtype) if dtype is not None else None   # np.dtype(None) would be float64
    except TypeError:
        resolved = None
    if resolved is None:
        raise TypeError(f"{where}: {name} must be a float dtype such as np.float32, got {_seen(dtype)}")
    if resolved not in (np.float16, np.float32, np.float64):
        raise TypeError(f"{where}: {name} must be float16, float32 or float64, got {resolved}")
    return resolved
