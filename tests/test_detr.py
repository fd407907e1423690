"""DETR's set loss, its detector and the mAP that scores it, against float64 formulas and invariants.

The set loss equals a NumPy float64 formula whose matching is the brute-force minimum over every
assignment; at uniform logits its class term is ln(K + 1) exactly (a weighted mean); it does not change
when the queries or the targets are permuted; it passes a float64 gradient check. Average precision
equals the area under the interpolated precision-recall curve integrated on a fine grid.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyvision as tv
from tinyvision.gradcheck import gradcheck
from tinyvision.metrics import average_precision, mean_average_precision
from tinyvision.models.boxes import box_cxcywh_to_xyxy, generalized_box_iou
from tinyvision.models.detr import DETR, hungarian_match, set_loss


def f64(x):
    return tv.Tensor(np.asarray(x, dtype=np.float64), dtype=np.float64)


def random_case(rng, B, Q, K, max_n):
    logits = rng.standard_normal((B, Q, K + 1)) * 2
    boxes = np.concatenate([rng.uniform(0.2, 0.8, (B, Q, 2)), rng.uniform(0.1, 0.4, (B, Q, 2))], -1)
    targets = []
    for _ in range(B):
        n = int(rng.integers(0, max_n + 1))
        targets.append((rng.integers(0, K, n), np.concatenate([rng.uniform(0.2, 0.8, (n, 2)),
                                                               rng.uniform(0.1, 0.4, (n, 2))], -1)))
    return logits, boxes, targets


def loss_formula(logits, boxes, targets, eos=0.1, wc=1.0, wl=5.0, wg=2.0, match=None):
    """DETR's loss for one decoder layer in float64, the matching by brute force over permutations
    (with the cost weights `match`, by default the loss's own)."""
    mc, ml, mg = (wc, wl, wg) if match is None else match
    B, Q, K1 = logits.shape
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ce_num = ce_den = l1 = gi = 0.0
    n_all = 0
    for b, (labels, tb) in enumerate(targets):
        n = len(labels)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes[b]), box_cxcywh_to_xyxy(tb)) if n else np.zeros((Q, 0))
        cost = lambda q, t: -mc * p[b, q, labels[t]] + ml * np.abs(boxes[b, q] - tb[t]).sum() - mg * giou[q, t]
        best = min(itertools.permutations(range(Q), n), key=lambda qs: sum(cost(q, t) for t, q in enumerate(qs)))
        cls = np.full(Q, K1 - 1)
        for t, q in enumerate(best):
            cls[q] = labels[t]
            l1 += np.abs(boxes[b, q] - tb[t]).sum()
            gi += 1 - giou[q, t]
        n_all += n
        w = np.where(cls == K1 - 1, eos, 1.0)
        ce_num += np.sum(w * -np.log(p[b, np.arange(Q), cls]))
        ce_den += w.sum()
    n_boxes = max(n_all, 1)
    return wc * ce_num / ce_den + (wl * l1 / n_boxes + wg * gi / n_boxes if n_all else 0.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2 ** 31 - 1))
def test_set_loss_equals_the_formula_with_brute_force_matching(B, Q, K, seed):
    rng = np.random.default_rng(seed)
    logits, boxes, targets = random_case(rng, B, Q, K, max_n=Q)
    loss, _ = set_loss([(f64(logits), f64(boxes))], targets)
    # rtol: the loss's GIoU divides by (union + 1e-9) and (enclosing + 1e-9), the formula by neither;
    # every box here has an area >= 0.01, so that shifts a term by at most 1e-7 of itself
    np.testing.assert_allclose(loss.item(), loss_formula(logits, boxes, targets), rtol=1e-6)
    # two decoder layers: the sum of each one's loss, each with its own matching
    l2, b2, _ = random_case(rng, B, Q, K, max_n=0)
    both, _ = set_loss([(f64(logits), f64(boxes)), (f64(l2), f64(b2))], targets)
    np.testing.assert_allclose(both.item(), loss_formula(logits, boxes, targets) + loss_formula(l2, b2, targets),
                               rtol=1e-6)


def test_uniform_logits_give_a_class_loss_of_ln_k_plus_one():
    Q, K = 10, 4
    targets = [(np.array([1]), np.array([[0.5, 0.5, 0.2, 0.2]]))]
    _, parts = set_loss([(f64(np.zeros((1, Q, K + 1))), f64(np.full((1, Q, 4), 0.3)))], targets)
    assert parts["ce"] == pytest.approx(np.log(K + 1), rel=1e-12)


def test_set_loss_is_invariant_to_permuting_queries_and_targets():
    rng = np.random.default_rng(5)
    logits, boxes, targets = random_case(rng, 2, 6, 3, max_n=4)
    loss, _ = set_loss([(f64(logits), f64(boxes))], targets)
    perm = rng.permutation(6)
    shuffled = [(lab[o], box[o]) for lab, box in targets for o in [rng.permutation(len(lab))]]
    loss2, _ = set_loss([(f64(logits[:, perm]), f64(boxes[:, perm]))], shuffled)
    np.testing.assert_allclose(loss.item(), loss2.item(), rtol=1e-12)
    matches = hungarian_match(logits, boxes, targets)
    assert all(len(q) == len(t) == len(lab) for (q, t), (lab, _) in zip(matches, targets))


def test_set_loss_gradient_checks_in_float64():
    rng = np.random.default_rng(7)
    logits, boxes, targets = random_case(rng, 2, 4, 2, max_n=3)
    targets[0] = (np.array([0, 1]), targets[0][1][:2]) if len(targets[0][0]) >= 2 else \
        (np.array([0, 1]), np.array([[0.3, 0.3, 0.2, 0.2], [0.6, 0.7, 0.3, 0.2]]))
    assert gradcheck(lambda lg, bx: set_loss([(lg, bx)], targets)[0], [logits, boxes]) < 1e-6


def test_detr_outputs_one_set_per_decoder_layer_and_names_bad_targets():
    model = DETR(3, img_size=16, patch_size=4, dim=16, encoder_depth=1, decoder_depth=2, heads=2, num_queries=5, seed=0)
    images = np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)
    outputs = model(images)
    assert len(outputs) == 2
    for logits, boxes in outputs:
        assert logits.shape == (2, 5, 4) and boxes.shape == (2, 5, 4)
        assert np.all((boxes.numpy() > 0) & (boxes.numpy() < 1))
    targets = [(np.array([0]), np.array([[0.5, 0.5, 0.2, 0.2]])), (np.array([], dtype=int), np.zeros((0, 4)))]
    loss, _ = set_loss(outputs, targets)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match=r"set_loss: picture 0 has 2 labels but boxes of shape \(1, 4\)"):
        set_loss(outputs, [(np.array([0, 1]), np.array([[0.5, 0.5, 0.2, 0.2]])), targets[1]])
    with pytest.raises(ValueError, match=r"set_loss: targets must hold one \(labels, boxes\) pair per picture \(2\)"):
        set_loss(outputs, targets[:1])


# --- mean average precision -------------------------------------------------------------------------------
def ap_by_integration(tp, n_true, grid=100_000):
    """The area under p_interp(r) = max{precision_k : recall_k >= r}, integrated by the midpoint rule on
    `grid` points of r (each of the <= 12 steps of p_interp costs at most 1 / grid of error)."""
    tp = np.asarray(tp, bool)
    if not len(tp):
        return 0.0
    hits = np.cumsum(tp)
    precision, recall = hits / np.arange(1, len(tp) + 1), hits / n_true
    best_after = np.maximum.accumulate(precision[::-1])[::-1]        # max precision at index >= k
    r = (np.arange(grid) + 0.5) / grid
    first = np.searchsorted(recall, r, side="left")                  # the first k with recall_k >= r
    return float(np.where(first < len(tp), best_after[np.minimum(first, len(tp) - 1)], 0.0).mean())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), max_size=12), st.integers(0, 4))
def test_average_precision_is_the_area_under_the_interpolated_curve(tp, extra):
    n_true = max(sum(tp) + extra, 1)
    assert average_precision(tp, n_true) == pytest.approx(ap_by_integration(tp, n_true), abs=2e-4)


def test_map_by_hand():
    box = np.array([[0.3, 0.3, 0.2, 0.2]])
    far = np.array([[0.8, 0.8, 0.2, 0.2]])
    targets = [(np.array([0]), box), (np.array([0]), far)]
    perfect = [(np.array([0]), np.array([0.9]), box), (np.array([0]), np.array([0.8]), far)]
    assert mean_average_precision(perfect, targets, num_classes=2)[0] == 1.0
    # ranked: a miss (0.95), a hit (0.9), a duplicate of that hit (0.85), a hit (0.6):
    # precision 0, 1/2, 1/3, 1/2 at recall 0, 1/2, 1/2, 1 -> AP = 1/2 * 1/2 + 1/2 * 1/2 = 0.5
    preds = [(np.array([0, 0, 0]), np.array([0.95, 0.9, 0.85]), np.concatenate([far, box, box])),
             (np.array([0]), np.array([0.6]), far)]
    m, per_class = mean_average_precision(preds, targets, num_classes=3)
    assert m == pytest.approx(0.5) and list(per_class) == [0]
    # the right box with the wrong class finds nothing
    wrong = [(np.array([1]), np.array([0.9]), box), (np.array([1]), np.array([0.9]), far)]
    assert mean_average_precision(wrong, targets, num_classes=2)[0] == 0.0
    with pytest.raises(ValueError, match="mean_average_precision: 1 pictures of predictions for 2 of targets"):
        mean_average_precision(perfect[:1], targets, num_classes=2)
    with pytest.raises(ValueError, match="average_precision: 3 true positives for 2 true objects"):
        average_precision([True, True, True], 2)


def test_labels_outside_the_classes_are_named_and_match_weights_are_apart_from_loss_weights():
    rng = np.random.default_rng(9)
    logits, boxes, _ = random_case(rng, 1, 4, 3, max_n=0)
    box = np.array([[0.5, 0.5, 0.2, 0.2]])
    for bad in (3, -1, 7):                        # 3 is "no object" here (K = 3): never a target
        with pytest.raises(ValueError, match=r"set_loss: picture 0 has labels \[" + str(bad) + r"\]; expected classes in 0..2"):
            set_loss([(f64(logits), f64(boxes))], [(np.array([bad]), box)])
    targets = [(np.array([1, 2]), np.array([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.2, 0.3]]))]
    # matching by L1 alone keeps the loss's own weights: the loss is the formula's with that matching
    for match in ((0.0, 5.0, 0.0), (1.0, 0.0, 0.0)):
        got = set_loss([(f64(logits), f64(boxes))], targets, match_weights=match)[0].item()
        np.testing.assert_allclose(got, loss_formula(logits, boxes, targets, match=match), rtol=1e-6)
    with pytest.raises(ValueError, match="set_loss: eos_coef"):
        set_loss([(f64(logits), f64(boxes))], targets, eos_coef=0.0)
    with pytest.raises(ValueError, match="mean_average_precision: picture 0 has 2 predicted labels, 1 scores"):
        mean_average_precision([(np.array([0, 1]), np.array([0.5]), np.zeros((2, 4)) + 0.5)], [(np.array([0]), box)], 2)
