"""Boxes and Hungarian matching (tinyvision/models/boxes.py) against brute force and closed forms.

The matching is the minimum over every assignment (itertools.permutations, up to 6 x 6), SciPy's
linear_sum_assignment agrees pair-for-pair where the optimum is unique, and permuting the rows or the
columns of the cost leaves the optimal cost unchanged. GIoU has the closed-form values of its paper and
its differentiable pairwise form equals the matrix form and passes a float64 gradient check.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyvision as tv
from tinyvision.gradcheck import gradcheck
from tinyvision.models.boxes import (box_cxcywh_to_xyxy, box_iou, generalized_box_iou, generalized_box_iou_pairs,
                                     linear_sum_assignment)


def brute_force(cost):
    n, m = cost.shape
    if n > m:
        return brute_force(cost.T)
    return min((sum(cost[i, j] for i, j in enumerate(cols)) for cols in itertools.permutations(range(m), n)),
               default=0.0)


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 6), st.integers(0, 6), st.booleans(), st.integers(0, 2 ** 31 - 1))
def test_hungarian_finds_the_brute_force_minimum(n, m, integer, seed):
    rng = np.random.default_rng(seed)
    cost = rng.integers(-2, 3, (n, m)).astype(float) if integer else rng.standard_normal((n, m)) * 10
    rows, cols = linear_sum_assignment(cost)
    assert len(rows) == len(cols) == min(n, m)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    assert list(rows) == sorted(rows)
    np.testing.assert_allclose(cost[rows, cols].sum(), brute_force(cost), atol=1e-9)
    # permuting the rows or the columns permutes the matching and keeps its cost
    pr, pc = rng.permutation(n), rng.permutation(m)
    r2, c2 = linear_sum_assignment(cost[pr][:, pc])
    np.testing.assert_allclose(cost[pr][:, pc][r2, c2].sum(), cost[rows, cols].sum(), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2 ** 31 - 1))
def test_hungarian_equals_scipy_pair_for_pair(n, m, seed):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    cost = np.random.default_rng(seed).random((n, m))        # continuous costs: the optimum is unique
    rows, cols = linear_sum_assignment(cost)
    want_rows, want_cols = scipy_optimize.linear_sum_assignment(cost)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(cols, want_cols)


def test_hungarian_names_bad_costs():
    with pytest.raises(ValueError, match=r"linear_sum_assignment: cost must be a matrix \(n, m\), got shape \(3,\)"):
        linear_sum_assignment(np.zeros(3))
    with pytest.raises(ValueError, match="linear_sum_assignment: cost holds a NaN"):
        linear_sum_assignment(np.array([[0.0, np.nan]]))


def test_giou_has_its_closed_form_values():
    a = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 2, 1], [0, 0, 1, 1]], float)
    b = np.array([[0, 0, 1, 1], [2, 0, 3, 1], [1, 0, 3, 1], [100, 100, 101, 101]], float)
    g = np.diag(generalized_box_iou(a, b))
    np.testing.assert_allclose(g[:3], [1.0, -1 / 3, 1 / 3], atol=1e-12)
    assert -1 < g[3] < -0.99
    np.testing.assert_allclose(np.diag(box_iou(a, b)), [1.0, 0.0, 1 / 3, 0.0], atol=1e-12)


def random_boxes(rng, n):
    cxcy = rng.random((n, 2))
    wh = rng.uniform(0.05, 0.6, (n, 2))
    return box_cxcywh_to_xyxy(np.concatenate([cxcy, wh], 1))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(0, 2 ** 31 - 1))
def test_iou_counts_pixels_and_pairwise_giou_is_the_diagonal(n, seed):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, n), random_boxes(rng, n)
    # IoU against counting cells of a fine grid: a box is an x-interval times a y-interval, so the cells
    # inside a box, or inside both boxes, are counted per axis and multiplied
    grid = (np.arange(200_000) + 0.5) / 200_000 * 2 - 0.5
    def cells(*boxes):
        inside = [np.all([(grid >= bx[k]) & (grid < bx[k + 2]) for bx in boxes], axis=0).sum() for k in (0, 1)]
        return inside[0] * inside[1]
    iou = box_iou(a, b)
    for i in range(n):
        inter = cells(a[i], b[i])
        assert abs(inter / (cells(a[i]) + cells(b[i]) - inter) - iou[i, i]) < 1e-3
    pairs = generalized_box_iou_pairs(tv.Tensor(a, dtype=np.float64), b).numpy()
    np.testing.assert_allclose(pairs, np.diag(generalized_box_iou(a, b)), atol=1e-7)
    assert np.all(pairs <= 1 + 1e-12) and np.all(pairs > -1)


def test_pairwise_giou_gradient_checks_in_float64():
    rng = np.random.default_rng(3)
    # boxes that overlap partly and boxes apart, away from ties between corners (where min/max kink)
    a, b = random_boxes(rng, 5), random_boxes(rng, 5)
    assert gradcheck(lambda x: generalized_box_iou_pairs(x, b).sum(), [a]) < 1e-6


def test_boxes_check_their_inputs():
    with pytest.raises(ValueError, match=r"box_iou: a must be boxes \(N, 4\), got shape \(2, 3\)"):
        box_iou(np.zeros((2, 3)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="generalized_box_iou: b has a box with x1 < x0"):
        generalized_box_iou(np.array([[0, 0, 1, 1.0]]), np.array([[1, 0, 0, 1.0]]))
    with pytest.raises(ValueError, match="box_iou: b holds a NaN"):
        box_iou(np.zeros((1, 4)), np.full((1, 4), np.nan))
