"""Backends: `import tinyvision` needs NumPy alone, and tensors move between devices explicitly."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinyvision as tv
import tinyvision.ops as F
from devices import DEVICES

BLOCK_OPTIONAL = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"numba", "cupy", "cupyx", "scipy", "matplotlib", "sklearn", "tqdm",
                                      "hypothesis", "pytest", "torch"}:
                raise ImportError("blocked for this test: " + name)
    sys.meta_path.insert(0, Block())
""")


def test_import_and_train_step_with_numpy_alone():
    """Every optional package is blocked; importing, a forward/backward, and the exact GELU still work."""
    code = BLOCK_OPTIONAL + textwrap.dedent("""
        import numpy as np, tinyvision as tv, tinyvision.ops as F
        from tinyvision import nn
        block = nn.TransformerBlock(8, 2, seed=0)
        x = tv.randn((2, 3, 8), seed=0)
        block(x).sum().backward()
        y = F.gelu(tv.Tensor(np.array([1.0]))).item()
        assert abs(y - 0.8413447460685429) < 1e-12, y   # 1 * Phi(1), via math.erf without Numba
        print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {"numba", "cupy", "scipy", "matplotlib"}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok []"


@pytest.mark.parametrize("device", DEVICES)
def test_to_device_round_trip_keeps_values(device):
    x = tv.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    y = x.to(device)
    assert y.device == device and y.requires_grad
    np.testing.assert_array_equal(y.to("cpu").numpy(), x.numpy())


@pytest.mark.parametrize("device", DEVICES)
def test_training_graph_runs_on_device(device):
    from tinyvision import nn
    block = nn.TransformerBlock(8, 2, seed=0).to(device)
    x = tv.randn((2, 3, 8), seed=1, device=device)
    loss = F.mean(block(x) * block(x))
    loss.backward()
    assert all(p.grad is not None and tv.Tensor(p.grad).device == device for p in block.parameters())


def test_cpu_to_cpu_does_not_copy_needlessly():
    x = tv.Tensor(np.ones(3, np.float32))
    assert x.to("cpu").data is x.data
