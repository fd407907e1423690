"""Tensor and reverse-mode automatic differentiation.

A Tensor wraps one raw array (NumPy or CuPy, see backend.py). Every op builds its output
with `Tensor.from_op(data, parents, backward)`, where `backward(g)` maps the gradient of
the loss with respect to the output, dL/dout (same shape as the output), to a tuple of
gradients dL/dparent, one per parent (None where a parent needs none). That is the whole
contract: the chain rule dL/dx = sum over outputs y of (dL/dy)(dy/dx) is then applied by
`Tensor.backward` in reverse topological order.

Three invariants, each with a regression test (tests/test_tensor.py):
1. A node used twice (b = a + a) receives the SUM of both gradients. We therefore collect
   every gradient of a node before running its backward, which the reverse topological
   order guarantees.
2. The sort is iterative (an explicit stack), so a chain of 10,000 ops does not hit
   Python's recursion limit, as a recursive depth-first search does near depth 1000.
3. Leaf tensors accumulate into `.grad` (+=) across backward calls, like PyTorch; the graph
   is kept, so `zero_grad()` then `backward()` again gives the same gradients.
"""
from __future__ import annotations

import contextlib
import numbers

import numpy as np

from .backend import check_device_name, default_device, device_of, to_device, xp_of

__all__ = ["Tensor", "as_tensor", "is_grad_enabled", "no_grad", "ones", "randn", "zeros"]

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
DEFAULT_DTYPE = np.dtype(np.float32)

# --- Grad mode -------------------------------------------------------------------------------
_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Inside this block ops record no graph: for evaluation and for optimizer updates."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def _to_float_array(data, dtype):
    """Turn array-likes into a floating array (NumPy, or CuPy left where it is)."""
    if isinstance(data, Tensor):
        data = data.data
    is_array = hasattr(data, "dtype") and hasattr(data, "shape")  # keep an array's own float dtype
    array = data if device_of(data) == "cuda" else np.asarray(data)
    if dtype is None:
        dtype = array.dtype if (is_array and array.dtype in FLOAT_DTYPES) else DEFAULT_DTYPE
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"Tensor dtype must be one of float16, float32, float64; got {dtype}. "
                        "Integer indices (labels, token ids) are passed to ops as plain arrays.")
    if array.dtype.kind not in "fiub":
        raise TypeError(f"cannot make a Tensor from an array of dtype {array.dtype}")
    return array.astype(dtype, copy=False)


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    Attributes:
        data: the raw array (numpy.ndarray or cupy.ndarray), float32 unless asked otherwise.
        grad: dL/dtensor as a raw array of the same shape, filled in by backward(); None before.
        requires_grad: whether gradients flow to this tensor.
    """

    __array_priority__ = 1000  # so that ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device: str | None = None):
        array = _to_float_array(data, dtype)
        if device is None and device_of(array) == "cpu":
            device = default_device()        # host data goes to the default device (backend.use_device)
        if device is not None:
            array = to_device(array, check_device_name(device))
        self.data = array
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents: tuple = ()
        self._backward = None
        self._op = ""  # the name of the op that made this tensor, for repr and debugging

    # --- how ops build outputs ---------------------------------------------------------------
    @classmethod
    def from_op(cls, data, parents, backward, op: str) -> "Tensor":
        """Wrap an op's output; record the graph only when a gradient can flow through it.

        This is how every op in tinyvision.ops is built, and how you write your own:
        `data` is the raw output array, `parents` the input Tensors, `backward(g)` returns one
        gradient array (or None) per parent, and `op` names the node for printing.
        """
        out = cls.__new__(cls)
        Tensor.__init__(out, data, dtype=data.dtype, device=device_of(data))   # stays where the op ran
        if _grad_enabled and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward = backward
            out._op = op
        return out

    # --- plain properties -------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: int(self.data.size))
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: device_of(self.data))
    is_leaf = property(lambda self: self._backward is None)
    parents = property(lambda self: self._parents, doc="The input Tensors of the op that made this one.")
    op = property(lambda self: self._op, doc="The name of the op that made this tensor ('' for a leaf).")

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor (a scalar)")
        return self.shape[0]

    def __repr__(self):
        grad = f", grad_fn={self._op}" if self._op else (", requires_grad=True" if self.requires_grad else "")
        dev = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(self.numpy(), precision=4, threshold=20, edgeitems=2, prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{dev}{grad})"

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied off the GPU when needed)."""
        return to_device(self.data, "cpu")

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return float(self.numpy().reshape(()))

    def to(self, device: str) -> "Tensor":
        """This tensor on `device` ("cpu" or "cuda").

        A leaf gives a new leaf (keeping requires_grad); inside a graph the move is an op whose
        backward moves the gradient back, so moving an intermediate result never cuts the graph.
        """
        data = to_device(self.data, check_device_name(device))
        if self.is_leaf:
            return Tensor(data, requires_grad=self.requires_grad, device=device)
        source = self.device
        return Tensor.from_op(data, (self,), lambda g: (to_device(g, source),), "to")

    def astype(self, dtype) -> "Tensor":
        """A leaf copy with another float dtype (no gradient flows through a cast)."""
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad, dtype=dtype, device=self.device)

    def detach(self) -> "Tensor":
        """The same values, cut from the graph: no gradient flows back through the result."""
        return Tensor(self.data, dtype=self.dtype, device=self.device)

    def zero_grad(self) -> None:
        self.grad = None

    # --- reverse-mode autodiff -------------------------------------------------------------
    def _topological_order(self) -> list:
        """Nodes that lead to self, each after all its parents (iterative depth-first search)."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, parents_done = stack.pop()
            if parents_done:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for parent in node._parents:
                if id(parent) not in visited and parent.requires_grad:
                    stack.append((parent, False))
        return order

    def backward(self, grad=None) -> None:
        """Accumulate dself/dleaf into `.grad` of every leaf that requires grad.

        `grad` is dL/dself; it may be omitted only for a scalar, where it is 1.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: no input "
                               "of the computation had requires_grad=True (or it ran under no_grad)")
        xp = xp_of(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() on a non-scalar tensor of shape {self.shape} needs an "
                                   "explicit gradient of the same shape, e.g. y.backward(np.ones(y.shape))")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            grad = xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward(grad): grad has shape {tuple(grad.shape)}, expected the "
                                 f"tensor's shape {self.shape}")

        grads = {id(self): grad}  # dL/dnode for every node reached so far
        for node in reversed(self._topological_order()):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None:  # a leaf: accumulate like PyTorch
                # The first gradient is copied (g may be shared with other nodes); a later one adds into a
                # new array, which needs no second copy. asarray keeps a 0-d sum an array: a NumPy scalar
                # would make an in-place update such as p.grad *= s a silent no-op.
                # (the leaf's own library: a leaf on the CPU keeps a NumPy gradient whatever the loss's device)
                lib = xp_of(node.data)
                node.grad = lib.array(g) if node.grad is None else lib.asarray(node.grad + g)
                continue
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                if pg.shape != parent.data.shape:  # a broken backward must fail here, loudly
                    raise RuntimeError(f"backward of {node._op!r} returned a gradient of shape "
                                       f"{tuple(pg.shape)} for an input of shape {parent.shape}")
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg

    # --- operators: thin wrappers over tinyvision.ops -----------------------------------------
    def __add__(self, other): return _ops.add(self, other)
    def __radd__(self, other): return _ops.add(other, self)
    def __sub__(self, other): return _ops.sub(self, other)
    def __rsub__(self, other): return _ops.sub(other, self)
    def __mul__(self, other): return _ops.mul(self, other)
    def __rmul__(self, other): return _ops.mul(other, self)
    def __truediv__(self, other): return _ops.div(self, other)
    def __rtruediv__(self, other): return _ops.div(other, self)
    def __neg__(self): return _ops.neg(self)
    def __pow__(self, exponent): return _ops.pow(self, exponent)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __getitem__(self, index): return _ops.getitem(self, index)

    def sum(self, axis=None, keepdims=False): return _ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops.max(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, ddof=0): return _ops.var(self, axis, keepdims, ddof)
    def reshape(self, *shape): return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)
    def transpose(self, *axes): return _ops.transpose(self, axes[0] if len(axes) == 1 else (axes or None))
    def permute(self, *axes): return _ops.permute(self, axes[0] if len(axes) == 1 else axes)
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def tanh(self): return _ops.tanh(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def relu(self): return _ops.relu(self)
    def softmax(self, axis=-1): return _ops.softmax(self, axis)
    def log_softmax(self, axis=-1): return _ops.log_softmax(self, axis)

    @property
    def T(self):
        return _ops.transpose(self, None)


def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """Return x as a Tensor. Constants (numbers, arrays) take the dtype and device of `like`."""
    if isinstance(x, Tensor):
        return x
    if like is None:
        return Tensor(x)
    if isinstance(x, numbers.Number):
        return Tensor(xp_of(like.data).asarray(x, dtype=like.dtype))
    return Tensor(to_device(np.asarray(x) if device_of(x) == "cpu" else x, like.device), dtype=like.dtype)


# --- factories -------------------------------------------------------------------------------
# The factories build on the host and hand the array to Tensor, which moves it to `device`; device=None
# means the default device (use_device / TINYVISION_DEVICE), as for every Tensor made from host data.
def zeros(shape, dtype=DEFAULT_DTYPE, requires_grad=False, device: str | None = None) -> Tensor:
    """A tensor of zeros on `device` (None: the default device)."""
    return Tensor(np.zeros(shape, dtype=dtype), requires_grad=requires_grad, device=device)


def ones(shape, dtype=DEFAULT_DTYPE, requires_grad=False, device: str | None = None) -> Tensor:
    """A tensor of ones on `device` (None: the default device)."""
    return Tensor(np.ones(shape, dtype=dtype), requires_grad=requires_grad, device=device)


def randn(shape, seed: int | np.random.Generator, dtype=DEFAULT_DTYPE, requires_grad=False,
          device: str | None = None) -> Tensor:
    """Standard-normal values from an explicit seed (or Generator): reproducible by construction. The
    numbers are drawn on the host, so a seed gives the same values on every device."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=requires_grad, device=device)


from . import ops as _ops  # noqa: E402  (ops import Tensor; the class must exist first)
