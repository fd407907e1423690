"""Who holds what in a tensor-core matrix multiply: the fragments of mma.m16n8k8 with TF32 operands.

A tensor core does not multiply matrices that one thread owns. The PTX instruction

    mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32  {d0..d3}, {a0..a3}, {b0, b1}, {c0..c3}

computes D = A B + C for A (16 x 8), B (8 x 8), C and D (16 x 8, float32) as ONE operation of the
whole warp: its 32 threads ("lanes") each hold a few entries of each matrix in registers, the
"fragments", and the instruction reads them all at once. Which lane holds which entry is fixed by the
PTX ISA (NVIDIA, "Parallel Thread Execution ISA", section "Matrix Fragments for mma.m16n8k8"), and a
kernel must put every value exactly there. This file writes that layout down in plain Python, so that
it can be read, printed and tested without a GPU. Nothing here ran on a tensor core: it is the
documented layout and a NumPy model of the instruction, not a measurement.

The layout. Lanes come in 8 groups of 4: groupID g = lane >> 2 (0..7), threadID_in_group t = lane % 4.
    A (16 x 8, "row": the operand as it sits in a row-major tile, M x K), 4 registers per lane:
        a0 = A[g][t]    a1 = A[g+8][t]    a2 = A[g][t+4]    a3 = A[g+8][t+4]
    B (8 x 8, "col": B[k][n] stored column by column, K x N), 2 registers per lane:
        b0 = B[t][g]    b1 = B[t+4][g]
    C and D (16 x 8, float32), 4 registers per lane:
        c0 = C[g][2t]   c1 = C[g][2t+1]   c2 = C[g+8][2t]   c3 = C[g+8][2t+1]
So a group of 4 lanes shares rows g and g+8 of A and C and column g of B; within the group, lane t
takes columns t and t+4 of A (rows t and t+4 of B) but the neighbouring columns 2t, 2t+1 of C. Each
layout is a bijection: 32 lanes x 4 registers = 128 = 16 x 8 entries of A and of C, 32 x 2 = 64 = 8 x 8
of B, each entry in exactly one (lane, register).

TF32. A .tf32 operand is a float32 whose mantissa is cut from 23 to 10 explicit bits (8 exponent bits
kept, so the range of float32; the precision of float16): relative rounding error up to 2^-11 = 4.9e-4.
The kernel rounds its float32 inputs with cvt.rna.tf32.f32: to nearest, ties away from zero
(to_tf32 below). A product of two TF32 numbers has at most 11 + 11 = 22 significant bits and is exact
in float32; the error is all in the rounding of the inputs.

3xTF32 (the error compensation of CUTLASS, "FastF32"; Ootomo & Yokota 2022). Split each input in two
TF32 numbers, x = big + small with big = tf32(x), small = tf32(x - big): together 22 significant bits,
|x - (big + small)| <= 2^-22 |x|. Then
    A B = (Ab + As)(Bb + Bs) ~= Ab Bb + Ab Bs + As Bb           (As Bs, of size 2^-22 A B, dropped)
three tensor-core products instead of one, with float32 accumulation: close to a float32 matmul.

The trick a flash-attention kernel plays with these layouts: P stays in registers between its two
matrix products. After S = Q K^T for 8 keys, lane (g, t) holds S, and then P = exp(S - m), in
the C layout: P[g][2t], P[g][2t+1], P[g+8][2t], P[g+8][2t+1]. The next product O += P V needs P as the
A operand, which wants columns t and t+4, not 2t and 2t+1. Instead of a round trip through shared
memory, relabel the keys: let column t of A be key 2t and column t+4 be key 2t+1. Then the lane's
own registers are already in place,
    a = {c0, c2, c1, c3}       (a0 = P[g][2t], a1 = P[g+8][2t], a2 = P[g][2t+1], a3 = P[g+8][2t+1])
and the same relabelling applied to the rows of B = V (B row t <-> key 2t, B row t+4 <-> key 2t+1)
leaves P V unchanged, because a matrix product does not care in which order its k terms are summed:
    sum_k A[m][k] B[k][n] = sum_key P[m][key] V[key][n].
In the load of V this means b0 = V[2t][g], b1 = V[2t+1][g]: each lane reads two neighbouring keys.
(flash-attn does the same with 16-bit operands, convert_layout_acc_Aregs in csrc/flash_attn/src/utils.h;
there the C registers of two neighbouring 8-key tiles already are the A layout of m16n8k16, and no
permutation is needed. With the 8-deep TF32 instruction it is.)

Shapes: a fragment is an array (32, R), lane by register; R = 4 for A and C/D, 2 for B.
"""
from __future__ import annotations

import numpy as np

__all__ = ["K", "M", "N", "REGISTERS", "SHAPES", "WARP", "a_entry", "assemble", "b_entry", "c_entry",
           "fragment", "load_fragments", "mma", "owners", "p_as_a_operand", "permuted_key", "split_tf32",
           "tf32_matmul", "to_tf32"]

M, N, K = 16, 8, 8          # D (M x N) = A (M x K) B (K x N) + C (M x N)
WARP = 32                   # lanes per warp
SHAPES = {"a": (M, K), "b": (K, N), "c": (M, N)}
REGISTERS = {"a": 4, "b": 2, "c": 4}


def _lane(lane: int) -> tuple[int, int]:
    """(groupID, threadID_in_group) of a lane."""
    if not 0 <= lane < WARP:
        raise ValueError(f"lane must be in 0..{WARP - 1}, got {lane}")
    return lane >> 2, lane % 4


def _check_reg(operand: str, reg: int) -> None:
    if not 0 <= reg < REGISTERS[operand]:
        raise ValueError(f"{operand} has registers 0..{REGISTERS[operand] - 1}, got {reg}")


def a_entry(lane: int, reg: int) -> tuple[int, int]:
    """(row, col) of A (16 x 8) held in register a<reg> of `lane`: rows g, g+8; columns t, t+4."""
    _check_reg("a", reg)
    g, t = _lane(lane)
    return g + 8 * (reg & 1), t + 4 * (reg >> 1)


def b_entry(lane: int, reg: int) -> tuple[int, int]:
    """(k, n) of B (8 x 8) held in register b<reg> of `lane`: rows t, t+4; column g."""
    _check_reg("b", reg)
    g, t = _lane(lane)
    return t + 4 * reg, g


def c_entry(lane: int, reg: int) -> tuple[int, int]:
    """(row, col) of C or D (16 x 8) held in register c<reg> of `lane`: rows g, g+8; columns 2t, 2t+1."""
    _check_reg("c", reg)
    g, t = _lane(lane)
    return g + 8 * (reg >> 1), 2 * t + (reg & 1)


_ENTRY = {"a": a_entry, "b": b_entry, "c": c_entry}


def _check_operand(operand: str) -> None:
    if operand not in _ENTRY:
        raise ValueError(f"operand must be 'a', 'b' or 'c' (C and D share a layout), got {operand!r}")


def _index(operand: str) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index arrays (32, R): entry [lane, reg] of the fragment is matrix[rows, cols]."""
    _check_operand(operand)
    pairs = [[_ENTRY[operand](lane, reg) for reg in range(REGISTERS[operand])] for lane in range(WARP)]
    index = np.array(pairs)                               # (32, R, 2)
    return index[..., 0], index[..., 1]


def owners(operand: str) -> np.ndarray:
    """(rows, cols, 2) int array: owners(op)[i, j] = (lane, reg) holding entry (i, j); -1 where none.

    A correct layout leaves no -1 and no entry claimed twice (tests/test_mma_layout.py checks both).
    """
    rows, cols = _index(operand)
    out = np.full(SHAPES[operand] + (2,), -1, dtype=np.int64)
    for lane in range(WARP):
        for reg in range(REGISTERS[operand]):
            out[rows[lane, reg], cols[lane, reg]] = lane, reg
    return out


def fragment(operand: str, matrix) -> np.ndarray:
    """The (32, R) registers that hold `matrix` (A 16 x 8, B 8 x 8, or C 16 x 8) in the mma layout."""
    matrix = np.asarray(matrix)
    _check_operand(operand)
    if matrix.shape != SHAPES[operand]:
        raise ValueError(f"{operand.upper()} must be {SHAPES[operand]}, got {matrix.shape}")
    rows, cols = _index(operand)
    return matrix[rows, cols]


def assemble(operand: str, regs) -> np.ndarray:
    """The matrix whose fragment is `regs` (32, R): the inverse of fragment()."""
    regs = np.asarray(regs)
    _check_operand(operand)
    if regs.shape != (WARP, REGISTERS[operand]):
        raise ValueError(f"{operand} registers must be (lanes, registers) = {(WARP, REGISTERS[operand])}, "
                         f"got {regs.shape}")
    rows, cols = _index(operand)
    out = np.empty(SHAPES[operand], dtype=regs.dtype)
    out[rows, cols] = regs
    return out


def load_fragments(A, B, C) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Registers of A (16 x 8), B (8 x 8) and C (16 x 8): arrays (32, 4), (32, 2), (32, 4)."""
    return fragment("a", A), fragment("b", B), fragment("c", C)


def mma(a_regs, b_regs, c_regs, tf32: bool = False) -> np.ndarray:
    """D = A B + C from the warp's registers; returns D's registers (32, 4), in the C layout.

    The model of the instruction: the matrices are put back together from the 32 lanes' registers (on the
    chip the tensor core gathers them), multiplied, and D is handed back in the C layout. tf32=False:
    exact arithmetic in the registers' dtype (float64 for the reference checks). tf32=True: what the
    .tf32 instruction is documented to do, A and B rounded to TF32 and D in float32; the ISA does not fix
    the order of the float32 additions, and here NumPy's float32 matmul chooses it, so the last bits of a
    real tensor core may differ.
    """
    A, B, C = assemble("a", a_regs), assemble("b", b_regs), assemble("c", c_regs)
    if tf32:
        A, B, C = to_tf32(A), to_tf32(B), np.asarray(C, np.float32)
    return fragment("c", A @ B + C)


def p_as_a_operand(c_regs) -> np.ndarray:
    """The A registers (32, 4) of P V made from the S (or P) accumulator registers: a = {c0, c2, c1, c3}.

    With this choice column t of A is key 2t and column t+4 is key 2t+1 (see the module docstring), so
    B = V must be read with its rows in the same order: B row k is key permuted_key(k).
    """
    c_regs = np.asarray(c_regs)
    if c_regs.shape != (WARP, REGISTERS["c"]):
        raise ValueError(f"c registers must be (lanes, registers) = {(WARP, REGISTERS['c'])}, got {c_regs.shape}")
    return c_regs[:, [0, 2, 1, 3]]


def permuted_key(k_row: int) -> int:
    """The key (column of S, row of V) that row k_row of B stands for: t -> 2t, t + 4 -> 2t + 1."""
    if not 0 <= k_row < K:
        raise ValueError(f"k_row must be in 0..{K - 1}, got {k_row}")
    return 2 * k_row if k_row < 4 else 2 * (k_row - 4) + 1


def to_tf32(x) -> np.ndarray:
    """x rounded to TF32 (10 explicit mantissa bits), as float32: cvt.rna.tf32.f32.

    float32 bits are sign | 8 exponent | 23 mantissa; TF32 keeps the top 10 mantissa bits, so the low 13
    become zero. Round to nearest, ties away from zero: add half of the dropped unit (bit 12) to the
    magnitude and truncate. The bits are sign-magnitude, so adding to them rounds |x| whatever the sign; a
    carry out of the mantissa moves up the exponent, which is the right rounding too (up to infinity past
    the largest float32). Infinities and NaN pass through unchanged. float64 input is first rounded to
    float32 (what the kernel's inputs are).
    """
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    rounded = ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)
    return np.where(np.isfinite(x), rounded, x)


def split_tf32(x) -> tuple[np.ndarray, np.ndarray]:
    """(big, small), both TF32 as float32: big = to_tf32(x), small = to_tf32(x - big).

    x - big is exact in float32 (it is x with its top 11 significant bits removed), and |x - big| <=
    2^-11 |x|; rounding it loses at most 2^-11 of it, so |x - (big + small)| <= 2^-22 |x| for normal x.
    """
    x = np.asarray(x, dtype=np.float32)
    big = to_tf32(x)
    return big, to_tf32(x - big)


def tf32_matmul(A, B, passes: int = 1) -> np.ndarray:
    """A model of A @ B on tensor cores with TF32 inputs and float32 accumulation, in NumPy (any shapes).
    A model, not the instruction sequence: a kernel (csrc/flash_attention_v3.cu) adds the cross terms into
    its running accumulator at every 8-deep k-step, where this sums each product over all of K first.

    passes=1: plain TF32, to_tf32(A) @ to_tf32(B).
    passes=3: 3xTF32, Ab Bs + As Bb + Ab Bb with (Ab, As) = split_tf32(A), (Bb, Bs) = split_tf32(B);
              the two small products (each ~2^-11 of the big one) are summed first, then added to it.
    Products of TF32 numbers are exact in float32, so each pass is float32 arithmetic on exact products.
    """
    if passes == 1:
        return to_tf32(A) @ to_tf32(B)
    if passes == 3:
        (Ab, As), (Bb, Bs) = split_tf32(A), split_tf32(B)
        return (Ab @ Bs + As @ Bb) + Ab @ Bb
    raise ValueError(f"passes must be 1 (TF32) or 3 (3xTF32), got {passes}")
