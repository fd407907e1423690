"""Lessons print only the conclusions their own numbers support, and nothing else when piped.

The sentences come from lessons/_common.py (compare, trend, accuracy_margin); these tests check that
each one says what the numbers say, in both orders, and that no lesson hard-codes a measured count.
The progress bars (progress, ticking) draw only on a terminal: piped output is the narrative alone.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
sys.path.insert(0, str(LESSONS))

from _common import accuracy_margin, compare, progress, ticking, trend  # noqa: E402


def test_compare_names_the_higher_number_first_in_either_order():
    assert compare("the CNN", 0.864, "the ViT", 0.724) == "the CNN beat the ViT: 0.864 vs 0.724"
    assert compare("the CNN", 0.724, "the ViT", 0.864) == "the ViT beat the CNN: 0.864 vs 0.724"


def test_compare_lower_is_better_for_times():
    kw = dict(higher_is_better=False, verb="is faster than", fmt=".1f", unit=" ms")
    assert compare("numba", 1.0, "numpy", 3.0, **kw) == "numba is faster than numpy: 1.0 ms vs 3.0 ms"
    assert compare("numba", 3.0, "numpy", 1.0, **kw) == "numpy is faster than numba: 1.0 ms vs 3.0 ms"


def test_compare_calls_a_difference_inside_the_margin_a_tie():
    tie = compare("A", 0.70, "B", 0.72, margin=0.05)
    assert tie == "A and B are about equal: 0.700 vs 0.720 (within 0.050)"
    assert compare("A", 0.72, "B", 0.70, margin=0.05).startswith("A and B are about equal")
    assert compare("A", 0.80, "B", 0.70, margin=0.05).startswith("A beat B")
    assert compare("A", 0.5, "B", 0.5) == "A and B are about equal: 0.500 vs 0.500"


@pytest.mark.parametrize("values, margin, word", [
    ([0.3, 0.5, 0.7], 0.05, "rises"),
    ([0.7, 0.5, 0.3], 0.05, "falls"),
    ([0.50, 0.52, 0.49], 0.05, "flat"),
    ([0.3, 0.7, 0.3], 0.05, "mixed"),
    ([0.30, 0.29, 0.60], 0.05, "rises"),     # a dip inside the margin does not break a rise
    ([0.30, 0.20, 0.60], 0.05, "mixed"),     # a dip beyond it does
    ([0.335, 0.355, 0.380], 0.071, "flat"),  # lesson 03's tiny objects under --quick: no trend to report
])
def test_trend_reports_what_the_sequence_does(values, margin, word):
    assert trend(values, margin) == word


def test_accuracy_margin_is_two_worst_case_standard_errors():
    assert accuracy_margin(200) == pytest.approx(2 * 0.5 / 200 ** 0.5)
    assert accuracy_margin(10_000) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="n_examples"):
        accuracy_margin(0)


def test_no_lesson_writes_the_full_training_set_size_as_a_literal():
    # lesson 03 once said "the same 1,438 images" under --quick, which trains on 300
    for path in sorted(LESSONS.glob("[0-9][0-9]*_*.py")):
        text = path.read_text()
        assert "1,438" not in text and "1438" not in text, path.name


def test_progress_draws_nothing_when_output_is_not_a_terminal(capsys):
    # under pytest stdout and stderr are captured, as in CI: no bar, the items pass through unchanged
    bar = progress(range(3), "steps", total=3)
    seen = []
    for i in bar:
        seen.append(i)
        bar.set_postfix(loss=f"{0.5:.3f}")
        bar.set_postfix_str("loss 0.5")
    bar.write("narrative")
    with progress(desc="manual", total=2) as manual:
        manual.update()
        manual.update()
    out, err = capsys.readouterr()
    assert seen == [0, 1, 2]
    assert out == "narrative\n" and err == ""


def test_ticking_counts_each_batch_and_returns_what_augment_returns():
    class Counter:
        n = 0

        def update(self, n=1):
            self.n += n

    bar, xb, rng = Counter(), np.arange(6.0).reshape(2, 3), np.random.default_rng(0)
    assert ticking(bar)(xb, rng) is xb
    assert np.array_equal(ticking(bar, lambda b, r: b + 1)(xb, rng), xb + 1)
    assert bar.n == 2


def test_import_tinyvision_does_not_import_tqdm():
    """tqdm is for the lessons' progress bars only; the package needs NumPy alone."""
    code = "import sys, tinyvision, tinyvision.training; print('tqdm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_cached_model_trains_once_then_loads_and_retrains_a_damaged_file(tmp_path, capsys):
    from _common import cached_model
    from tinyvision.nn import Linear
    calls = []

    def train(model):
        calls.append(1)
        model.weight.data[...] = 7.0
    first, loaded = cached_model(tmp_path, "m.npz", Linear(2, 3, seed=0), train)
    assert not loaded and calls == [1] and (first.weight.data == 7).all()
    second, loaded = cached_model(tmp_path, "m.npz", Linear(2, 3, seed=1), train)
    assert loaded and calls == [1] and (second.weight.data == 7).all()
    other, loaded = cached_model(tmp_path, "m.npz", Linear(3, 3, seed=0), train)   # another shape: retrained
    assert not loaded and calls == [1, 1]
    (tmp_path / "m.npz").write_bytes(b"not a checkpoint")
    _, loaded = cached_model(tmp_path, "m.npz", Linear(3, 3, seed=0), train)
    assert not loaded and calls == [1, 1, 1]
    assert "m.npz: loaded from" in capsys.readouterr().out
