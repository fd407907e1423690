"""What Python must know of csrc/flash_attention.cu to launch it: tile, threads, head dims, shared memory.

Kept apart from attention_cuda_c.py (which needs CuPy and a GPU to import) so that the layout can be read and
tested anywhere: tests/test_flash_cuda_c.py runs the kernel source on a host emulation with exactly
these shared-memory sizes, and AddressSanitizer stops any access past them.
"""
from __future__ import annotations

__all__ = ["HEAD_DIMS", "MAX_GRID_Y", "THREADS", "TILE", "shared_memory_bytes"]

HEAD_DIMS = (16, 32, 64, 128)  # one compiled kernel per head dim (TV_ATTENTION_KERNELS in the .cu)
TILE = 64                      # query / key rows per tile  (tv::TILE)
THREADS = 256                  # threads per block          (tv::THREADS)
MAX_GRID_Y = 65535             # the grid's y axis holds BH


def shared_memory_bytes(kernel: str, d: int) -> int:
    """Dynamic shared memory of one block of `kernel` ("forward", "dk_dv" or "dq") for head dim d.

    The tiles are laid out as in the .cu file: Q, K, V, dO rows padded to d + 1 floats and P / dS rows
    to TILE + 1 (tv::LDP), both against shared-memory bank conflicts.
    """
    ld, ldp, t = d + 1, TILE + 1, TILE
    floats = {"forward": 3 * t * ld + t * ldp,                  # Q, K, V tiles and P
              "dk_dv": 4 * t * ld + t * ldp + 2 * t,           # K, V, Q, dO tiles, P / dS, L and D
              "dq": 4 * t * ld + t * ldp}[kernel]              # Q, dO, K, V tiles and dS
    return 4 * floats
