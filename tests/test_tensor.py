"""The autograd engine's invariants: the regressions other teaching engines are known for."""
import numpy as np
import pytest

import tinyvision as tv
import tinyvision.ops as F


def leaf(values, dtype=np.float64):
    return tv.Tensor(np.asarray(values, dtype=dtype), requires_grad=True)


def test_reused_node_sums_its_gradients():
    # b = a + a, c = b * b  =>  c = 4a^2, dc/da = 8a (micrograd #64: wrong without a topological order)
    a = leaf([1.5, -2.0])
    b = a + a
    c = b * b
    c.sum().backward()
    np.testing.assert_allclose(a.grad, 8 * np.array([1.5, -2.0]))


def test_diamond_graph_gradient():
    # y = (x*2) * (x+3): two paths from x; dy/dx = 2(x+3) + 2x
    x = leaf([0.5, 4.0])
    y = (x * 2) * (x + 3)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * (x.numpy() + 3) + 2 * x.numpy())


def test_chain_of_ten_thousand_ops_backpropagates():
    x = leaf([1.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()  # a recursive topological sort would hit Python's recursion limit here
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-9)


def test_backward_twice_after_zero_grad_gives_same_gradients():
    x = leaf(np.linspace(-1, 1, 5))
    y = F.softmax(F.tanh(x) * 3, axis=0)[1:4].sum()
    y.backward()
    first = x.grad.copy()
    x.zero_grad()
    y.backward()
    np.testing.assert_array_equal(x.grad, first)


def test_leaf_gradients_accumulate_across_backward_calls():
    x = leaf([2.0])
    (x * x).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, [8.0])  # 2 * (2x)


def test_non_leaf_gets_no_grad_attribute():
    x = leaf([1.0, 2.0])
    h = x * 3
    (h * h).sum().backward()
    assert h.grad is None  # only leaves keep .grad; intermediate gradients are not stored


def test_non_scalar_backward_needs_an_explicit_gradient():
    x = leaf([[1.0, 2.0]])
    y = x * 2
    with pytest.raises(RuntimeError, match=r"non-scalar tensor of shape \(1, 2\) needs an explicit gradient"):
        y.backward()
    y.backward(np.array([[1.0, 10.0]]))
    np.testing.assert_allclose(x.grad, [[2.0, 20.0]])
    with pytest.raises(ValueError, match=r"grad has shape \(2,\), expected the tensor's shape \(1, 2\)"):
        y.backward(np.ones(2))


def test_no_grad_records_no_graph():
    x = leaf([1.0])
    with tv.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    assert tv.is_grad_enabled()  # restored on exit
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_is_restored_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with tv.no_grad():
            1 / 0
    assert tv.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = leaf([3.0])
    y = x * x
    z = y.detach() * x  # d/dx treats y as the constant 9
    z.sum().backward()
    np.testing.assert_allclose(x.grad, [9.0])
    assert not y.detach().requires_grad


def test_requires_grad_false_inputs_get_no_gradient():
    x = leaf([1.0, 2.0])
    c = tv.Tensor(np.array([3.0, 4.0]))
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad, [3.0, 4.0])


def test_float32_is_the_default_and_float64_is_kept():
    assert tv.Tensor([1.0, 2.0]).dtype == np.float32
    assert tv.Tensor(np.zeros(2)).dtype == np.float64
    assert (tv.Tensor(np.zeros(2)) * 2).dtype == np.float64
    assert (tv.Tensor([1.0]) + 1.5).dtype == np.float32  # a Python number takes the tensor's dtype


def test_max_splits_gradient_evenly_among_ties():
    x = leaf([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    F.max(x, axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [1, 0, 0]])


# --- numerics: large inputs, masked rows -----------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_logsumexp_are_stable_at_1e4(dtype):
    x = leaf([[1e4, -1e4, 1e4 - 1.0], [-1e4, -1e4 + 2, -1e4 + 1]], dtype)
    s = F.softmax(x, axis=1)
    lse = F.logsumexp(x, axis=1)
    ls = F.log_softmax(x, axis=1)
    for t in (s, lse, ls):
        assert np.isfinite(t.numpy()).all()
    expected_row = np.exp([0.0, -1.0]) / np.exp([0.0, -1.0]).sum()
    np.testing.assert_allclose(s.numpy()[0, [0, 2]], expected_row, rtol=1e-6)
    np.testing.assert_allclose(lse.numpy()[0], 1e4 + np.log1p(np.exp(-1.0)), rtol=1e-7)
    (s[:, 0].sum() + lse.sum() + ls[:, 1].sum()).backward()
    assert np.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_is_stable_and_exact_for_large_logits(dtype):
    x = leaf([1e4, -1e4, 1e4, -1e4], dtype)
    y = tv.Tensor(np.array([1.0, 0.0, 0.0, 1.0], dtype))
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    # confident and right: loss 0; confident and wrong: loss |x| exactly
    np.testing.assert_allclose(loss.numpy(), [0, 0, 1e4, 1e4])
    loss.sum().backward()
    np.testing.assert_allclose(x.grad, [0, 0, 1, -1])


def test_cross_entropy_is_stable_for_large_logits():
    x = leaf([[1e4, 0.0, -1e4]])
    loss = F.cross_entropy(x, np.array([2]))
    np.testing.assert_allclose(loss.item(), 2e4)
    loss.backward()
    np.testing.assert_allclose(x.grad, [[1, 0, -1]], atol=1e-12)


def test_fully_masked_attention_row_outputs_zero_without_nan():
    rng = np.random.default_rng(0)
    q, k, v = (leaf(rng.standard_normal((2, 3, 4))) for _ in range(3))
    mask = np.ones((3, 3), bool)
    mask[1] = False
    out = F.scaled_dot_product_attention(q, k, v, mask=mask)
    assert np.isfinite(out.numpy()).all()
    np.testing.assert_array_equal(out.numpy()[:, 1], 0)
    out.sum().backward()
    for t in (q, k, v):
        assert np.isfinite(t.grad).all()
    np.testing.assert_array_equal(q.grad[:, 1], 0)


def test_logsumexp_of_all_negative_infinity_is_negative_infinity():
    x = tv.Tensor(np.full((1, 3), -np.inf))
    assert F.logsumexp(x, axis=1).item() == -np.inf
    np.testing.assert_array_equal(F.softmax(x, axis=1).numpy(), 0)


def test_attention_weights_rows_sum_to_one_and_respect_causality():
    rng = np.random.default_rng(1)
    q, k, v = (tv.Tensor(rng.standard_normal((5, 4))) for _ in range(3))
    _, p = F.scaled_dot_product_attention(q, k, v, causal=True, return_weights=True)
    np.testing.assert_allclose(p.sum(-1), 1)
    assert np.all(np.triu(p, 1) == 0)


def test_attention_gradients_equal_the_flashattention_backward_formulas():
    # FlashAttention-2's backward: D = rowsum(dO * O), dS = P * (dP - D) with dP = dO V^T, then
    # dQ = tau dS K, dK = tau dS^T Q, dV = P^T dO. The op's gradients must equal these.
    rng = np.random.default_rng(2)
    q, k, v = (leaf(rng.standard_normal((5, 4))) for _ in range(3))
    out, p = F.scaled_dot_product_attention(q, k, v, causal=True, return_weights=True)
    d_out = rng.standard_normal(out.shape)
    out.backward(d_out)
    tau = 1 / np.sqrt(4)
    o = out.numpy()
    D = (d_out * o).sum(-1, keepdims=True)
    dS = p * (d_out @ v.numpy().T - D)
    np.testing.assert_allclose(q.grad, tau * dS @ k.numpy(), rtol=1e-12)
    np.testing.assert_allclose(k.grad, tau * dS.T @ q.numpy(), rtol=1e-12)
    np.testing.assert_allclose(v.grad, p.T @ d_out, rtol=1e-12)


def test_label_smoothing_one_is_uniform_target_loss():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5))
    loss = F.cross_entropy(tv.Tensor(x), np.array([0, 1, 2, 3]), label_smoothing=1.0).item()
    log_p = x - np.log(np.exp(x).sum(-1, keepdims=True))
    np.testing.assert_allclose(loss, -log_p.mean(), rtol=1e-12)


def test_cross_entropy_ignores_ignore_index_in_value_and_gradient():
    x = leaf([[2.0, 1.0], [0.0, 5.0], [1.0, 1.0]])
    loss = F.cross_entropy(x, np.array([0, -100, 1]))
    p = np.exp(x.numpy()) / np.exp(x.numpy()).sum(-1, keepdims=True)
    np.testing.assert_allclose(loss.item(), -(np.log(p[0, 0]) + np.log(p[2, 1])) / 2)
    loss.backward()
    np.testing.assert_array_equal(x.grad[1], 0)


def test_dropout_keeps_the_mean_and_is_identity_in_eval():
    x = tv.Tensor(np.ones(200_000))
    y = F.dropout(x, 0.3, training=True, seed=0).numpy()
    assert abs(y.mean() - 1) < 0.01 and abs((y == 0).mean() - 0.3) < 0.01
    assert F.dropout(x, 0.3, training=False) is x
    np.testing.assert_array_equal(F.dropout(x, 0.3, seed=5).numpy(), F.dropout(x, 0.3, seed=5).numpy())


def test_scalar_leaf_gradient_is_an_array_that_updates_in_place():
    s = tv.Tensor(np.array(2.0), requires_grad=True)
    (s * s).backward()
    assert isinstance(s.grad, np.ndarray) and s.grad.shape == ()
    s.grad *= 0.5  # must act on the stored gradient, not on a temporary scalar
    assert float(s.grad) == 2.0


def test_moving_an_intermediate_result_keeps_the_graph():
    x = leaf([1.0, 2.0])
    (x * 3).to("cpu").sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0])


def test_log_softmax_of_a_fully_masked_row_is_minus_infinity_not_nan():
    x = leaf([[-np.inf, -np.inf], [0.0, 1.0]])
    y = F.log_softmax(x, axis=1)
    assert np.all(np.isneginf(y.numpy()[0])) and np.isfinite(y.numpy()[1]).all()
    y[1].sum().backward()
    assert np.isfinite(x.grad).all()


def test_pow_zero_has_zero_gradient_even_at_zero():
    x = leaf([0.0, 2.0])
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])


def test_matmul_of_two_vectors_is_a_scalar():
    a, b = leaf([1.0, 2.0, 3.0]), leaf([4.0, 5.0, 6.0])
    y = a @ b
    assert y.shape == () and y.item() == 32.0
    y.backward()
    np.testing.assert_array_equal(a.grad, b.numpy())
