"""The sample judge's scores against independent formulas: Frechet distance (SciPy's general matrix
square root as the oracle), class coverage on hand-made probabilities, the features' shapes."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyvision.models import SmallCNN
from tinyvision.models.judge import class_coverage, frechet_distance, judge_digits


@given(st.integers(1, 6), st.integers(0, 10_000))
@settings(max_examples=20, deadline=None)
def test_frechet_distance_equals_the_formula_with_a_general_matrix_square_root(dim, seed):
    linalg = pytest.importorskip("scipy.linalg", reason="SciPy (installed with scikit-learn) is the oracle here")
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(50, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(size=(70, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * linalg.sqrtm(sa @ sb).real)
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-7, abs=1e-7)


def test_frechet_distance_of_one_dimensional_gaussians_and_of_a_set_with_itself():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, (20_000, 1)), rng.normal(-1.0, 0.5, (20_000, 1))
    assert frechet_distance(a, b) == pytest.approx((1 - -1) ** 2 + (2 - 0.5) ** 2, rel=0.02)   # (m1-m2)^2 + (s1-s2)^2
    assert abs(frechet_distance(a, a)) < 1e-9
    with pytest.raises(ValueError, match="frechet_distance: two \\(N, F\\) feature sets"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))


def test_class_coverage_counts_classes_above_the_share_and_the_confidence():
    probs = np.full((100, 10), 0.01)
    probs[np.arange(100), np.repeat([0, 1, 2, 3], [50, 30, 19, 1])] = 0.91
    cover = class_coverage(probs)
    assert cover["classes_present"] == 3 and cover["confidence"] == pytest.approx(0.91)   # class 3: 1 % < 2 %
    assert cover["shares"][:4] == [0.5, 0.3, 0.19, 0.01]


def test_judge_gives_probabilities_and_penultimate_features():
    judge = SmallCNN(img_size=8, seed=0).eval()
    probs, feats = judge_digits(judge, np.random.default_rng(0).random((7, 1, 8, 8)))
    assert probs.shape == (7, 10) and feats.shape == (7, 128) and np.allclose(probs.sum(1), 1)
    with pytest.raises(ValueError, match=r"judge_digits: images must be \(N, 1, 8, 8\)"):
        judge_digits(judge, np.zeros((2, 8, 8)))


def test_energy_distance_matches_scipy_in_one_dimension_and_is_zero_for_equal_samples():
    stats = pytest.importorskip("scipy.stats", reason="SciPy (installed with scikit-learn) is the oracle here")
    from tinyvision.models.judge import energy_distance
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(0.5, 2, 400)
    assert energy_distance(a[:, None], b[:, None]) == pytest.approx(stats.energy_distance(a, b), rel=1e-9)
    assert energy_distance(a[:, None], a[:, None]) == 0.0
    with pytest.raises(ValueError, match="energy_distance: two \\(N, d\\) samples"):
        energy_distance(np.zeros((3, 2)), np.zeros((3, 3)))
