"""Plumbing every lesson shares: the command line, figures, one BLAS thread, and honest sentences.

    args = parse_args(__doc__)            # --quick, --seed, --out, --device (cpu | cuda)
    plt = pyplot()                        # matplotlib on the Agg backend, imported only when plotting
    save_figure(fig, args.out, "00_loss_curve.png")
    one_blas_thread()                     # small matrices: one BLAS thread, immune to a busy machine
    compare("the CNN", 0.86, "the ViT", 0.72, margin=0.05)   # 'the CNN beat the ViT: 0.860 vs 0.720'
    trend([0.3, 0.5, 0.7], margin=0.05)                     # 'rises'
    accuracy_margin(200)                                    # 0.071: closer accuracies count as equal
    for epoch in (bar := progress(range(epochs), "CLIP", unit="epoch")):   # a bar only on a terminal
        bar.set_postfix(loss=f"{loss:.3f}")

A lesson prints a conclusion only when its own numbers support it: it asks compare() or trend()
for the sentence instead of writing one that was true of some earlier run.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shlex
import sys
from pathlib import Path

__all__ = ["accuracy_margin", "cached_model", "compare", "digit_judge", "optimise", "one_blas_thread", "parse_args", "progress", "pyplot", "save_figure",
           "ticking", "trend"]

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
    if argv is None and _in_jupyter_kernel():
        # A notebook's kernel was started with its own flags (-f kernel.json), not the lesson's: take
        # the lesson's from TINYVISION_LESSON_ARGS instead (empty: the defaults, the full lesson).
        argv = shlex.split(os.environ.get("TINYVISION_LESSON_ARGS", ""))
        print(f"in a Jupyter kernel: lesson arguments {argv} (from TINYVISION_LESSON_ARGS)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:   # before any training, not after it
        parser.error('matplotlib is not installed; the lessons draw their figures with it: '
                     'pip install -e ".[dev]"')
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


def _in_jupyter_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel, where sys.argv holds the kernel's flags."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


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


def progress(iterable=None, desc: str = "", total: int | None = None, unit: str = "it", leave: bool = True):
    """A tqdm progress bar over `iterable` (rate, count, and what set_postfix adds), drawn only when watched.

        for epoch in (bar := progress(range(epochs), "CLIP", unit="epoch")):
            ...
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.write("a line of narrative")          # print() would break the bar in two

    The bar goes to stderr, and only when stdout and stderr are both terminals. Piped or redirected
    (CI, a log file, the tests), or without tqdm (it comes with the [dev] extra), progress() returns a
    stand-in that iterates `iterable` and whose set_postfix, update and close do nothing (write prints):
    the lesson's output is then exactly its narrative. tqdm is imported here, on first use, never by
    `import tinyvision`, which needs NumPy alone. Without an iterable, call update() per item and
    close() at the end, or use it in a `with` block. leave=False wipes the bar when it is done.
    """
    if sys.stdout.isatty() and sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, dynamic_ncols=True)
    return _NoBar(iterable)


class _NoBar:
    """progress() when nobody watches: the iterable itself, and the bar's methods as no-ops."""

    def __init__(self, iterable):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def set_postfix(self, *args, **kwargs):
        pass

    def set_postfix_str(self, *args, **kwargs):
        pass

    def update(self, n=1):
        pass

    def close(self):
        pass

    def write(self, line: str):
        print(line)


def ticking(bar, augment=None):
    """An `augment` for tinyvision.training.train_classifier that also advances `bar` by one step.

    train_classifier calls augment(x_batch, rng) once per training batch, its one per-step hook; the
    batch comes back as `augment` makes it (unchanged when augment is None), so training is the same.
    """
    def augment_and_tick(xb, rng):
        bar.update()
        return xb if augment is None else augment(xb, rng)
    return augment_and_tick


def optimise(step_loss, opt, steps: int, desc: str, schedule=None, log_every: int = 100) -> list:
    """The training loop, `steps` times: loss = step_loss(); zero the gradients; backward; the schedule's
    step (if any), then the optimiser's. Returns the losses; the bar shows the mean of the last log_every."""
    losses = []
    for step in (bar := progress(range(steps), desc, unit="step")):
        loss = step_loss()
        opt.zero_grad()
        loss.backward()
        if schedule is not None:
            schedule.step()
        opt.step()
        losses.append(loss.item())
        if step % log_every == 0:
            bar.set_postfix(loss=f"{sum(losses[-log_every:]) / len(losses[-log_every:]):.3f}")
    return losses


def train_clip_batches(model, images, ids, batches, opt, schedule, desc: str = "CLIP") -> list:
    """CLIP's contrastive loop over `batches` (lists of row indices into images and ids): the loss, the
    gradient clipped to norm 1, the schedule's step then the optimiser's, the logit scale clamped.
    Returns the losses. Lessons 05 and 08b train their CLIPs with it (lesson 04 narrates its own)."""
    import tinyvision as tv
    from tinyvision.models.contrastive import clamp_logit_scale, clip_loss
    from tinyvision.optim import clip_grad_norm
    losses = []
    with progress(desc=desc, total=len(batches), unit="step") as bar:
        for idx in batches:
            img, txt = model(tv.Tensor(images[idx]), ids[idx])
            loss = clip_loss(img, txt, model.logit_scale)
            opt.zero_grad()
            loss.backward()
            clip_grad_norm(model.parameters(), 1.0)
            schedule.step()
            opt.step()
            clamp_logit_scale(model.logit_scale)
            losses.append(loss.item())
            bar.update()
    return losses


def cached_model(out_dir, name: str, model, train):
    """`model` with the weights saved in out_dir/name, or, when that file is missing, damaged or from
    another architecture, after train(model), which are then saved there. Returns (model, loaded).

    Lessons share trained models this way (the digit judge of 06, 07 and 08; the CLIP, VAE and
    denoiser of 08b), so a second run skips their training. Delete the file to train afresh.
    """
    from tinyvision.io import load_checkpoint, save_checkpoint
    path = Path(out_dir) / name
    try:
        load_checkpoint(path, model)
        print(f"{name}: loaded from {path}")
        return model, True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    train(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model)
    print(f"{name}: trained and saved to {path}")
    return model, False


def digit_judge(out_dir, epochs: int = 30, seed: int = 0):
    """The digit judge of tinyvision.models.judge, trained once and cached as out_dir/digit_judge_e{epochs}_s{seed}.npz.

    Lessons 06 (VAE), 07 (GAN) and 08 (diffusion) score their samples with the same judge, so that
    their numbers compare.
    """
    from tinyvision.models import SmallCNN
    from tinyvision.models.judge import train_digit_judge

    def train(model):
        model.load_state_dict(train_digit_judge(epochs=epochs, seed=seed).state_dict())
    judge, _ = cached_model(out_dir, f"digit_judge_e{epochs}_s{seed}.npz", SmallCNN(img_size=8, seed=seed), train)
    return judge.eval()


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


def accuracy_margin(n_examples: int) -> float:
    """How far apart two accuracies measured on n examples must be before a lesson calls one better.

    An accuracy p measured on n examples has a standard error of sqrt(p (1 - p) / n), at most
    0.5 / sqrt(n) (at p = 0.5). Two of those, 1 / sqrt(n), is the rule of thumb used here: 0.071 for
    200 test images, 0.032 for 1,000. Differences inside it are reported as "about equal".
    """
    if n_examples < 1:
        raise ValueError(f"accuracy_margin: n_examples must be >= 1, got {n_examples}")
    return 1.0 / math.sqrt(n_examples)


def compare(name_a: str, a: float, name_b: str, b: float, margin: float = 0.0, higher_is_better: bool = True,
            verb: str = "beat", fmt: str = ".3f", unit: str = "") -> str:
    """The sentence that two measurements support: which one won, or that they are about equal.

        compare("the CNN", 0.864, "the ViT", 0.724)             'the CNN beat the ViT: 0.864 vs 0.724'
        compare("the CNN", 0.70, "the ViT", 0.72, margin=0.05)  'the CNN and the ViT are about equal:
                                                                 0.700 vs 0.720 (within 0.050)'
        compare("numba", 0.8, "numpy", 1.5, higher_is_better=False, verb="is faster than", fmt=".2f",
                unit=" ms")                                     'numba is faster than numpy: 0.80 ms vs 1.50 ms'

    |a - b| <= margin counts as a tie; higher_is_better=False for times and losses. The winner is
    named first, and the numbers follow in the same order as the names.
    """
    def show(x):
        return f"{x:{fmt}}{unit}"

    if abs(a - b) <= margin:
        within = f" (within {margin:{fmt}}{unit})" if margin > 0 else ""
        return f"{name_a} and {name_b} are about equal: {show(a)} vs {show(b)}{within}"
    a_wins = (a > b) == higher_is_better
    (win, w), (lose, x) = ((name_a, a), (name_b, b)) if a_wins else ((name_b, b), (name_a, a))
    return f"{win} {verb} {lose}: {show(w)} vs {show(x)}"


def trend(values, margin: float = 0.0) -> str:
    """What a sequence of measurements does, in one word: "rises", "falls", "flat" or "mixed".

    "flat": all of them lie within `margin` of each other. "rises": no step goes down by more than
    `margin` and the last is more than `margin` above the first ("falls" the mirror image).
    Anything else is "mixed": up and down, no trend to report.
    """
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"trend: needs at least 2 values, got {len(values)}")
    if max(values) - min(values) <= margin:
        return "flat"
    steps = [b - a for a, b in zip(values, values[1:])]
    if all(s >= -margin for s in steps) and values[-1] - values[0] > margin:
        return "rises"
    if all(s <= margin for s in steps) and values[0] - values[-1] > margin:
        return "falls"
    return "mixed"
