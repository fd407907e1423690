"""Plumbing every lesson shares: the command line, figures, and one BLAS thread.

    args = parse_args(__doc__)            # --quick, --seed, --out, --device (cpu | cuda)
    plt = pyplot()                        # matplotlib on the Agg backend, imported only when plotting
    save_figure(fig, args.out, "00_loss_curve.png")
    one_blas_thread()                     # small matrices: one BLAS thread, immune to a busy machine
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["one_blas_thread", "parse_args", "pyplot", "save_figure"]

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def parse_args(doc: str | None, argv=None, cpu_only: str | None = None) -> argparse.Namespace:
    """--quick (small and fast, for CI), --seed (default 0), --out (figure folder, default lessons/out),
    --device: where new tensors go (tinyvision.use_device). With --device cuda every model, input and
    constant the lesson builds lives on the GPU; nothing else in the lesson changes. A lesson about the
    CPU itself passes cpu_only="why", and runs on the CPU whatever --device says."""
    title = (doc or "").strip().splitlines()[0] if doc else None
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--quick", action="store_true", help="fewer points and steps, for CI (seconds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for figures (default {DEFAULT_OUT})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="cpu or cuda (default: TINYVISION_DEVICE, else cpu); cuda needs the [gpu] extra")
    args = parser.parse_args(argv)
    if cpu_only and (args.device or os.environ.get("TINYVISION_DEVICE", "cpu")) != "cpu":
        print(f"--device {args.device or os.environ['TINYVISION_DEVICE']} ignored: {cpu_only}")
        args.device = "cpu"
    if args.device is not None:
        os.environ["TINYVISION_DEVICE"] = args.device   # read by tinyvision.default_device()
    import tinyvision  # noqa: PLC0415
    args.device = tinyvision.default_device()
    if args.device == "cuda" and not tinyvision.cuda_available():
        from tinyvision.backend import cuda_unavailable_reason  # noqa: PLC0415
        parser.error(f"--device cuda: {cuda_unavailable_reason()}")
    print(f"device: {args.device}")
    return args


def pyplot():
    """matplotlib.pyplot on the Agg backend: files only, no window, works without a display."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, out_dir, name: str) -> Path:
    """Save `fig` as out_dir/name (PNG), close it, and say where it went."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    print(f"saved {path}")
    return path


def one_blas_thread() -> bool:
    """Run NumPy's BLAS on one thread (through threadpoolctl, which scikit-learn installs).

    A lesson multiplies small matrices, for which extra BLAS threads buy nothing; and when another
    program keeps the cores busy, BLAS threads that wait for each other can make a step 10-20x
    slower. One thread also makes every sum run in one fixed order. Returns False (and changes
    nothing) when threadpoolctl is missing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(1, user_api="blas")
    return True
