"""Numba CPU kernels for the RNN and LSTM, forward and backward over a whole sequence.

Same contract and results as ``lstmkit.reference`` (float64 to ~1e-10, float32 to ~1e-5),
organised for speed instead of for reading:

* the input projection of all T steps is ONE matrix product (T*B, I) x (I, G*H) before the
  time loop; only the recurrent product h_{t-1} W_hh^T stays inside it;
* biases are summed once (b_ih + b_hh) and added to that projection;
* one loop over (batch, hidden unit) does all gate nonlinearities, the cell update and the
  output, and overwrites the pre-activations with the gate values that backward needs, so
  nothing is allocated per step;
* backward keeps every step's gate gradients in one (T*B, G*H) buffer, so dW_ih, dW_hh, dx
  and the biases' gradient are one matrix product each, after the time loop.

The LSTM goes further (the RNN, a quarter of the work per step, keeps the plain version):

* each step is cut into blocks of hidden units. A block's recurrent product is small enough
  for BLAS's fast path for small matrices (see ``BLOCK_MNK``), reads weights packed once per
  call into the block's own compact layout, and is followed by the block's gate math, so
  blocks never wait for each other within a step. At batch 1 the products are matrix-vector
  products: where the blocks' gate rows are whole tiles of 64, ``lstmkit.kernels.simd.add_tile``
  on tiles of W_hh^T, which each block packs at its first step and then reads with its sums
  held in vector registers; otherwise BLAS on W_hh itself (``_gemv``), or up to
  ``MATVEC_UP_TO`` units ``add_tile`` on W_hh^T (``_add_matvec``);
* the recurrent product is added into the step's pre-activations before the gate loop, and
  backward writes its gradients over the saved gate values: the gate loops then touch few
  arrays, which is what lets LLVM vectorise them cheaply for every batch row;
* from ``PARALLEL_FROM`` multiply-adds per step, the time loop runs on Numba's threads, in ONE
  parallel region for the whole loop. With enough batch rows, each thread takes its own rows
  through every step and waits for nobody (rows never meet; see ``_plan``); otherwise the
  threads share the blocks of each step and wait for each other at its end
  (``lstmkit.kernels.sync``). From ``PARALLEL_PRODUCT_FROM`` the large products split their
  rows between the threads (products of few rows: their columns; see ``_gemm_part``).
  BLAS itself runs on one thread, so the two thread pools never compete for the cores;
* large arrays come from a recycler (``_Recycler``) that reuses their memory from call to call.

Transcendentals: pip's llvmlite has no vector math library, so ``math.tanh`` in a loop is a
scalar call that blocks SIMD. In float32 the kernels use a clamped rational tanh (the
Eigen library's fit; max abs error 3e-7) and sigmoid(x) = 0.5 tanh(x / 2) + 0.5, which LLVM
vectorises. ``error_model="numpy"`` drops Python's division-by-zero checks, which would
otherwise stop vectorisation too. Float64 keeps exact libm calls: it is the precise path, for
checking gradients and results, and runs on one thread (``_one_thread_twin``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import subprocess
import sys
import threading
from types import FunctionType

import numpy as np
from numba import get_num_threads, njit, prange, types
from numba.extending import overload, register_jitable

from lstmkit import _checks
from lstmkit.kernels.simd import TILE, VECTOR_BYTES, add_tile, transpose_block
from lstmkit.kernels.sync import claim, count_done, wait_until

__all__ = ["lstm_forward", "lstm_backward", "rnn_forward", "rnn_backward", "tanh", "sigmoid",
           "compile_all"]

_JIT = dict(cache=True, fastmath=True, error_model="numpy", nogil=True)
# The LSTM's gate loops: every fast-math flag but "contract" (fusing a * b + c into one FMA
# instruction). With it, LLVM fused the backward loop differently when compiling in-process
# than in the copy it caches on disk, so results changed in the last bit depending on whether
# the kernel came from the cache; notebooks would then not reproduce their stored outputs.
# They allocate nothing, and without Numba's runtime (_nrt=False) the views they take of each
# batch row are not reference-counted: measured, the forward gate loop at B=64, H=32 took
# 1.27 ms instead of 1.69 ms over T=100 steps. (The caller holds every array.)
_JIT_GATES = dict(_JIT, fastmath={"nnan", "ninf", "nsz", "arcp", "afn", "reassoc"}, _nrt=False)
# Compile time (every kernel, cold, in one process: 14-17 s here, 21 s before these four rules;
# compile_all shares it between two processes):
# * helpers called from kernels (the BLAS wrappers) are register_jitable, not @njit: a
#   dispatcher compiles one copy per combination of *constant* arguments it is called with
#   (gemm(..., False, ..., 0, ...) and gemm(..., True, ..., 1, ...) are two), an overload
#   one per argument type;
# * no array-to-array slice assignment: its shape-mismatch error compiles a string formatter;
# * no array built from a list;
# * no array allocated inside a kernel: the caller passes every output and scratch array in
#   (measured, the four RNN kernels: 2.1 s with np.empty & co. inside, 1.4 s without).
# Drivers with prange: only the explicit prange loops run in parallel (Numba would otherwise
# also turn array expressions such as np.zeros into parallel loops, each compiled separately).
_PRANGE_ONLY = {"prange": True, "numpy": False, "setitem": False, "reduction": False,
                "comprehension": False, "stencil": False, "fusion": False, "inplace_binop": False}

# Rational tanh for float32: p(x) / q(x), odd/even polynomials, on [-7.9053, 7.9053], where
# tanh is within 3e-7 of 1 (further out the fit overshoots 1, then falls away).
_CLAMP = np.float32(7.90531110763549805)
_A1, _A3, _A5, _A7, _A9, _A11, _A13 = (np.float32(v) for v in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_B0, _B2, _B4, _B6 = (np.float32(v) for v in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06))
_HALF32 = np.float32(0.5)


def tanh(x):
    """tanh for use inside kernels: rational float32 approximation, exact libm in float64."""
    return math.tanh(x)


def sigmoid(x):
    """Logistic function for use inside kernels (see ``tanh``); never overflows."""
    return 0.5 * math.tanh(0.5 * x) + 0.5


@overload(tanh, jit_options={"fastmath": True, "error_model": "numpy"})
def _tanh_impl(x):
    if x == types.float32:
        def tanh32(x):
            x = min(max(x, -_CLAMP), _CLAMP)
            x2 = x * x
            p = x2 * (x2 * (x2 * (x2 * (x2 * (x2 * _A13 + _A11) + _A9) + _A7) + _A5) + _A3) + _A1
            q = x2 * (x2 * (x2 * _B6 + _B4) + _B2) + _B0
            return x * p / q
        return tanh32
    if x == types.float64:
        return lambda x: math.tanh(x)


@overload(sigmoid, jit_options={"fastmath": True, "error_model": "numpy"})
def _sigmoid_impl(x):
    if x == types.float32:
        return lambda x: _HALF32 * tanh(_HALF32 * x) + _HALF32
    if x == types.float64:
        def sigmoid64(x):
            # The reference's overflow-free form: only exponentiate -|x|.
            e = math.exp(-abs(x))
            return 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)
        return sigmoid64


# ------------------------------------------------------------------- finite arguments


def _has_nonfinite(a):
    """Whether the 1-D float array ``a`` holds a NaN or an inf (inside kernels)."""
    return not np.isfinite(a).all()


@overload(_has_nonfinite, jit_options={"error_model": "numpy"})
def _has_nonfinite_impl(a):
    # Integer arithmetic on the bits, so no fast-math flag can assume the NaNs away: a float
    # is NaN or inf exactly when its exponent bits are all ones. max() over the exponents is a
    # reduction LLVM vectorises (an OR would not do: 0x7F000000 | 0x00800000 is all ones).
    # Numba widens uint32 & uint32 to 64 bits; cast back, each vector holds twice the values
    # (measured, 256 KiB of float32 in the core's cache: 3.3 us against 8.3 us).
    bits = np.uint32 if a.dtype.bitwidth == 32 else np.uint64
    ones = bits(0x7F800000) if a.dtype.bitwidth == 32 else bits(0x7FF0000000000000)

    def impl(a):
        u, top = a.view(bits), bits(0)
        for i in range(u.size):  # (by index: iterating over the array itself did not vectorise)
            top = bits(max(top, bits(u[i] & ones)))
        return top == ones
    return impl


@njit(cache=True, error_model="numpy", nogil=True)
def _first_nonfinite(a0, a1, a2, a3, a4, a5, a6):
    """Index of the first of seven 1-D arrays that holds a NaN or inf, or -1."""
    for k, a in enumerate((a0, a1, a2, a3, a4, a5, a6)):
        if _has_nonfinite(a):
            return k
    return -1


_NO_ARRAY = {np.dtype(t): np.empty(0, dtype=t) for t in (np.float32, np.float64)}


def _check_finite(names: str, *arrays) -> None:
    """NonFiniteError (a ValueError) naming the first of ``arrays`` (at most 7, one dtype, None
    allowed) that holds a NaN or inf; ``names``: their names, separated by spaces.

    One compiled call for all of them: numpy's ``isfinite(a).all()`` cost ~1.3 us per array
    in call overhead alone, 9 us of a 90 us forward pass at batch 1, hidden 32."""
    empty = _NO_ARRAY[arrays[0].dtype]
    flat = [empty if a is None else a.reshape(-1) for a in arrays]
    k = _first_nonfinite(*flat, *[empty] * (7 - len(flat)))
    if k >= 0:
        raise _checks.NonFiniteError(names.split()[k])


# ---------------------------------------------------------------------- BLAS, in blocks

# numba's own wrapper around SciPy's BLAS ?gemm (what np.dot calls inside @njit). Calling it
# directly lets a product read and write sub-blocks in place (leading dimensions, beta = 1),
# which np.dot cannot. It is resolved by name, so kernels that call it stay cacheable.
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp, types.voidptr,
    types.voidptr, types.intp, types.voidptr, types.intp, types.voidptr, types.voidptr, types.intp))

# Largest product (M*N*K) per BLAS call inside the time loop, for steps too small to amortise
# BLAS's packing. OpenBLAS on AVX-512 CPUs runs products with M*N*K <= 1e6 through a "small
# matrix" kernel that does not repack its operands; above that it copies the weights into
# packed panels on every call, which for a per-step product can cost more than the
# arithmetic. Measured here on one core, h @ W_hh^T in one call, then in blocks within this
# bound: B=16, H=128: 21 us, 8.5 us; B=16, H=512: 324 us, 134 us; B=64, H=128: 46 us, 31 us.
# From LARGE_STEP multiply-adds per step the packing pays for itself (B=64, H=512: 377 us in
# one call, 496 us in these blocks), so each thread then takes one wide block.
BLOCK_MNK = 1 << 19
LARGE_STEP = 1 << 25


@register_jitable(**_JIT)
def _gemm(M, N, K, a, lda, ta, b, ldb, tb, c, ldc, beta, scal):
    """Row-major C[M, N] = op(A) @ op(B) + beta * C, op(X) = X^T where tX else X, on flat views.

    a, b, c: 1-D views that start at each matrix's first element; lda, ldb, ldc: the row
    strides of the arrays as stored. scal: [1, 0, 1] in the arrays' dtype (BLAS takes alpha and
    beta by pointer); beta: 0 or 1. BLAS is column-major, so this is C^T = op(B)^T op(A)^T.
    """
    kind = np.int8(115) if a.itemsize == 4 else np.int8(100)  # "s" or "d"
    op_a = np.int8(84) if ta else np.int8(78)  # "T" or "N"
    op_b = np.int8(84) if tb else np.int8(78)
    _xxgemm(kind, op_b, op_a, N, M, K, scal[0:].ctypes, b.ctypes, ldb, a.ctypes, lda,
            scal[1 + beta:].ctypes, c.ctypes, ldc)


_xxgemv = types.ExternalFunction("numba_xxgemv", types.intc(
    types.char, types.char, types.intp, types.intp, types.voidptr, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.voidptr))


@register_jitable(**_JIT)
def _gemv(M, N, a, lda, ta, x, y, beta, scal):
    """Row-major y[M] = op(A) @ x[N] + beta * y: A is (M, N), or (N, M) with ta, on a flat view
    with row stride lda (see ``_gemm``).

    For batch 1, where a matrix product with one row runs far below speed (measured, h @ W_hh^T
    at H = 512 on one core: 76 us through ?gemm, 45 us through four ?gemv calls on W_hh's own
    rows), and which then needs no packed copy of the weights either."""
    kind = np.int8(115) if a.itemsize == 4 else np.int8(100)  # "s" or "d"
    op = np.int8(78) if ta else np.int8(84)  # column-major BLAS sees A^T: "N" or "T"
    m, n = (M, N) if ta else (N, M)
    _xxgemv(kind, op, m, n, scal[0:].ctypes, a.ctypes, lda, x.ctypes, scal[1 + beta:].ctypes, y.ctypes)


# At batch 1, hidden sizes up to this many units: the recurrent product is ``_add_matvec``
# on W_hh^T (packed once per call) instead of BLAS ?gemv on W_hh. Measured here, one product
# of a (4H, H) float32 matrix: H=16: 16 ns against 95 ns; H=32: 44 ns against 204 ns;
# H=64: 484 ns against 633 ns; H=128: 2.7 us against 2.4 us (a call to BLAS costs more than
# the arithmetic of a small product). Larger W_hh are read from W_hh itself, unpacked.
MATVEC_UP_TO = 64


@register_jitable(**_JIT)
def _add_matvec(WT, h, y, pad):
    """y[G] += h[H] @ WT[H, :G] (WT flat, row-major (H, Gp), where Gp is G rounded up to whole
    tiles of TILE outputs, zeros beyond G: see ``_packed``), one tile after another with
    ``add_tile``: for every j, y[j] + WT[0, j] h[0] + WT[1, j] h[1] + ... summed left to right
    in plain IEEE arithmetic, whatever fast-math flags the kernel that calls it has (a loop
    written here would take them, and LLVM reordered its sums), so the same bit for bit
    wherever it is compiled. A last, partial tile is summed in pad: (TILE,) scratch."""
    H, G = h.size, y.size
    Gp = WT.size // H
    n = G - G % TILE
    for c0 in range(0, n, TILE):
        add_tile(y, c0, WT, c0, Gp, h)
    if n < G:  # (bounds: n + (H - 1) * Gp + TILE = WT.size)
        for j in range(TILE):
            pad[j] = y[n + j] if n + j < G else 0
        add_tile(pad, 0, WT, n, Gp, h)
        for j in range(G - n):
            y[n + j] = pad[j]


# scal for _gemm and _gemv: alpha = 1, and beta = 0 or 1, in each dtype (BLAS takes them by
# pointer). Passed in by the callers: building it inside a kernel compiled slowly. Never written.
_SCALARS = {np.dtype(t): np.array([1, 0, 1], dtype=t) for t in (np.float32, np.float64)}


@register_jitable(**_JIT)
def _column_sums(a, R, C, c0, c1, out):
    """out[c0:c1] += the column sums of columns c0 .. c1 - 1 of a, an (R, C) matrix given flat,
    row by row: each row is a unit-stride loop, which vectorises."""
    part = out[c0:c1]
    for r in range(R):
        row = a[r * C + c0:r * C + c1]
        for c in range(c1 - c0):
            part[c] += row[c]


# Products split their columns between threads, instead of their rows, from this many columns
# per row (see _gemm_part). Measured here, the input projection of T*B rows on two threads,
# I = H, us, rows split against columns split: H=128, 20 rows: 31/25, 100 rows: 59/83; H=256,
# 100 rows: 214/186, 400 rows: 537/643; H=512, 100 rows: 805/629, 200 rows: 1226/1184, 400 rows:
# 2086/2208, 1600 rows: 7456/7961; H=1024, 100 rows: 3611/2526. One row, as a matrix-vector
# product: a forward pass of one step at H=512 took 0.17 ms, against 0.38 ms through ?gemm.
COLUMNS_PER_ROW = 8


@register_jitable(**_JIT)
def _gemm_part(part, parts, M, N, K, a, lda, ta, b, ldb, tb, c, ldc, scal):
    """Part `part` of `parts` of C = op(A) @ op(B) (see ``_gemm``), so that several threads can
    share one large product: each part its own rows of C, or, where C has more than
    COLUMNS_PER_ROW times as many columns as rows, its own columns, in whole cache lines (a part
    may get none). Returns (r0, r1, c0, c1): C[r0:r1, c0:c1] is what it wrote.

    Each BLAS call first copies (packs) the part of op(B) that it reads: split by rows, every
    part copies all of it, which a few rows do not repay. One row of A (not transposed) is a
    matrix-vector product, which copies nothing (see COLUMNS_PER_ROW for measurements)."""
    r0, r1, c0, c1, by_columns = _part_bounds(part, parts, M, N)
    if by_columns:
        b_part = b[c0 * ldb:] if tb else b[c0:]  # columns c0 .. of op(B)
        if c1 > c0 and M == 1 and not ta:  # c[c0:c1] = op(B)[:, c0:c1]^T a
            _gemv(c1 - c0, K, b_part, ldb, not tb, a, c[c0:], 0, scal)
        elif c1 > c0:
            _gemm(M, c1 - c0, K, a, lda, ta, b_part, ldb, tb, c[c0:], ldc, 0, scal)
    elif r1 > r0:
        _gemm(r1 - r0, N, K, a[r0 * (1 if ta else lda):], lda, ta, b, ldb, tb,
              c[r0 * ldc:], ldc, 0, scal)
    return r0, r1, c0, c1


@register_jitable(**_JIT)
def _part_bounds(part, parts, M, N):
    """(r0, r1, c0, c1, by_columns): C[r0:r1, c0:c1] is the block of an (M, N) product that
    part `part` of `parts` writes, and whether the parts split C by columns (see
    ``_gemm_part``)."""
    if COLUMNS_PER_ROW * M < N:
        c0 = N * part // parts // LINE_UNITS * LINE_UNITS
        c1 = N if part == parts - 1 else N * (part + 1) // parts // LINE_UNITS * LINE_UNITS
        return 0, M, c0, c1, True
    return M * part // parts, M * (part + 1) // parts, 0, N, False


# Hidden units per 64-byte cache line (float32). Blocks run by several threads are a whole
# number of lines wide: a block of 8 units shares each line of a row of h, c and the gates with
# its neighbour, and the two threads then take the line from each other at every write
# (measured on a 16-core machine, B=64, H=32, training: 11.5 ms on 4 threads with blocks of 8
# units, 4.9 ms on one thread).
LINE_UNITS = 16


def block_width(B: int, H: int, threads: int) -> int:
    """Hidden units per block (see BLOCK_MNK): a block's product in one step is
    (B x H) @ (H x 4 width). Every thread gets at least one block where H allows. Not narrower
    than 8 units: tiny products run below speed; on several threads, a multiple of LINE_UNITS.
    (At batch 1, one block per thread: see ``_gemv``.)"""
    if B == 1 or B * 4 * H * H >= LARGE_STEP:
        width = H
    else:
        width = max(8, BLOCK_MNK // (4 * B * H))
    width = min(width, -(-H // threads))
    if threads > 1:
        width = -(-width // LINE_UNITS) * LINE_UNITS
    return max(1, min(width, H))


@njit(**_JIT)
def _transpose_into(src, dst):
    """dst = src^T, in 8 x 8 tiles. A plain loop strides through one of the arrays; and with
    larger tiles, rows 4 KiB apart (H = 512 in float32) fall into the same cache set and evict
    each other (measured for a (2048, 512) W_hh: 3.4 ms with 16 x 16 tiles, 0.8 ms with 8 x 8)."""
    R, C = src.shape
    for r0 in range(0, R, 8):
        for c0 in range(0, C, 8):
            for c in range(c0, min(c0 + 8, C)):
                for r in range(r0, min(r0 + 8, R)):
                    dst[c, r] = src[r, c]


@njit(**_JIT)
def _pack(W_hh, width, transpose, out):
    """W_hh: (4H, H) -> flat blocks, one per block of `width` hidden units j0 .. j0 + w (the
    last may be narrower), each the compact matrix that the block's product reads in a step:

    forward (transpose=True): (H, 4w), its columns q*w .. q*w + w = W_hh[q*H + j0 : q*H + j0 + w, :]^T
        for the gates q = i, f, g, o, so h @ it gives the block's four pre-activations at once;
    backward (transpose=False): (4H, w) = W_hh[:, j0 : j0 + w], so dA @ it gives dh[:, j0 : j0 + w].
    """
    G, H = W_hh.shape
    for j0 in range(0, H, width):
        w = min(width, H - j0)
        if transpose:
            dst = out[G * j0:G * (j0 + w)].reshape(H, 4 * w)
            for q in range(4):
                _transpose_into(W_hh[q * H + j0:q * H + j0 + w], dst[:, q * w:(q + 1) * w])
        else:  # a loop, not a slice assignment (see "Compile time" above)
            dst = out[G * j0:G * (j0 + w)]
            for r in range(G):
                src = W_hh[r]
                for j in range(w):
                    dst[r * w + j] = src[j0 + j]


def _tiled_product(t, j0, w, W_hh, Wp, h, a, k0, k1):
    """a[gate rows of units j0 .. j0 + w - 1] += h[k0:k1] @ their columns k0 .. k1 - 1 of
    W_hh^T, at step t, from tiles of W_hh^T in Wp, which the block packs at step 0, in the
    block's first call, whose range holds j0. The block's 4w gate rows, gate by gate, are cut
    into tiles of TILE rows; the tile from row p of them, transposed to
    (H, TILE), starts at G*j0 + p*H. Each tile is one contiguous run of memory, which
    ``add_tile`` reads from start to end. A tile never straddles two gates (w: a multiple of
    TILE), except in a block of all H units, whose gate rows are W_hh's own rows in order.
    Float32 only (see the overload below)."""


@overload(_tiled_product, jit_options=_JIT)
def _tiled_product_impl(t, j0, w, W_hh, Wp, h, a, k0, k1):
    if a.dtype != types.float32:
        # float64, the precise path, never runs on tiles (see _tiled): compiling them for it
        # took ~0.4 s of the kernels' cold compile.
        def no_tiles(t, j0, w, W_hh, Wp, h, a, k0, k1):
            raise AssertionError("tiles are for float32")
        return no_tiles

    def tiled_product(t, j0, w, W_hh, Wp, h, a, k0, k1):
        G, H = W_hh.shape
        if k1 == k0:
            return
        if t == 0 and k0 <= j0 < k1:  # packed by the thread that first runs the block: its cache
            # (inline: Numba compiles every function apart, which adds to the cold compile)
            L = VECTOR_BYTES // 4  # transpose_block's side (H and w are multiples of it)
            src = W_hh.reshape(G * H)
            for p in range(0, 4 * w, TILE):
                for v in range(p, p + TILE, L):  # L rows of W_hh: gate v // w, unit v % w
                    row = v // w * H + j0 + v % w
                    for k in range(0, H, L):
                        transpose_block(Wp, G * j0 + p * H + k * TILE + v - p, TILE,
                                        src, row * H + k, H)
        # Every other step runs the tiles backwards, starting with those read last, which
        # are still in the core's cache when the block's tiles are larger than it (measured
        # at H=512, 2 MiB a block: 20-21 us per step, against 26 us in one order). Each tile
        # holds its own outputs, so the order changes no result.
        tiles, hk = 4 * w // TILE, h[k0:k1]
        for k in range(tiles):
            p = (tiles - 1 - k if t % 2 else k) * TILE
            add_tile(a, p // w * H + j0 + p % w, Wp, G * j0 + p * H + k0 * TILE, TILE, hk)
    return tiled_product


# ------------------------------------------------------------------------------ LSTM
#
# Each step is split into blocks of hidden units. A block owns its units' columns of all four
# gates, so at step t it runs its products and then its gate math without waiting for the
# other blocks; the only synchronisation is the end of the step (step t+1 needs all of h_t).
# The drivers run the time loop on one thread (small problems), or on all of Numba's threads
# in one parallel region, where at each step every thread runs the blocks it claims and then
# waits for the rest (see lstmkit.kernels.sync; opening a region per step instead cost ~1 us
# a step, as much as a whole small step). They split the large products (the input
# projection, the weight gradients) between threads, by rows or columns. BLAS itself runs on
# one thread.


@register_jitable(**_JIT)
def _nth_block(k, p, n, blocks):
    """The k-th block that thread p of n tries to claim in a step: first its own share of the
    blocks, in order (so that each thread keeps reading the same weights, which stay in its
    cache), then the other threads' blocks from the far end (a late thread's last ones)."""
    lo, hi = blocks * p // n, blocks * (p + 1) // n
    if k < hi - lo:
        return lo + k
    k -= hi - lo
    return blocks - 1 - k if k < blocks - hi else lo - 1 - (k - (blocks - hi))


@register_jitable(**_JIT)
def _share(p, n, B, batch_split):
    """(thread, threads, first row, end row) for thread p of n in a time loop: with batch_split,
    thread p alone runs rows B*p//n .. B*(p+1)//n - 1 (batch rows never meet, so it waits for
    nobody); otherwise all n share every step's blocks over all rows."""
    zero, one = np.int64(0), np.int64(1)  # (not literals: each would compile its own copy)
    if batch_split:
        return zero, one, B * p // n, B * (p + 1) // n
    return p, n, zero, B


# Bytes of a block's tiles up to which its product runs in parts, its own units first (see
# _lstm_fwd_steps). Measured here, forward at B=1, T=100 on two threads (two blocks), against
# one part: H=128 (128 KiB a block) 3-7% faster, H=256 (512 KiB) 1-5%; H=512 (2 MiB, more
# than a core's cache keeps between two steps) 3-8% slower, the parts undoing the reuse of
# the tiles read last (see _tiled_product). Without waiting for each other at all (a wrong
# answer, timed for the bound): 10-26% faster at H=128, 3-7% at H=512.
SPLIT_TILES_UP_TO = 1 << 20


@njit(**_JIT_GATES)
def _lstm_fwd_steps(p, n, width, r0, r1, gates, hs, cs, W_hh, Wp, tiles, rec, taken, done,
                    nonfinite, scal):
    """Thread p of n's part of the forward time loop for batch rows r0 .. r1 - 1 (n = 1: all of
    it): at each step, the blocks of `width` units that it claims (see
    ``lstmkit.kernels.sync``), once the step before is done (on tiles, its first block
    starts before that: see below). taken: (T * blocks,), done: (T,), int32 zeros on entry.
    Counts in nonfinite[0] a NaN or inf in h0, c0 (its rows of them, thread 0) or W_hh (the
    rows of its blocks, just before their first product reads them). (One function, blocks
    inlined: each level of calls added ~0.3 s of compile time.)"""
    T1, _, H = hs.shape
    G, B = 4 * H, r1 - r0
    vector = hs.shape[1] == 1  # batch 1: Wp is W_hh or W_hh^T, for matrix-vector products
    blocks = -(-H // width)
    if p == 0 and (_has_nonfinite(hs[0, r0:r1].reshape(B * H))
                   or _has_nonfinite(cs[0, r0:r1].reshape(B * H))):
        count_done(nonfinite, 0)
    W_rows = W_hh.reshape(G * H)
    split = tiles and blocks > 1 and 4 * width * H * hs.itemsize <= SPLIT_TILES_UP_TO
    ran_first = False  # whether the thread ran its first block (_nth_block k = 0) a step ago
    for t in range(T1 - 1):
        # Step t reads h_{t-1}, all of which is written once done[t - 1] counts every block.
        # A thread waits for that only where it must: on tiles, its first block, if it ran that
        # block a step ago, starts with the product over its own units of h_{t-1} (see below).
        waited = t == 0 or n == 1
        claimed_first = False
        for k in range(blocks):
            blk = _nth_block(k, p, n, blocks)
            early = split and k == 0 and ran_first
            if not (waited or early):  # (before claiming: a block is claimed to be run now)
                wait_until(done, t - 1, blocks)
                waited = True
            if n > 1 and not claim(taken, t * blocks + blk):
                continue
            claimed_first = claimed_first or k == 0
            j0 = blk * width
            w = min(width, H - j0)
            if t == 0 and r0 == 0:  # (with the batch split, one thread checks all of W_hh)
                for q in range(4):
                    if _has_nonfinite(W_rows[(q * H + j0) * H:(q * H + j0 + w) * H]):
                        count_done(nonfinite, 0)
            # The block's recurrent pre-activations, h_{t-1} @ (its packed slice of W_hh^T),
            # are added to its four column ranges of gates[t], which hold x_t W_ih^T + bias,
            # before the gate loop: that loop then reads one array instead of three, and has
            # fewer pointers to check against each other before its vectorised loop, once per
            # batch row (measured at B=64, w=64: 57 ns per row instead of 300 ns). BLAS adds
            # them itself (beta = 1) where it can.
            a_t, h_t = gates[t, r0:r1].reshape(B * G), hs[t, r0:r1].reshape(B * H)
            if tiles:  # batch 1, Wp in tiles of W_hh^T (see _tiled_product). Where split,
                # in parts: its own units first, which this thread wrote a step ago where
                # `early`, so that the wait for the other threads' units overlaps that product
                # instead of preceding it; the order, fixed per block, never depends on which
                # thread runs it. Otherwise in one part (the other two are empty).
                lo, hi = (j0, j0 + w) if split else (np.int64(0), H)
                _tiled_product(t, j0, w, W_hh, Wp, h_t, a_t, lo, hi)
                if not waited:  # (only where early)
                    wait_until(done, t - 1, blocks)
                    waited = True
                _tiled_product(t, j0, w, W_hh, Wp, h_t, a_t, np.int64(0), lo)
                _tiled_product(t, j0, w, W_hh, Wp, h_t, a_t, hi, H)
            elif vector and w == H and H <= MATVEC_UP_TO:  # Wp is W_hh^T (see _packed)
                _add_matvec(Wp, h_t, a_t, rec)
            elif vector and w == H:  # Wp is W_hh itself, whose rows are those of gates[t]
                _gemv(G, H, Wp, H, False, h_t, a_t, 1, scal)
            elif vector:  # the block's rows of each gate q, times h
                for q in range(4):
                    _gemv(w, H, Wp[(q * H + j0) * H:], H, False, h_t, a_t[q * H + j0:], 1, scal)
            elif w == H:  # one block: its packed W_hh^T has the columns of gates[t]
                _gemm(B, G, H, h_t, H, False, Wp, G, False, a_t, G, 1, scal)
            else:  # one product into the scratch rec (four would be slower), added row by row
                r_blk = rec[G * r0 + B * 4 * j0:G * r0 + B * 4 * (j0 + w)]
                _gemm(B, 4 * w, H, h_t, H, False, Wp[G * j0:], 4 * w, False, r_blk, 4 * w, 0, scal)
                for b in range(B):
                    for q in range(4):
                        c0 = b * G + q * H + j0
                        a_q, r_q = a_t[c0:c0 + w], r_blk[(4 * b + q) * w:(4 * b + q + 1) * w]
                        for j in range(w):
                            a_q[j] += r_q[j]
            for b in range(r0, r1):
                # One 1-D view per gate: LLVM vectorises this loop only when each operand is a
                # plain unit-stride pointer (measured: 2.4 us per step at B=16, H=128, against
                # 24 us for the same loop indexing 2-D arrays at offsets H, 2H, 3H).
                a = gates[t, b]
                a_i, a_f = a[j0:j0 + w], a[H + j0:H + j0 + w]
                a_g, a_o = a[2 * H + j0:2 * H + j0 + w], a[3 * H + j0:3 * H + j0 + w]
                c_prev, c_new, h_new = cs[t, b, j0:j0 + w], cs[t + 1, b, j0:j0 + w], hs[t + 1, b, j0:j0 + w]
                for j in range(w):
                    i = sigmoid(a_i[j])
                    f = sigmoid(a_f[j])
                    g = tanh(a_g[j])
                    o = sigmoid(a_o[j])
                    c = f * c_prev[j] + i * g
                    a_i[j], a_f[j], a_g[j], a_o[j] = i, f, g, o
                    c_new[j] = c
                    h_new[j] = o * tanh(c)
            if n > 1:
                count_done(done, t)
        ran_first = claimed_first
    # (no wait for the last step: the parallel region ends when every thread has)


@register_jitable(**_JIT)
def _project_nonfinite(p, n, x, W_ih, bias):
    """Whether part p of n of the input projection's operands holds a NaN or inf: its share of
    the rows of x and of W_ih, and in part 0 the bias. Split by columns (see ``_gemm_part``), a
    part checks the rows of W_ih that its product reads, which puts them in its core's cache
    just before BLAS reads them."""
    T, B, I = x.shape
    G = W_ih.shape[0]
    M = T * B
    _, _, c0, c1, by_columns = _part_bounds(p, n, M, G)
    if not by_columns:  # every part reads all of W_ih
        c0, c1 = G * p // n, G * (p + 1) // n
    x_rows, W_rows = x.reshape(M * I), W_ih.reshape(G * I)
    return (_has_nonfinite(x_rows[M * p // n * I:M * (p + 1) // n * I])
            or _has_nonfinite(W_rows[c0 * I:c1 * I]) or (p == 0 and _has_nonfinite(bias)))


@register_jitable(**_JIT)
def _project(p, n, x, W_ih, bias, gates, scal):
    """Part p of n of the input projection of all steps, x W_ih^T + bias: (T*B, I) @ (I, 4H),
    split by ``_gemm_part``. Returns whether its share of the operands, which it tests first
    (``_project_nonfinite``), holds a NaN or inf."""
    nonfinite = _project_nonfinite(p, n, x, W_ih, bias)
    T, B, I = x.shape
    G = W_ih.shape[0]
    M = T * B
    gf = gates.reshape(M * G)
    r0, r1, c0, c1 = _gemm_part(p, n, M, G, I, x.reshape(M * I), I, False, W_ih.reshape(G * I), I,
                                True, gf, G, scal)
    b = bias[c0:c1]
    for r in range(r0, r1):
        row = gf[r * G + c0:r * G + c1]
        for c in range(c1 - c0):
            row[c] += b[c]
    return nonfinite


@njit(parallel=_PRANGE_ONLY, **_JIT)
def _lstm_fwd(x, W_ih, gates, hs, cs, W_hh, Wp, tiles, bias, width, counters, rec, scal,
              loop_threads, batch_split, product_threads):
    """The forward pass. x: (T, B, I); hs, cs: (T + 1, B, H) with h0, c0 in row 0, filled in;
    gates: (T, B, 4H), filled with the gate values i, f, g, o of every step; Wp: W_hh packed
    for blocks of `width` units, or with tiles (``_tiled``) memory that the time loop packs
    W_hh: (4H, H) into; counters: ``_counters(T, H, width)``; rec: (max(B * 4H, TILE),) scratch;
    scal: ``_SCALARS[dtype]``. The projection is split over product_threads threads,
    the time loop over loop_threads (1: no parallel region at all): each step's blocks, or with
    batch_split, the batch rows (each thread then runs the whole loop for its rows alone).

    The threads test the arguments for NaN and inf as they first read them, each its share, in
    place of a pass over them all on one thread beforehand (measured here, forward at B=1,
    T=100, against that pass: 5-6% faster at H=32, 3-5% at H=128, 2-10% at H=512, where the
    weights, 8 MiB, exceed the cores' caches); the last of the counters counts the parts that
    met one (see ``lstm_forward``)."""
    T = x.shape[0]
    nonfinite = counters[-1:]
    n = product_threads
    if n == 1:  # no parallel region at all for small problems (see _lstm_bwd)
        if _project(0, 1, x, W_ih, bias, gates, scal):
            count_done(nonfinite, 0)
    else:
        for p in prange(n):  # (p as int64, as below: one compiled copy of _project)
            if _project(np.int64(p), n, x, W_ih, bias, gates, scal):
                count_done(nonfinite, 0)
    taken, done = counters[T:-1], counters[:T]
    n, B = loop_threads, x.shape[1]
    if n == 1:  # (p as int64 in all calls, for one compiled copy: prange's index is unsigned)
        _lstm_fwd_steps(np.int64(0), n, width, np.int64(0), B, gates, hs, cs, W_hh, Wp, tiles, rec,
                        taken, done, nonfinite, scal)
    else:
        for p in prange(n):  # one parallel region for the whole time loop
            q, m, r0, r1 = _share(np.int64(p), n, B, batch_split)
            _lstm_fwd_steps(q, m, width, r0, r1, gates, hs, cs, W_hh, Wp, tiles, rec, taken, done,
                            nonfinite, scal)


@njit(**_JIT_GATES)
def _lstm_bwd_steps(p, n, width, r0, r1, K, dy, dh, dc, dA, cs, Wp, taken, done, scal):
    """Thread p of n's part of the backward time loop, as in ``_lstm_fwd_steps``."""
    T, _, G = dA.shape
    H, B = G // 4, r1 - r0
    vector = dA.shape[1] == 1  # batch 1: Wp is W_hh itself
    blocks = -(-H // width)
    one = dA.dtype.type(1)  # a bare 1 would promote float32 arithmetic to float64
    for t in range(T - 1, -1, -1):
        for k in range(blocks):
            blk = _nth_block(k, p, n, blocks)
            if n > 1 and not claim(taken, t * blocks + blk):
                continue
            j0 = blk * width
            w = min(width, H - j0)
            if t < T - 1 and vector:  # Wp is W_hh itself (see _packed)
                _gemv(w, G, Wp[j0:], H, True, dA[t + 1, 0], dh[0, j0:], 0, scal)
            elif t < T - 1:  # dh[:, j0 : j0 + w] = dA[t + 1] @ W_hh[:, j0 : j0 + w], as a sum
                # of products over K rows of W_hh at a time (K = 4H: one product)
                dA_next, dh_f = dA[t + 1, r0:r1].reshape(B * G), dh[r0:r1].reshape(B * H)
                wp = Wp[G * j0:]
                for k0 in range(0, G, K):
                    _gemm(B, w, K, dA_next[k0:], G, False, wp[k0 * w:], w, False, dh_f[j0:], H,
                          min(k0, 1), scal)
            # dA[t] holds the gate values, which the loop below overwrites with their gradients,
            # and dy goes into dh first: the loop then has fewer pointers to check (see
            # _lstm_fwd_steps).
            for b in range(r0, r1):
                dh_b, dy_b = dh[b, j0:j0 + w], dy[t, b, j0:j0 + w]
                for j in range(w):
                    dh_b[j] += dy_b[j]
            for b in range(r0, r1):
                d = dA[t, b]  # 1-D views per gate, as in _lstm_fwd_steps, for SIMD
                d_i, d_f = d[j0:j0 + w], d[H + j0:H + j0 + w]
                d_g, d_o = d[2 * H + j0:2 * H + j0 + w], d[3 * H + j0:3 * H + j0 + w]
                c_prev, c_new = cs[t, b, j0:j0 + w], cs[t + 1, b, j0:j0 + w]
                dh_b, dc_b = dh[b, j0:j0 + w], dc[b, j0:j0 + w]
                for j in range(w):
                    i, f, g, o = d_i[j], d_f[j], d_g[j], d_o[j]
                    tc = tanh(c_new[j])  # recomputed rather than stored: saves T*B*H floats
                    dh_j = dh_b[j]
                    dc_j = dc_b[j] + dh_j * o * (one - tc * tc)
                    d_i[j] = dc_j * g * i * (one - i)
                    d_f[j] = dc_j * c_prev[j] * f * (one - f)
                    d_g[j] = dc_j * i * (one - g * g)
                    d_o[j] = dh_j * tc * o * (one - o)
                    dc_b[j] = dc_j * f
            if n > 1:
                count_done(done, t)
        if n > 1:
            wait_until(done, t, blocks)


@register_jitable(**_JIT)
def _lstm_bwd_products(p, n, dA, x, hs, W_ih, W_hh, dx, dh, dW_ih, dW_hh, db, scal):
    """Part p of n of the products after the time loop, with dA as one (T*B, 4H) matrix:
    dx = dA W_ih, dh_0 = dA[0] W_hh, dW_ih = dA^T x, dW_hh = dA^T h, and the bias gradient,
    the column sums of dA. Each part computes its share of every output (``_gemm_part``)."""
    T, B, I = x.shape
    G, H = W_hh.shape
    dA2 = dA.reshape(T * B * G)
    _gemm_part(p, n, T * B, I, G, dA2, G, False, W_ih.reshape(G * I), I, False,
               dx.reshape(T * B * I), I, scal)
    _gemm_part(p, n, B, H, G, dA2, G, False, W_hh.reshape(G * H), H, False, dh.reshape(B * H), H, scal)
    _gemm_part(p, n, G, I, T * B, dA2, G, True, x.reshape(T * B * I), I, False,
               dW_ih.reshape(G * I), I, scal)
    _gemm_part(p, n, G, H, T * B, dA2, G, True, hs.reshape((T + 1) * B * H), H, False,
               dW_hh.reshape(G * H), H, scal)
    _column_sums(dA2, T * B, G, G * p // n, G * (p + 1) // n, db)


@njit(parallel=_PRANGE_ONLY, **_JIT)
def _lstm_bwd(dy, dh, dc, x, W_ih, W_hh, dA, hs, cs, Wp, width, K, counters, scal, loop_threads,
              batch_split, product_threads, dx, dW_ih, dW_hh, db):
    """Backward through time. dh, dc: (B, H), dh_n and dc_n on entry, dh_0 and dc_0 on return;
    dA: (T, B, 4H), the forward pass's gate values on entry, overwritten with every step's
    gradients w.r.t. the pre-activations; Wp: W_hh packed for blocks of `width` units; K: rows
    of W_hh per product in the blocks. Fills in dx, dW_ih, dW_hh and db (the bias gradient;
    zeros on entry). Threads as in ``_lstm_fwd``."""
    T, B = dA.shape[0], dA.shape[1]
    taken, done = counters[T:], counters[:T]
    n = loop_threads
    if n == 1:
        _lstm_bwd_steps(np.int64(0), n, width, np.int64(0), B, K, dy, dh, dc, dA, cs, Wp, taken,
                        done, scal)
    else:  # as in _lstm_fwd
        for p in prange(n):
            q, m, r0, r1 = _share(np.int64(p), n, B, batch_split)
            _lstm_bwd_steps(q, m, width, r0, r1, K, dy, dh, dc, dA, cs, Wp, taken, done, scal)
    n = product_threads
    # Small problems never enter a parallel region: it costs more than they take, and Numba's
    # threading layers are not all safe to enter from several Python threads at once.
    if n == 1:
        _lstm_bwd_products(0, 1, dA, x, hs, W_ih, W_hh, dx, dh, dW_ih, dW_hh, db, scal)
    else:
        for p in prange(n):
            _lstm_bwd_products(np.int64(p), n, dA, x, hs, W_ih, W_hh, dx, dh, dW_ih, dW_hh, db,
                               scal)


# ------------------------------------------------------------------------------- RNN


@njit(**_JIT)
def _rnn_fwd(x, hs, W_ihT, W_hhT, bias, pre, rec, scal):
    """Fills in hs: (T + 1, B, H), with h0 in row 0; pre: (T, B, H) and rec: (B, H) scratch.
    (Arrays come from the caller: allocating them here added to the compile time.)"""
    T, B, I = x.shape
    H = hs.shape[2]
    _gemm(T * B, H, I, x.reshape(T * B * I), I, False, W_ihT.reshape(I * H), H, False,
          pre.reshape(T * B * H), H, 0, scal)
    for t in range(T):
        _gemm(B, H, H, hs[t].reshape(B * H), H, False, W_hhT.reshape(H * H), H, False,
              rec.reshape(B * H), H, 0, scal)
        for b in range(B):
            p, r, h_new = pre[t, b], rec[b], hs[t + 1, b]  # 1-D views: see _lstm_fwd_steps
            for j in range(H):
                h_new[j] = tanh(p[j] + r[j] + bias[j])


@njit(**_JIT)
def _rnn_bwd(dy, dh, x, W_ih, W_hh, hs, dA, dx, dW_ih, dW_hh, db, scal):
    """dh: dh_n on entry, dh_0 on return; dA: (T, B, H) scratch; fills in dx, dW_ih, dW_hh and
    db (zeros on entry). (Arrays come from the caller, as in _rnn_fwd.)"""
    T, B, I = x.shape
    H = hs.shape[2]
    one = x.dtype.type(1)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            d, h, dh_b, dy_b = dA[t, b], hs[t + 1, b], dh[b], dy[t, b]
            for j in range(H):
                d[j] = (dh_b[j] + dy_b[j]) * (one - h[j] * h[j])
        _gemm(B, H, H, dA[t].reshape(B * H), H, False, W_hh.reshape(H * H), H, False,
              dh.reshape(B * H), H, 0, scal)
    # After the loop, one product per weight over all steps; dA as one (T*B, H) matrix.
    dA2 = dA.reshape(T * B * H)
    _gemm(T * B, I, H, dA2, H, False, W_ih.reshape(H * I), I, False, dx.reshape(T * B * I), I, 0, scal)
    _gemm(H, I, T * B, dA2, H, True, x.reshape(T * B * I), I, False, dW_ih.reshape(H * I), I, 0, scal)
    _gemm(H, H, T * B, dA2, H, True, hs.reshape((T + 1) * B * H), H, False, dW_hh.reshape(H * H), H, 0, scal)
    _column_sums(dA2, T * B, H, 0, H, db)


# ------------------------------------------------------------------ public functions

# RNN: multiply-adds of one step's recurrent product (B x H times H x H) up to which the
# kernels run BLAS on one thread. Such products take at most a few hundred microseconds: a
# second thread saves little on an idle machine, and on a busy one OpenBLAS's spinning threads
# wait for a core at every step (measured here with other work on both cores, LSTM at B=16,
# H=128, forward and backward: 57 ms with two BLAS threads, 22 ms with one).
SINGLE_THREAD_BLAS_UP_TO = 1 << 24  # e.g. B=64, H=512


@functools.cache
def _blas_libraries() -> tuple:
    """threadpoolctl's controllers of the BLAS that Numba calls: SciPy's (``cython_blas``).

    Where SciPy bundles its own OpenBLAS (pip's wheels), that library alone: setting NumPy's
    threads too, which the kernels never use, made ``_one_blas_thread`` cost 3.9 us per call
    instead of 2.4 (measured here with warm caches). Where none of the libraries lies in SciPy's
    folders (SciPy built against the system's BLAS, which NumPy may share), all of them."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  the BLAS that Numba calls, loaded so it is found
    from threadpoolctl import ThreadpoolController

    libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    site = os.path.dirname(os.path.dirname(os.path.realpath(scipy.__file__)))
    # (scipy.libs: where pip's wheels keep it; not a package such as scipy_openblas64, NumPy's)
    scipys = [lib for lib in libs if os.path.relpath(os.path.realpath(lib.filepath), site)
              .split(os.sep)[0] in ("scipy", "scipy.libs")]
    return tuple(scipys or libs)


# LSTM: per-step multiply-adds (B * 4H * H) from which the time loop runs on Numba's threads
# (the threads then meet at every step, ~0.1 us), and multiply-adds from which one of the
# large products (input projection, weight gradients) does (one region per product).
# Measured here, forward over T=100 on one thread against two: B=16, H=32 (2^16): 0.205 ms
# against 0.204 ms; B=16, H=64 (2^18): 0.53 ms against 0.44 ms; B=64, H=32 (2^18): 0.71 ms
# against 0.62 ms. At batch 1, where each core then reads half of W_hh from its own cache:
# H=64 (2^14): 0.12 ms against 0.13 ms; H=128 (2^16): 0.36 ms against 0.29 ms.
PARALLEL_FROM = 1 << 17  # e.g. B=8, H=64
PARALLEL_FROM_BATCH1 = 1 << 16  # H >= 128
# Measured on a 16-core machine (T=100, forward / training, ms), by threads 1, 2, 4, 8, 16:
# B=1, H=512: 21.5/46.9, 9.0/22.1, 5.1/14.1, 6.7/15.3, 10.8/17.4; B=16, H=128: 4.5/11.5,
# 3.1/9.5, 2.6/7.1, 2.3/5.8, 2.4/7.7; B=64, H=128: 20.0/60.9, 14.3/40.5, 10.2/27.4, 7.2/20.0,
# 7.2/23.3. Past a point, more threads meeting at every step cost more than they bring.
MACS_PER_THREAD = 1 << 18
# Measured here, training at T=100 on two threads, ms, steps shared by blocks of units against
# batch rows split between the threads: B=8, H=128: 2.71 against 2.11; B=16, H=128: 3.50
# against 3.29; B=64, H=32: 1.64 against 1.35; B=64, H=256: 65.4 against 60.9. With fewer
# rows per thread: B=4, H=128: 1.04 against 1.16. With W_hh beyond a core's cache:
# B=16, H=384: 28.4 against 31.6; B=64, H=512: 228 against 241.
BATCH_SPLIT_ROWS = 4
BATCH_SPLIT_BYTES = 1 << 20  # W_hh of H = 256 in float32
PARALLEL_PRODUCT_FROM = 1 << 21


class _one_blas_thread:
    """A context in which BLAS uses one thread: inside the blocked time loops, whose products
    are small by design and may run on several Numba threads at once.

    It calls each BLAS library's own get/set functions: threadpoolctl's limit() context, which
    describes every library each time, took ~10 us per call, a tenth of a small forward pass."""

    def __enter__(self):
        self.before = [(lib, lib.get_num_threads()) for lib in _blas_libraries()]
        for lib, n in self.before:
            if n != 1:
                lib.set_num_threads(1)

    def __exit__(self, *exc):
        for lib, n in self.before:
            if n != 1:
                lib.set_num_threads(n)


def _blas_threads(B: int, H: int, G: int):
    """A context in which BLAS uses one thread when the per-step product is small."""
    if B * G * H * H > SINGLE_THREAD_BLAS_UP_TO:
        return contextlib.nullcontext()
    return _one_blas_thread()


class _Recycler(threading.local):
    """Large arrays whose memory is reused, once nothing refers to it any more, by later calls
    from the same thread.

    Allocating and freeing a few MiB per call made glibc hand the memory back to the system
    and fault it in again, page by page: measured at T=100, B=64, H=32, ~1,400 page faults per
    forward call, 3.4 ms instead of 1 ms. Each array handed out is a view of a flat buffer kept
    here, and every numpy view of it (and every torch tensor made from one) holds a reference to
    that buffer: a buffer whose only reference is this list's is free.

    Every kept array starts on a cache line (malloc only promises 16 bytes): threads that
    write neighbouring blocks of one row then never write to the same line (measured at B=64,
    H=32 on two threads, blocks of 16 units: forward 1.09 ms unaligned, 0.62 ms aligned).
    """

    FROM = 1 << 16  # bytes: smaller arrays come from np.empty
    MAX = 1 << 29  # bytes kept per thread, free or in use; beyond, arrays come from np.empty
    LINE = 64  # bytes

    def __init__(self):
        self.buffers: list[np.ndarray] = []
        self.starts: list[int] = []  # where the first cache line of each buffer starts

    def empty(self, shape: tuple[int, ...], dtype, aligned: bool = False) -> np.ndarray:
        """An array of this shape and dtype, uninitialised. Large ones always start on a cache
        line; small ones (np.empty's) only with aligned=True."""
        dtype = np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize
        if n < self.FROM:
            return _aligned_empty(shape, dtype) if aligned else np.empty(shape, dtype)
        size, buffers = n + self.LINE, self.buffers
        # (by index: a name bound to a buffer would be one more reference to it)
        i = next((i for i in range(len(buffers))
                  if buffers[i].size == size and _refs(buffers, i) == _ONLY_THE_LIST), None)
        if i is None:
            i = self._new(size)
            if i is None:  # over MAX: not kept
                return _aligned_empty(shape, dtype)
        start = self.starts[i]
        return buffers[i][start:start + n].view(dtype).reshape(shape)

    def _new(self, size: int) -> int | None:
        """Index of a new buffer of `size` bytes, after dropping free buffers (of other sizes)
        as needed to stay within MAX; None where it cannot be kept."""
        for i in reversed(range(len(self.buffers))):
            if sum(b.size for b in self.buffers) + size <= self.MAX:
                break
            if _refs(self.buffers, i) == _ONLY_THE_LIST:
                del self.buffers[i], self.starts[i]
        if sum(b.size for b in self.buffers) + size > self.MAX:
            return None
        buf = np.empty(size, np.uint8)
        self.buffers.append(buf)
        self.starts.append(-buf.ctypes.data % self.LINE)
        return len(self.buffers) - 1


def _aligned_empty(shape: tuple[int, ...], dtype, line: int = _Recycler.LINE) -> np.ndarray:
    """np.empty, starting on a cache line (see _Recycler)."""
    dtype = np.dtype(dtype)
    n = math.prod(shape) * dtype.itemsize
    buf = np.empty(n + line, np.uint8)
    start = -buf.ctypes.data % line
    return buf[start:start + n].view(dtype).reshape(shape)


def _refs(buffers: list, i: int) -> int:
    return sys.getrefcount(buffers[i])


_ONLY_THE_LIST = _refs([np.empty(1)], 0)  # measured, not assumed: it differs between Pythons
_recycled = _Recycler()


# Steps from which a forward pass at batch 1 packs W_hh into tiles (see _tiled): each block
# packs its own at its first step, which costs a few steps' worth of products. Measured here,
# forward at T = 1, 4, 8, 16 and 32, us, with tiles against without: H=128: 38/31, 61/57,
# 72/72, 93/98, 137/158; H=512: 437/379, 481/473, 556/589, 742/830, 1116/1382.
TILES_FROM_STEPS = 8


def _tiled(T: int, B: int, H: int, width: int, dtype=np.float32) -> bool:
    """Whether a forward pass runs its recurrent products on tiles (``add_tile``): in float32,
    at batch 1, over TILES_FROM_STEPS steps or more, in blocks of whole tiles, or in one block
    whose 4H gate rows are whole tiles (H: a multiple of TILE // 4 = 16)."""
    return (dtype == np.float32 and B == 1 and T >= TILES_FROM_STEPS
            and (width % TILE == 0 and H % width == 0 or width == H and 4 * H % TILE == 0))


def _packed(W_hh, width: int, forward: bool, B: int, tiles: bool = False) -> np.ndarray:
    """W_hh packed for the time loop's blocks (see ``_pack``), in recycled memory: in tiles
    (``_tiled_product``) where the loop uses them; otherwise at batch 1 the loop reads W_hh
    itself (see ``_gemv``), except in a forward pass in one block of at most MATVEC_UP_TO
    units, which reads W_hh^T (``_add_matvec``). A backward pass in one block reads W_hh
    itself at any batch size, its packed form being a copy, where W_hh starts on a cache line
    as torch's tensors do. Measured here, training at B=16, H=128 (where the batch split gives
    each thread one block; the copy took 20 us with warm caches, ~75 us in a training step):
    1-2% faster with W_hh on a cache line, 2.5-4% slower with W_hh 16, 32 or 48 bytes off
    one, whose rows of 512 bytes then span nine cache lines instead of eight."""
    H = W_hh.shape[1]
    if tiles:  # packed in the time loop, block by block (see _tiled_product)
        # on a cache line: add_tile's vector loads then never straddle two (measured, one
        # product at H=32: 40 ns aligned, 70 ns not)
        return _recycled.empty((W_hh.size,), W_hh.dtype, aligned=True)
    if B == 1 and forward and width == H <= MATVEC_UP_TO:
        # W_hh^T (one block's packing): numpy's transposing copy is the quickest at this size
        # (H=32: 1.2 us, _pack 3.3 us); on a cache line, as the tiles; zeros up to whole tiles
        G = W_hh.shape[0]
        WT = _aligned_empty((H, -(-G // TILE) * TILE), W_hh.dtype)
        WT[:, :G], WT[:, G:] = W_hh.T, 0
        return WT.reshape(-1)
    if B == 1 or not forward and width == H and W_hh.ctypes.data % _Recycler.LINE == 0:
        return W_hh.reshape(-1)
    Wp = _recycled.empty((W_hh.size,), W_hh.dtype)
    _pack(W_hh, width, forward, Wp)
    return Wp


def _contiguous(*arrays):
    return tuple(None if a is None else np.ascontiguousarray(a) for a in arrays)


def _transposed(W_ih, W_hh):
    """Contiguous W^T for the RNN's forward products: measured here, BLAS through Numba ran
    the per-step product about 4x faster with a C-contiguous operand than with W_hh.T."""
    out = tuple(np.empty(W.shape[::-1], dtype=W.dtype) for W in (W_ih, W_hh))
    _transpose_into(W_ih, out[0])
    _transpose_into(W_hh, out[1])
    return out


def _summed_bias(b_ih, b_hh, rows, dtype):
    return np.zeros(rows, dtype=dtype) if b_ih is None else np.ascontiguousarray(b_ih + b_hh)


def _plan(B: int, H: int, itemsize: int = 4, threaded: bool = True) -> tuple[int, int, bool]:
    """(threads, block width, batch_split) for one LSTM time loop (threaded=False: one thread).

    The time loop uses two threads from PARALLEL_FROM multiply-adds per step
    (PARALLEL_FROM_BATCH1 at batch 1): below that, the threads' meeting at every step costs
    more than they save. On machines with more cores, one thread per MACS_PER_THREAD.

    Batch rows never meet, so with BATCH_SPLIT_ROWS rows or more per thread, each thread runs
    its own rows through the whole loop and waits for nobody (batch_split; its blocks are
    those of its rows alone). Each thread then reads all of W_hh at every step, instead of its
    share: that pays while W_hh (4H x H) stays within BATCH_SPLIT_BYTES, the size of a core's
    cache. Otherwise the threads share each step's blocks, and are never more than the blocks.
    """
    start = PARALLEL_FROM_BATCH1 if B == 1 else PARALLEL_FROM
    macs = B * 4 * H * H
    threads = 1 if macs < start or not threaded else min(get_num_threads(),
                                                         max(2, macs // MACS_PER_THREAD))
    if threads > 1 and B >= BATCH_SPLIT_ROWS * threads and 4 * H * H * itemsize <= BATCH_SPLIT_BYTES:
        return threads, block_width(-(-B // threads), H, 1), True
    width = block_width(B, H, threads)
    return min(threads, -(-H // width)), width, False


def _counters(T: int, H: int, width: int) -> np.ndarray:
    """Zeros for a time loop's synchronisation (see ``_lstm_fwd_steps``): T counts of the blocks
    done at each step, then one flag per step and block; last, the forward pass's count of
    arguments found to hold a NaN or inf (see ``_lstm_fwd``)."""
    return np.zeros(T * (1 + -(-H // width)) + 1, dtype=np.int32)


def _product_threads(macs: int) -> int:
    """Threads for one large product of `macs` multiply-adds (one region per call)."""
    return get_num_threads() if macs >= PARALLEL_PRODUCT_FROM else 1


def _one_thread_twin(kernel):
    """``kernel`` compiled again without Numba's threads (its prange loops become plain loops),
    under a name of its own so that Numba's cache keeps the two apart.

    For float64, the precise path: compiling a threaded driver costs ~1.5 s more than this
    (each prange loop is a function of its own, compiled apart), a fifth of compiling every
    kernel in both dtypes; float64 is for checking results and gradients, at small sizes."""
    f = kernel.py_func
    twin = FunctionType(f.__code__, f.__globals__, f.__name__ + "_one_thread", f.__defaults__,
                        f.__closure__)
    twin.__qualname__, twin.__doc__ = f.__qualname__ + "_one_thread", f.__doc__
    return njit(**_JIT)(twin)


_lstm_fwd_one_thread, _lstm_bwd_one_thread = _one_thread_twin(_lstm_fwd), _one_thread_twin(_lstm_bwd)


def _drivers(dtype) -> tuple:
    """(forward driver, backward driver, whether they may use threads) for a dtype."""
    if dtype == np.float32:
        return _lstm_fwd, _lstm_bwd, True
    return _lstm_fwd_one_thread, _lstm_bwd_one_thread, False


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih=None, b_hh=None):
    """LSTM over a sequence; the contract of ``reference.lstm_forward``.

    x: (T, B, I), h0, c0: (B, H), W_ih: (4H, I), W_hh: (4H, H), b_ih, b_hh: (4H,) or None,
    all float32 or all float64. Returns y: (T, B, H), h_n, c_n: (B, H), saved.
    """
    T, B, I, H = _checks.sequence_args("lstm", x, h0, c0, W_ih, W_hh, b_ih, b_hh, finite=False)
    x, h0, c0, W_ih, W_hh = _contiguous(x, h0, c0, W_ih, W_hh)
    args = ("x h0 c0 W_ih W_hh b_ih b_hh", x, h0, c0, W_ih, W_hh, b_ih, b_hh)
    hs = _recycled.empty((T + 1, B, H), x.dtype)  # hs[t] is h_{t-1}
    cs = _recycled.empty((T + 1, B, H), x.dtype)
    gates = _recycled.empty((T, B, 4 * H), x.dtype)
    hs[0], cs[0] = h0, c0
    if T == 0 or B == 0:
        _check_finite(*args)
        gates[:] = 0
        hs[1:], cs[1:] = h0, c0
    else:
        forward, _, threaded = _drivers(x.dtype)
        threads, width, batch_split = _plan(B, H, x.itemsize, threaded)
        tiles = _tiled(T, B, H, width, x.dtype)
        Wp = _packed(W_hh, width, True, B, tiles)
        counters = _counters(T, H, width)
        with _one_blas_thread():
            forward(x, W_ih, gates, hs, cs, W_hh, Wp, tiles,
                    _summed_bias(b_ih, b_hh, 4 * H, x.dtype), width,
                    counters, _recycled.empty((max(B * 4 * H, TILE),), x.dtype),
                    _SCALARS[x.dtype], threads, batch_split,
                    _product_threads(T * B * I * 4 * H) if threaded else 1)
        # The kernel counts the NaNs and infs it meets; the test of the arguments names the
        # one that holds it (none, where only the sum b_ih + b_hh overflowed).
        if counters[-1]:
            _check_finite(*args)
    saved = {"x": x, "W_ih": W_ih, "W_hh": W_hh, "gates": gates, "hs": hs, "cs": cs,
             "bias": b_ih is not None}
    y = _recycled.empty((T, B, H), x.dtype)
    y[:] = hs[1:]  # a copy: y is the caller's to change, hs is kept for backward
    return y, hs[T].copy(), cs[T].copy(), saved


def lstm_backward(dy, dh_n, dc_n, saved):
    """Backpropagation through time for ``lstm_forward``; returns the grads dict
    ("x", "h0", "c0", "W_ih", "W_hh" and, with biases, "b_ih", "b_hh").

    Once per forward pass, as in torch: it computes the gradients in the memory of the saved
    gate values (saving a buffer of their size and a copy per step), so `saved` is used up.
    """
    if saved.get("gates") is None:
        raise RuntimeError("lstm_backward: this `saved` was used up by an earlier lstm_backward "
                           "(it overwrites the saved gate values); run lstm_forward again")
    x, hs, W_ih, W_hh = saved["x"], saved["hs"], saved["W_ih"], saved["W_hh"]
    T, B, I = x.shape
    H = hs.shape[2]
    dy = np.ascontiguousarray(_checks.grad_arg("dy", dy, (T, B, H), x.dtype, finite=False))
    dh, dc = _aligned_empty((B, H), x.dtype), _aligned_empty((B, H), x.dtype)
    # copies: the time loop updates them
    dh[:] = _checks.grad_arg("dh_n", dh_n, (B, H), x.dtype, finite=False)
    dc[:] = _checks.grad_arg("dc_n", dc_n, (B, H), x.dtype, finite=False)
    _check_finite("dy dh_n dc_n", dy, dh, dc)
    if T == 0 or B == 0:
        dx, dW_ih, dW_hh = np.zeros_like(x), np.zeros_like(W_ih), np.zeros_like(W_hh)
        db = np.zeros(4 * H, dtype=x.dtype)
    else:
        _, backward, threaded = _drivers(x.dtype)
        threads, width, batch_split = _plan(B, H, x.itemsize, threaded)
        Wp = _packed(W_hh, width, False, B)
        # dA @ W_hh per block in one product, or one per gate where one would exceed BLOCK_MNK
        rows = -(-B // threads) if batch_split else B
        K = 4 * H if rows * 4 * H * width <= BLOCK_MNK else H
        dx, dW_ih, dW_hh = (_recycled.empty(a.shape, x.dtype) for a in (x, W_ih, W_hh))
        db = np.zeros(4 * H, dtype=x.dtype)
        with _one_blas_thread():
            backward(dy, dh, dc, x, W_ih, W_hh, saved["gates"], hs, saved["cs"], Wp, width, K,
                     _counters(T, H, width), _SCALARS[x.dtype], threads, batch_split,
                     _product_threads(T * B * 4 * H * (I + H)) if threaded else 1,
                     dx, dW_ih, dW_hh, db)
    saved["gates"] = None
    grads = {"x": dx, "h0": dh, "c0": dc, "W_ih": dW_ih, "W_hh": dW_hh}
    if saved["bias"]:
        grads["b_ih"], grads["b_hh"] = db, db.copy()
    return grads


def rnn_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None):
    """tanh RNN over a sequence; the contract of ``reference.rnn_forward``.

    x: (T, B, I), h0: (B, H), W_ih: (H, I), W_hh: (H, H), b_ih, b_hh: (H,) or None.
    Returns y: (T, B, H), h_n: (B, H), saved.
    """
    T, B, _, H = _checks.sequence_args("rnn", x, h0, None, W_ih, W_hh, b_ih, b_hh, finite=False)
    x, h0, W_ih, W_hh = _contiguous(x, h0, W_ih, W_hh)
    _check_finite("x h0 W_ih W_hh b_ih b_hh", x, h0, W_ih, W_hh, b_ih, b_hh)
    bias = _summed_bias(b_ih, b_hh, H, x.dtype)
    if T == 0 or B == 0:
        hs = np.stack([h0] * (T + 1))
    else:
        with _blas_threads(B, H, 1):
            hs = np.empty((T + 1, B, H), dtype=x.dtype)
            hs[0] = h0
            _rnn_fwd(x, hs, *_transposed(W_ih, W_hh), bias, np.empty((T, B, H), x.dtype),
                     np.empty((B, H), x.dtype), _SCALARS[x.dtype])
    saved = {"x": x, "W_ih": W_ih, "W_hh": W_hh, "hs": hs, "bias": b_ih is not None}
    return hs[1:].copy(), hs[T].copy(), saved


def rnn_backward(dy, dh_n, saved):
    """Backpropagation through time for ``rnn_forward``; returns the grads dict."""
    x, hs = saved["x"], saved["hs"]
    T, B, I = x.shape
    H = hs.shape[2]
    dy, dh_n = _contiguous(
        _checks.grad_arg("dy", dy, (T, B, H), x.dtype, finite=False),
        _checks.grad_arg("dh_n", dh_n, (B, H), x.dtype, finite=False),
    )
    _check_finite("dy dh_n", dy, dh_n)
    if T == 0 or B == 0:
        dx, dh0 = np.zeros_like(x), dh_n.copy()
        dW_ih, dW_hh = np.zeros_like(saved["W_ih"]), np.zeros_like(saved["W_hh"])
        db = np.zeros(H, dtype=x.dtype)
    else:
        W_ih, W_hh = saved["W_ih"], saved["W_hh"]
        dh0, dx, dW_ih, dW_hh = dh_n.copy(), np.empty_like(x), np.empty_like(W_ih), np.empty_like(W_hh)
        db = np.zeros(H, dtype=x.dtype)
        with _blas_threads(B, H, 1):
            _rnn_bwd(dy, dh0, x, W_ih, W_hh, hs, np.empty((T, B, H), x.dtype), dx, dW_ih, dW_hh, db,
                     _SCALARS[x.dtype])
    grads = {"x": dx, "h0": dh0, "W_ih": dW_ih, "W_hh": dW_hh}
    if saved["bias"]:
        grads["b_ih"], grads["b_hh"] = db, db.copy()
    return grads


def compile_all() -> None:
    """Compile every kernel of this module (LSTM and RNN, forward and backward, float32 with
    its threaded paths and float64, batch 1 and larger), or load it from Numba's on-disk
    cache: seconds once per environment, so that no lesson waits for a compiler later.

    With an empty cache and a second core, a second Python process compiles half of the
    kernels into the cache (``_compile_second_half``) while this one compiles the LSTM's
    forward kernels; this one then loads that half from the cache. Measured here (2 cores):
    10-11 s instead of 17 s. Should that process fail, this one compiles the rest itself."""
    _compile_finiteness_check()
    helper = _start_second_half() if _second_half_uncompiled() else None
    try:
        _compile_first_half()
        if helper is not None:
            helper.wait(timeout=600)
    except subprocess.TimeoutExpired:
        pass  # what it has not compiled yet is compiled below
    finally:
        if helper is not None:
            helper.kill()  # after an error or an interrupt here; a no-op once it has exited
    _compile_second_half()  # here: from the cache the second process left, or compiled


_DTYPES = (np.float32, np.float64)


def _tiny_arrays(dtype, B: int) -> tuple:
    """x: (2, B, 3), h: (B, 4), W: (16, 3), U: (16, 4): an LSTM with H = 4 (or, with W[:4] and
    U[:4], an RNN), enough to compile every kernel; B = 2 also runs the paths for batch > 1."""
    return tuple(np.ones(s, dtype) for s in [(2, B, 3), (B, 4), (16, 3), (16, 4)])


def _compile_finiteness_check() -> None:
    """The one kernel that both halves call: compiled before they start, and its cache tells
    whether the cache is cold (see ``_second_half_uncompiled``)."""
    for dt in _DTYPES:
        _check_finite("a", np.ones(1, dt))


def _compile_first_half() -> None:
    """The LSTM's forward kernels (see ``_compile_second_half``)."""
    for dt in _DTYPES:
        x, h, W, U = _tiny_arrays(dt, 1)
        lstm_forward(x, h, h, W, U)


def _compile_second_half() -> None:
    """Compile what ``compile_all`` leaves to its second process: the LSTM's backward kernels
    and W_hh's packing (which its forward pass at batch > 1 calls too), and the RNN's kernels.
    Not one function that the first process compiles meanwhile (the LSTM's forward kernels):
    Numba keeps the compiled versions of a function in one index file, which two processes
    adding to it at once would corrupt. compile_all then runs it itself, from the cache."""
    for dt in _DTYPES:
        for B in (1, 2):
            x, h, W, U = _tiny_arrays(dt, B)
            T, H = x.shape[0], h.shape[1]
            # what lstm_forward saves, made up: running it here would compile its kernels
            saved = {"x": x, "W_ih": W, "W_hh": U, "gates": np.zeros((T, B, 4 * H), dt),
                     "hs": np.zeros((T + 1, B, H), dt), "cs": np.zeros((T + 1, B, H), dt),
                     "bias": False}
            lstm_backward(None, None, None, saved)
            rnn_backward(None, None, rnn_forward(x, h, W[:4], U[:4])[-1])
        _pack(U, 2, True, np.empty(U.size, dt))  # (the tiny LSTM's backward, in one block,
        # reads W_hh as it is)


def _second_half_uncompiled() -> bool:
    """Whether a second process would help: the backward kernels are not in memory yet, the
    cache did not have the finiteness check (which compile_all has just asked it for: the
    kernels of one file enter and leave the cache together), and there is a second core."""
    stats = getattr(_first_nonfinite, "stats", None)  # (no stats with NUMBA_DISABLE_JIT)
    return (stats is not None and bool(stats.cache_misses) and not _lstm_bwd.signatures
            and _usable_cores() > 1 and bool(sys.executable))


def _usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def _start_second_half() -> subprocess.Popen | None:
    """A Python process running ``_compile_second_half`` on this very copy of lstmkit (the
    Numba cache belongs to the source file), or None where none can start."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import sys; sys.path.insert(0, {root!r}); "
            "from lstmkit.kernels import cpu; cpu._compile_second_half()")
    try:
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None
