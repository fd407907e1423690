"""The one place that decides where arrays live: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every Tensor holds a raw array of one of two libraries. The library is never a global
setting: it is read off the array itself (`xp_of(array)`), so the same op code runs on
both, exactly as NumPy and CuPy share one API. Moving between them is explicit:
`tensor.to("cuda")` and `tensor.to("cpu")`.

One visible default decides where NEW tensors made from host data go (parameters, inputs,
constants): "cpu" unless the environment variable TINYVISION_DEVICE says "cuda", or a block runs
under `with use_device("cuda"):`. That is how a whole model or lesson moves to the GPU without a
code change (`python lessons/03_vit.py --device cuda`). Arrays already on a device stay there, and
op outputs stay where the op ran.

CuPy is an optional extra (`pip install -e ".[gpu]"`). Nothing here imports it until a
cuda array is asked for, so `import tinyvision` needs NumPy alone. When it is asked for
and cannot work, `DeviceUnavailableError` says which piece is missing and how to fix it.
"""
from __future__ import annotations

import contextlib
import importlib
import os

import numpy as np

__all__ = [
    "DEVICES",
    "DeviceUnavailableError",
    "cuda_available",
    "cuda_unavailable_reason",
    "default_device",
    "device_of",
    "optional_import",
    "scatter_add",
    "to_device",
    "use_device",
    "xp_of",
]

DEVICES = ("cpu", "cuda")


class DeviceUnavailableError(RuntimeError):
    """Raised when a device is requested that this machine cannot provide."""


def optional_import(module: str, extra: str, purpose: str):
    """Import an optional dependency, or fail with the extra that installs it.

    `optional_import("matplotlib.pyplot", "dev", "plotting")` returns the module, or raises
    ImportError: 'plotting needs matplotlib.pyplot: pip install -e ".[dev]"'.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f'{purpose} needs the package {module.split(".")[0]!r}, which is not installed '
            f'({err}). Install it with: pip install -e ".[{extra}]"'
        ) from err


# --- CuPy, looked up once and only on demand -------------------------------------------------
_cupy = None          # the module, once it imported and found a GPU
_cupy_reason = None   # why it cannot be used, once that is known


def _probe_cupy() -> None:
    global _cupy, _cupy_reason
    if _cupy is not None or _cupy_reason is not None:
        return
    try:
        import cupy  # noqa: PLC0415 - optional, imported only when cuda is requested
    except ImportError as err:
        _cupy_reason = (
            f"CuPy is not installed ({err}). Install the GPU extra for the machine's CUDA "
            '(nvidia-smi shows it): pip install -e ".[gpu]" for CUDA 12, ".[gpu-cuda13]" for CUDA 13'
        )
        return
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError, or a missing libcuda.so
        _cupy_reason = f"CuPy is installed but no CUDA device could be opened ({err!r}). Check the NVIDIA driver with nvidia-smi."
        return
    if count == 0:
        _cupy_reason = "CuPy is installed but this machine has no CUDA GPU (device count 0)."
        return
    _cupy = cupy


def cuda_available() -> bool:
    """True when CuPy is installed and at least one GPU answers."""
    _probe_cupy()
    return _cupy is not None


def cuda_unavailable_reason() -> str | None:
    """Why "cuda" cannot be used here (None when it can): for skip reasons and errors."""
    _probe_cupy()
    return _cupy_reason


def _require_cupy():
    _probe_cupy()
    if _cupy is None:
        raise DeviceUnavailableError(f'device "cuda" is unavailable: {_cupy_reason}')
    return _cupy


# --- Reading and changing the device of an array ---------------------------------------------
def _is_cupy_array(array) -> bool:
    # Checked by the class's module name so that CuPy is never imported just to ask. The first test
    # answers the common case, a NumPy array, without the string compare (ops ask ~1000 times a step).
    kind = type(array)
    return kind is not np.ndarray and kind.__module__.startswith("cupy")


def xp_of(array):
    """The array library (numpy or cupy) that owns `array`."""
    return _require_cupy() if _is_cupy_array(array) else np


def device_of(array) -> str:
    """"cuda" for a CuPy array, "cpu" for anything else."""
    return "cuda" if _is_cupy_array(array) else "cpu"


def check_device_name(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    return device


_default_device = None   # set by use_device(); None means "read TINYVISION_DEVICE, else cpu"


def default_device() -> str:
    """Where new tensors built from host data go: use_device's choice, else TINYVISION_DEVICE, else "cpu"."""
    if _default_device is not None:
        return _default_device
    device = os.environ.get("TINYVISION_DEVICE", "cpu")
    if device not in DEVICES:
        raise ValueError(f"TINYVISION_DEVICE must be one of {DEVICES}, got {device!r}")
    return device


@contextlib.contextmanager
def use_device(device: str):
    """Inside the block, new tensors made from host data live on `device`; restores the previous default after."""
    global _default_device
    check_device_name(device)
    if device == "cuda":
        _require_cupy()                  # fail here, with the reason, not at the first tensor
    previous, _default_device = _default_device, device
    try:
        yield
    finally:
        _default_device = previous


def to_device(array, device: str):
    """Return `array` on `device`, copying only when it has to move."""
    check_device_name(device)
    if device == device_of(array):
        return array
    if device == "cuda":
        return _require_cupy().asarray(array)
    return array.get()  # cupy -> numpy


def scatter_add(target, index, values) -> None:
    """target[index] += values, with repeated indices adding up (unbuffered).

    Plain `target[index] += values` keeps only the last write for a repeated index, which is
    wrong for the backward of indexing and embedding lookups (the same row used twice must
    receive both gradients). NumPy spells the unbuffered form np.add.at; CuPy cupyx.scatter_add.
    """
    if _is_cupy_array(target):
        import cupyx  # noqa: PLC0415

        cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)
