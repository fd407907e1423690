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


# --- the default device: where new tensors made from host data go --------------------------------
def test_default_device_is_cpu_and_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("TINYVISION_DEVICE", raising=False)
    assert tv.default_device() == "cpu"
    monkeypatch.setenv("TINYVISION_DEVICE", "gpu0")
    with pytest.raises(ValueError, match=r"TINYVISION_DEVICE must be one of \('cpu', 'cuda'\), got 'gpu0'"):
        tv.default_device()
    monkeypatch.setenv("TINYVISION_DEVICE", "cpu")
    with tv.use_device("cpu"):
        assert tv.default_device() == "cpu" and tv.Tensor([1.0]).device == "cpu"


def test_use_device_cuda_without_a_gpu_fails_at_once_with_the_reason():
    if tv.cuda_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(tv.DeviceUnavailableError, match='device "cuda" is unavailable: .+'):
        with tv.use_device("cuda"):
            pass
    assert tv.default_device() == "cpu"                       # restored, nothing half-set


@pytest.mark.parametrize("device", DEVICES)
def test_use_device_puts_new_tensors_and_models_there_and_keeps_op_outputs_in_place(device):
    from tinyvision.models import ViT
    with tv.use_device(device):
        model = ViT(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depth=1, num_heads=2, seed=0)
        x = tv.Tensor(np.ones((2, 1, 8, 8), np.float32))
        assert x.device == device and all(p.device == device for p in model.parameters())
        loss = F.cross_entropy(model(x), np.array([0, 2]))
        loss.backward()
        assert loss.device == device and all(p.grad is not None and tv.backend.device_of(p.grad) == device
                                             for p in model.parameters())
        cpu_copy = loss.detach().to("cpu")
        assert cpu_copy.device == "cpu"                       # an explicit move is kept, not re-placed
    assert tv.Tensor([1.0]).device == "cpu"                   # the default is restored after the block



@pytest.mark.parametrize("device", DEVICES)
def test_factories_follow_the_default_device_unless_told(device):
    with tv.use_device(device):
        made = [tv.zeros((2, 3)), tv.ones((2, 3)), tv.randn((2, 3), seed=0)]
        assert [t.device for t in made] == [device] * 3
        assert tv.zeros(2, device="cpu").device == "cpu"     # an explicit device wins
    assert tv.zeros(2).device == "cpu"
    host = tv.randn((4,), seed=1).data
    with tv.use_device(device):                               # the same seed gives the same numbers anywhere
        np.testing.assert_array_equal(tv.backend.to_device(tv.randn((4,), seed=1).data, "cpu"), host)
