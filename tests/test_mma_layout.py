"""The fragment layouts of mma.m16n8k8 (TF32) and the NumPy model of the instruction, checked in float64.

tinyvision/kernels/mma_layout.py writes down the PTX ISA's layout; these tests check that it is a layout
at all (every entry owned once), that D = A B + C survives the trip through the registers, that the
register reuse of P in flash attention computes P V, and the TF32 rounding and 3xTF32 split.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies import arrays
from tinyvision.kernels import mma_layout as L


@pytest.mark.parametrize("operand, entry", [("a", L.a_entry), ("b", L.b_entry), ("c", L.c_entry)])
def test_each_layout_is_a_bijection_between_lane_registers_and_entries(operand, entry):
    rows, cols = L.SHAPES[operand]
    seen = [entry(lane, reg) for lane in range(L.WARP) for reg in range(L.REGISTERS[operand])]
    assert len(seen) == rows * cols                                   # as many registers as entries
    assert sorted(seen) == [(i, j) for i in range(rows) for j in range(cols)]   # each entry once
    owner = L.owners(operand)
    assert owner.shape == (rows, cols, 2) and (owner >= 0).all()
    for lane, reg in owner.reshape(-1, 2):
        assert tuple(owner[entry(lane, reg)]) == (lane, reg)


def test_the_layouts_are_the_ones_the_ptx_isa_lists():
    # spelled out for one lane, groupID 5 and threadID_in_group 2 (lane 22), so a misreading shows plainly
    assert [L.a_entry(22, r) for r in range(4)] == [(5, 2), (13, 2), (5, 6), (13, 6)]
    assert [L.b_entry(22, r) for r in range(2)] == [(2, 5), (6, 5)]
    assert [L.c_entry(22, r) for r in range(4)] == [(5, 4), (5, 5), (13, 4), (13, 5)]


def test_bad_lanes_registers_and_shapes_are_refused_by_name():
    with pytest.raises(ValueError, match="lane"):
        L.a_entry(32, 0)
    with pytest.raises(ValueError, match="registers 0..1"):
        L.b_entry(0, 2)
    with pytest.raises(ValueError, match=r"A must be \(16, 8\)"):
        L.fragment("a", np.zeros((8, 16)))
    with pytest.raises(ValueError, match="operand"):
        L.owners("d")


@given(A=arrays((16, 8)), B=arrays((8, 8)), C=arrays((16, 8)))
def test_mma_through_the_fragments_equals_a_b_plus_c(A, B, C):
    a, b, c = L.load_fragments(A, B, C)
    assert a.shape == (32, 4) and b.shape == (32, 2) and c.shape == (32, 4)
    assert np.array_equal(L.assemble("a", a), A) and np.array_equal(L.assemble("b", b), B)
    D = L.assemble("c", L.mma(a, b, c))
    np.testing.assert_allclose(D, A @ B + C, rtol=1e-13, atol=1e-13)


@given(p=arrays((32, 4)), V=arrays((8, 8)))
def test_p_reused_as_the_a_operand_with_permuted_keys_computes_p_v(p, V):
    # p: the S / P accumulator registers of 16 queries x 8 keys; V: 8 keys x 8 value columns
    P = L.assemble("c", p)
    a = L.p_as_a_operand(p)
    perm = [L.permuted_key(k) for k in range(8)]
    assert perm == [0, 2, 4, 6, 1, 3, 5, 7]
    np.testing.assert_array_equal(L.assemble("a", a), P[:, perm])   # column k of A is key perm[k]
    b = L.fragment("b", V[perm])                                     # B row k is V's row perm[k]
    for lane in range(32):                                           # so each lane reads keys 2t, 2t+1
        g, t = lane >> 2, lane % 4
        assert (b[lane] == (V[2 * t, g], V[2 * t + 1, g])).all()
    O = L.assemble("c", L.mma(a, b, np.zeros((32, 4))))
    np.testing.assert_allclose(O, P @ V, rtol=1e-13, atol=1e-13)


# normal float32 magnitudes: below 2^-126 (subnormals) the spacing is absolute, not relative
_normal_f32 = st.floats(min_value=2.0 ** -120, max_value=2.0 ** 120, width=32)


@given(st.lists(st.tuples(_normal_f32, st.booleans()), min_size=1, max_size=50))
def test_to_tf32_keeps_ten_mantissa_bits_and_rounds_to_nearest(values):
    x = np.array([v if positive else -v for v, positive in values], dtype=np.float32)
    r = L.to_tf32(x)
    assert r.dtype == np.float32
    assert (r.view(np.uint32) & 0x1FFF == 0).all()                          # low 13 mantissa bits zero
    err = np.abs(x.astype(np.float64) - r.astype(np.float64))
    assert (err <= 2.0 ** -11 * np.abs(x.astype(np.float64))).all()        # half a TF32 unit at most
    np.testing.assert_array_equal(L.to_tf32(r), r)                         # exact on TF32 values
    assert (np.sign(r) == np.sign(x)).all()


def test_to_tf32_rounds_ties_away_from_zero_and_keeps_inf_and_nan():
    half = 2.0 ** -11                               # half the TF32 unit at 1: 1 + half is a tie
    x = np.array([1 + half, -(1 + half), 1 + 3 * half, 1 + half * 0.999], dtype=np.float32)
    np.testing.assert_array_equal(L.to_tf32(x), np.array([1 + 2 * half, -(1 + 2 * half), 1 + 4 * half, 1.0],
                                                         dtype=np.float32))   # ties to even would give 1.0 first
    special = L.to_tf32(np.array([np.inf, -np.inf, np.nan], dtype=np.float32))
    assert special[0] == np.inf and special[1] == -np.inf and np.isnan(special[2])


@given(st.lists(st.tuples(_normal_f32, st.booleans()), min_size=1, max_size=50))
def test_split_tf32_big_plus_small_carries_22_bits(values):
    x = np.array([v if positive else -v for v, positive in values], dtype=np.float32)
    big, small = L.split_tf32(x)
    np.testing.assert_array_equal(big, L.to_tf32(x))
    np.testing.assert_array_equal(L.to_tf32(small), small)                 # small is TF32 too
    x64 = x.astype(np.float64)
    assert (np.abs(x64 - (big.astype(np.float64) + small)) <= 2.0 ** -22 * np.abs(x64)).all()


def test_3xtf32_matmul_is_far_closer_to_float64_than_tf32():
    # Measured (seed 0, 64 x 64 @ 64 x 64, standard normal, relative Frobenius error against float64 of the
    # same float32 inputs): TF32 2.9e-4, 3xTF32 1.5e-7, NumPy float32 1.4e-7. TF32 keeps 11 significant
    # bits (error ~2^-11 per input), 3xTF32 22, float32 24.
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((64, 64)).astype(np.float32) for _ in range(2))
    exact = A.astype(np.float64) @ B.astype(np.float64)

    def error(product):
        return np.linalg.norm(product.astype(np.float64) - exact) / np.linalg.norm(exact)

    tf32, three, fp32 = error(L.tf32_matmul(A, B)), error(L.tf32_matmul(A, B, passes=3)), error(A @ B)
    assert 1e-4 < tf32 < 1e-3                       # about 2^-11 = 4.9e-4 per input, averaged down
    assert three < tf32 / 300                       # measured ratio ~1900
    assert three < 3 * fp32                         # close to a float32 matmul
    with pytest.raises(ValueError, match="passes"):
        L.tf32_matmul(A, B, passes=2)


def test_mma_in_tf32_mode_matches_tf32_matmul():
    rng = np.random.default_rng(1)
    A, B, C = rng.standard_normal((16, 8)), rng.standard_normal((8, 8)), rng.standard_normal((16, 8))
    D = L.assemble("c", L.mma(*L.load_fragments(A, B, C), tf32=True))
    assert D.dtype == np.float32
    np.testing.assert_allclose(D, L.tf32_matmul(A, B) + C.astype(np.float32), rtol=1e-6, atol=1e-6)
    assert np.abs(D - (A @ B + C)).max() > 1e-5     # the rounding to TF32 is really there
