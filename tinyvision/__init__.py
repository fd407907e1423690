"""tinyvision: vision models from first principles, on a NumPy autograd engine.

    import tinyvision as tv
    import tinyvision.ops as F
    x = tv.Tensor([[1.0, 2.0]], requires_grad=True)
    F.gelu(x @ x.T).sum().backward()

On an NVIDIA GPU (pip install -e ".[gpu]"): tensor.to("cuda"), module.to("cuda"), or make every
new tensor there with `with tv.use_device("cuda"):` / TINYVISION_DEVICE=cuda.

Only NumPy is needed to import this package; Numba, CuPy, matplotlib and friends are
imported lazily by the parts that use them.
"""
from . import data, io, models, nn, ops, optim, text, training
from .backend import DeviceUnavailableError, cuda_available, default_device, use_device
from .gradcheck import GradcheckError, gradcheck
from .tensor import Tensor, as_tensor, is_grad_enabled, no_grad, ones, randn, zeros

__version__ = "0.1.0"

__all__ = ["DeviceUnavailableError", "GradcheckError", "Tensor", "as_tensor", "cuda_available", "data", "default_device",
           "gradcheck", "io", "is_grad_enabled", "models", "nn", "no_grad", "ones", "ops", "optim", "randn", "text",
           "training", "use_device", "zeros"]
