"""LSTM, RNN and ConvLSTM-gate kernels for NVIDIA GPUs, written with numba-cuda (float32).

Imported only when asked for (``import lstmkit`` never loads it). Without a GPU, run it on
Numba's CPU simulator: ``NUMBA_ENABLE_CUDASIM=1`` in the environment before Python starts.

How a CUDA kernel runs, in a few lines
--------------------------------------
* A kernel is one function executed by many *threads* at once. Threads are grouped in
  *blocks* (here TILE x TILE threads) and the blocks form a *grid* big enough to cover the
  output; each thread finds its share of the work from ``blockIdx`` and ``threadIdx``.
* The threads of one block share a small, fast *shared memory* and can wait for each other
  at ``cuda.syncthreads()``. Threads of different blocks cannot wait for each other, so work
  that needs all of step t finished (h_t, before step t+1 starts) is a new kernel launch.
* Global memory is fast when neighbouring threads (consecutive ``threadIdx.x``) touch
  neighbouring addresses: a "coalesced" access. So ``threadIdx.x`` always runs along the
  last, contiguous axis of whatever array a thread reads or writes.
* The grid is rounded up to whole blocks, so some threads fall outside the arrays: every
  load and store is guarded. A thread may skip work but must not ``return`` before a
  ``syncthreads()`` that the rest of its block will reach.

Three families, same results (all tested against ``lstmkit.reference``)
----------------------------------------------------------------------
* ``kernel="teaching"``: one thread per (batch row, hidden unit) computes all four gates of
  its unit with plain loops over x_t and h_{t-1}, then the cell update. One launch per step.
* ``kernel="tiled"``: the input projection of all T steps is one tiled matrix product; each
  step is one launch in which a block owns a tile of (batch rows x hidden units), multiplies
  h_{t-1} by the four gate slices of W_hh through shared memory, and finishes with the gate
  nonlinearities and the cell update. Backward is one fused launch per step plus a few
  batched products for the weight gradients after the time loop.
* ``kernel="persistent"``: the same input projection, then ONE launch for the whole time
  loop. A block owns a batch row, and batch rows never meet, so the barrier between steps
  is a ``syncthreads()`` inside the block instead of a new launch from Python, whose cost
  (tens of microseconds) dwarfs a small step's arithmetic. Backward likewise. Needs
  H <= PERSISTENT_MAX_H. ``kernel="auto"`` (the default) takes it up to H = 256, where it
  was measured fastest, and the tiled kernels above.

Public functions take NumPy float32 arrays (copied to the device, NumPy arrays returned) or
device arrays (anything with ``__cuda_array_interface__``, e.g. torch CUDA tensors; used in
place, numba device arrays returned). Shapes follow ``torch.nn.LSTM``; gate order i, f, g, o.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

if not hasattr(np, "row_stack"):
    # numba-cuda <= 0.30 registers an overload for np.row_stack, which NumPy 2.5 removed; without
    # the alias the first kernel compilation fails (seen on a GPU image with NumPy 2.5.2).
    np.row_stack = np.vstack

from numba import cuda, float32, uint64  # noqa: E402

try:
    from numba.cuda.core.errors import NumbaPerformanceWarning
except ImportError:  # numba-cuda < 0.21
    from numba.core.errors import NumbaPerformanceWarning

from lstmkit import _checks
from lstmkit.devices import _simulated, require_cuda

__all__ = [
    "TILE",
    "lstm_forward",
    "lstm_backward",
    "rnn_forward",
    "rnn_backward",
    "convlstm_gates_forward",
    "convlstm_gates_backward",
]

# A block is TILE x TILE threads. 16 x 16 = 256 threads suits a GPU. The simulator runs every
# thread as a Python thread, so there 8 x 8 keeps the tests quick; the arithmetic is the same.
TILE = 8 if _simulated() else 16
# Shared-memory tiles get one padding column: a column of a TILE x TILE tile would otherwise
# sit in a single memory bank, and the transposed stores below would queue up on it.
TILE_PAD = TILE + 1
THREADS = TILE * TILE  # threads per block of the one-dimensional kernels
KERNELS = ("tiled", "teaching", "persistent")
# The persistent kernels keep a step's gate pre-activations (or their gradients) and h_{t-1}
# in shared memory: G*H + H floats, 20 KiB for an LSTM at this hidden size.
PERSISTENT_MAX_H = 1024
PERSISTENT_ROWS = 4 * PERSISTENT_MAX_H  # (a shared array's size must be a constant, not an expression)
# kernel="auto" runs the persistent kernels up to this hidden size, the tiled ones above it.
# Measured on an H200 (LSTM, T=100, I=H, forward ms, tiled against persistent): B=1, H=128:
# 5.06 / 1.52; B=16, H=128: 4.94 / 1.77; B=64, H=256: 5.18 / 3.42; but B=64, H=512: 7.33 /
# 8.94, where each of the 64 blocks reads all 4 MiB of W_hh at every step. (On a second H200,
# whose host launched kernels half as fast, the persistent kernel won there: 12.41 / 10.56.)
PERSISTENT_AUTO_UP_TO = 256
# Threads per block of the persistent kernels: as many as a block may have. Each thread's
# loads of W_hh wait for memory at every step, and more threads keep more of them in flight:
# one thread per dot product (a gate row forward, a unit backward), and where that leaves
# threads idle, each dot product split into slices of at least SPLIT_MIN_TERMS terms (see
# _split_products). The simulator runs each thread as a Python thread; there, slices of one
# term let its tiny test sizes split too.
PERSISTENT_THREADS = 32 if _simulated() else 1024
SPLIT_MIN_TERMS = 1 if _simulated() else 16
# ...which a block may only have if each thread needs at most 64 registers: launch_bounds
# tells the compiler so (it spills to memory rather than fail the launch). The simulator has
# no registers and no such option.
_PERSISTENT_JIT = {} if _simulated() else {"launch_bounds": PERSISTENT_THREADS}

# float32 constants: a Python float literal would turn float32 arithmetic into float64.
ZERO = np.float32(0.0)
ONE = np.float32(1.0)

Array = Any  # a NumPy array, or a device array (numba DeviceNDArray, torch CUDA tensor, ...)


# ------------------------------------------------------------------------- device functions


@cuda.jit(device=True)
def _sigmoid(a):
    # exp only ever sees a non-positive number, so it cannot overflow (see reference.sigmoid).
    e = math.exp(-abs(a))
    if a >= ZERO:
        return ONE / (ONE + e)
    return e / (ONE + e)


@cuda.jit(device=True)
def _preactivation(row, t, b, x, W_ih, W_hh, b_ih, b_hh, hs):
    """Row ``row`` of W_ih x_t + W_hh h_{t-1} (+ both biases) for batch row b."""
    acc = ZERO
    if b_ih.shape[0] > 0:  # an empty bias array stands for "no bias"
        acc = b_ih[row] + b_hh[row]
    for k in range(x.shape[2]):
        acc += W_ih[row, k] * x[t, b, k]
    for k in range(hs.shape[2]):
        acc += W_hh[row, k] * hs[t, b, k]
    return acc


# ----------------------------------------------------------------- general-purpose kernels


@cuda.jit
def _matmul_kernel(A, B, bias1, bias2, C, trans_a, trans_b):
    """C = op(A) @ op(B) (+ bias1 + bias2 on every row), op = transpose if the flag is set.

    C: (M, N); op(A): (M, K); op(B): (K, N). Each block computes a TILE x TILE tile of C,
    walking along K one tile at a time: the block loads a tile of op(A) and one of op(B)
    into shared memory (each element read from global memory once per block, not once per
    thread), then every thread multiplies a row of one by a column of the other.
    """
    a_tile = cuda.shared.array((TILE, TILE_PAD), float32)  # a_tile[m, k] = op(A)[m0 + m, k0 + k]
    b_tile = cuda.shared.array((TILE, TILE_PAD), float32)  # b_tile[k, n] = op(B)[k0 + k, n0 + n]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    m0, n0 = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
    M, N = C.shape
    K = A.shape[0] if trans_a else A.shape[1]
    acc = ZERO
    for k0 in range(0, K, TILE):
        # Loads: tx runs along each array's contiguous last axis, whatever the transpose;
        # a transposed operand is then stored transposed into shared memory.
        if trans_a:  # A is (K, M)
            k, m = k0 + ty, m0 + tx
            a_tile[tx, ty] = A[k, m] if k < K and m < M else ZERO
        else:  # A is (M, K)
            m, k = m0 + ty, k0 + tx
            a_tile[ty, tx] = A[m, k] if m < M and k < K else ZERO
        if trans_b:  # B is (N, K)
            n, k = n0 + ty, k0 + tx
            b_tile[tx, ty] = B[n, k] if n < N and k < K else ZERO
        else:  # B is (K, N)
            k, n = k0 + ty, n0 + tx
            b_tile[ty, tx] = B[k, n] if k < K and n < N else ZERO
        cuda.syncthreads()  # the tiles are complete before anyone reads them
        for kk in range(TILE):
            acc += a_tile[ty, kk] * b_tile[kk, tx]
        cuda.syncthreads()  # everyone is done reading before the next tiles overwrite them
    m, n = m0 + ty, n0 + tx
    if m < M and n < N:
        if bias1.shape[0] > 0:
            acc += bias1[n] + bias2[n]
        C[m, n] = acc


@cuda.jit
def _colsum_kernel(A, out):
    """out[n] = sum over m of A[m, n]. One thread per column: at every row the threads of a
    block read neighbouring addresses, and no two threads write the same output."""
    n = cuda.grid(1)
    if n < out.shape[0]:
        acc = ZERO
        for m in range(A.shape[0]):
            acc += A[m, n]
        out[n] = acc


@cuda.jit
def _fill_kernel(a, value):
    """a[:] = value, for a one-dimensional view."""
    n = cuda.grid(1)
    if n < a.shape[0]:
        a[n] = value


# The copies below loop with a stride of the whole grid, so that a launch of a few blocks
# (STRIDE_BLOCKS) covers an array of any size: the simulator then runs a few Python threads,
# not one per element.


@cuda.jit
def _copy_kernel(src, dst):
    """dst[:] = src, both one-dimensional. One launch costs ~30 us from Python on an H100,
    where numba's ``dst.copy_to_device(src)`` took ~120 us (slices and checks around the copy)."""
    for n in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[n] = src[n]


@cuda.jit
def _start_kernel(h0, c0, hs, cs):
    """hs[0] = h0 and, where cs is not empty (an LSTM), cs[0] = c0."""
    B, H = h0.shape
    for n in range(cuda.grid(1), B * H, cuda.gridsize(1)):
        b, j = n // H, n % H
        hs[0, b, j] = h0[b, j]
        if cs.shape[0] > 0:
            cs[0, b, j] = c0[b, j]


@cuda.jit
def _finish_kernel(hs, cs, y, h_n, c_n):
    """y = hs[1:], h_n = hs[T] and, where c_n is not empty (an LSTM), c_n = cs[T]."""
    T1, B, H = hs.shape
    BH = B * H
    for n in range(cuda.grid(1), T1 * BH, cuda.gridsize(1)):
        t, b, j = n // BH, n % BH // H, n % H
        if t > 0:
            y[t - 1, b, j] = hs[t, b, j]
        if t == T1 - 1:
            h_n[b, j] = hs[t, b, j]
            if c_n.shape[0] > 0:
                c_n[b, j] = cs[t, b, j]


@cuda.jit
def _transpose_kernel(src, dst):
    """dst = src^T, through a TILE x TILE tile in shared memory: each block reads a tile of src
    along its rows and writes it to dst along dst's rows, so both are coalesced."""
    tile = cuda.shared.array((TILE, TILE_PAD), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    R, C = src.shape
    r0, c0 = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
    if r0 + ty < R and c0 + tx < C:
        tile[ty, tx] = src[r0 + ty, c0 + tx]
    cuda.syncthreads()
    if c0 + ty < C and r0 + tx < R:
        dst[c0 + ty, r0 + tx] = tile[tx, ty]


# ------------------------------------------------------------------------------ LSTM kernels
# Buffers shared by the LSTM kernels (allocated once per call, indexed by step t):
#   hs, cs: (T + 1, B, H)  hs[0] = h0 and hs[t + 1] = h_t, the same for the cell state c;
#   gates:  (T * B, 4H)    the activated gates i, f, g, o of step t at rows t*B .. t*B + B - 1;
#   xp:     (T * B, 4H)    the input projection x_t W_ih^T + b_ih + b_hh of every step.


@cuda.jit
def _lstm_step_teaching(t, x, W_ih, W_hh, b_ih, b_hh, hs, cs, gates):
    """LSTM step t, the plain way: one thread per (batch row b, hidden unit j).

    Each thread runs two dot products per gate straight from global memory. Simple, and
    slow: the threads of a block each read their own rows of W_ih and W_hh (little reuse,
    scattered reads), which is what the tiled kernel fixes.
    """
    j, b = cuda.grid(2)  # x along hidden units: neighbouring threads write neighbouring h
    B, H = hs.shape[1], hs.shape[2]
    if b >= B or j >= H:
        return  # outside the arrays (the grid is rounded up); no syncthreads in this kernel
    i = _sigmoid(_preactivation(0 * H + j, t, b, x, W_ih, W_hh, b_ih, b_hh, hs))
    f = _sigmoid(_preactivation(1 * H + j, t, b, x, W_ih, W_hh, b_ih, b_hh, hs))
    g = math.tanh(_preactivation(2 * H + j, t, b, x, W_ih, W_hh, b_ih, b_hh, hs))
    o = _sigmoid(_preactivation(3 * H + j, t, b, x, W_ih, W_hh, b_ih, b_hh, hs))
    c = f * cs[t, b, j] + i * g
    cs[t + 1, b, j] = c
    hs[t + 1, b, j] = o * math.tanh(c)
    r = t * B + b
    gates[r, 0 * H + j] = i
    gates[r, 1 * H + j] = f
    gates[r, 2 * H + j] = g
    gates[r, 3 * H + j] = o


@cuda.jit
def _lstm_step_tiled(t, xp, W_hh, hs, cs, gates):
    """LSTM step t: h_{t-1} W_hh^T as a tiled product, fused with the gates and cell update.

    A block owns TILE batch rows x TILE hidden units and accumulates all four gate columns
    of its units, so after the product each thread holds a_i, a_f, a_g, a_o for its
    (b, j) and can finish the cell update itself: no second kernel, no round trip of the
    (B, 4H) pre-activations through global memory.
    """
    h_tile = cuda.shared.array((TILE, TILE_PAD), float32)  # h_tile[b, k] = h_{t-1}[b0 + b, k0 + k]
    w_tile = cuda.shared.array((4, TILE, TILE_PAD), float32)  # w_tile[q, k, j] = W_hh[qH + j0 + j, k0 + k]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    B, H = hs.shape[1], hs.shape[2]
    j0, b0 = cuda.blockIdx.x * TILE, cuda.blockIdx.y * TILE
    b, j = b0 + ty, j0 + tx
    acc_i = ZERO
    acc_f = ZERO
    acc_g = ZERO
    acc_o = ZERO
    for k0 in range(0, H, TILE):
        k = k0 + tx
        h_tile[ty, tx] = hs[t, b, k] if b < B and k < H else ZERO
        # Read W_hh along its rows (tx runs along k, contiguous in memory) and store the
        # tile transposed, so the product below reads w_tile along j for consecutive tx.
        row = j0 + ty
        for q in range(4):
            w_tile[q, tx, ty] = W_hh[q * H + row, k] if row < H and k < H else ZERO
        cuda.syncthreads()
        for kk in range(TILE):
            h = h_tile[ty, kk]  # the same value for the whole warp: a broadcast, no conflict
            acc_i += h * w_tile[0, kk, tx]
            acc_f += h * w_tile[1, kk, tx]
            acc_g += h * w_tile[2, kk, tx]
            acc_o += h * w_tile[3, kk, tx]
        cuda.syncthreads()
    if b < B and j < H:
        r = t * B + b
        i = _sigmoid(xp[r, 0 * H + j] + acc_i)
        f = _sigmoid(xp[r, 1 * H + j] + acc_f)
        g = math.tanh(xp[r, 2 * H + j] + acc_g)
        o = _sigmoid(xp[r, 3 * H + j] + acc_o)
        c = f * cs[t, b, j] + i * g
        cs[t + 1, b, j] = c
        hs[t + 1, b, j] = o * math.tanh(c)
        gates[r, 0 * H + j] = i
        gates[r, 1 * H + j] = f
        gates[r, 2 * H + j] = g
        gates[r, 3 * H + j] = o


@cuda.jit
def _lstm_step_backward(t, dy, dh_in, dc_in, cs, gates, W_hh, dA, dh_out, dc_out):
    """Backward through LSTM step t, in one launch.

    dh_in, dc_in: (B, H), the gradients reaching h_t and c_t from step t + 1 (dh_n, dc_n for
    the last step). Writes dA[t*B + b] (the pre-activation gradients, kept for the weight
    gradients), dc_out = dL/dc_{t-1} and dh_out = dL/dh_{t-1} = dA_t W_hh (without dy[t-1]).

    A block owns TILE batch rows x TILE units k of dh_out and walks over the hidden units j
    in tiles: it computes the pointwise gate gradients of the tile (cheap, a few flops per
    element) into shared memory and multiplies them by the matching rows of W_hh. Blocks
    in the same block row recompute the same gate gradients, which costs far less than a
    second launch; only the first block column writes them to dA.
    """
    da_tile = cuda.shared.array((4, TILE, TILE_PAD), float32)  # da_tile[q, b, j]
    w_tile = cuda.shared.array((4, TILE, TILE_PAD), float32)  # w_tile[q, j, k] = W_hh[qH + j0 + j, k0 + k]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    B, H = dh_in.shape
    k0, b0 = cuda.blockIdx.x * TILE, cuda.blockIdx.y * TILE
    b, k = b0 + ty, k0 + tx
    acc = ZERO
    for j0 in range(0, H, TILE):
        j = j0 + tx
        d_i = ZERO
        d_f = ZERO
        d_g = ZERO
        d_o = ZERO
        if b < B and j < H:
            r = t * B + b
            i, f = gates[r, 0 * H + j], gates[r, 1 * H + j]
            g, o = gates[r, 2 * H + j], gates[r, 3 * H + j]
            tanh_c = math.tanh(cs[t + 1, b, j])
            dh = dy[t, b, j] + dh_in[b, j]
            dc = dc_in[b, j] + dh * o * (ONE - tanh_c * tanh_c)  # h = o tanh(c)
            d_i = dc * g * i * (ONE - i)  # c = f c_prev + i g, then through the sigmoids/tanh
            d_f = dc * cs[t, b, j] * f * (ONE - f)
            d_g = dc * i * (ONE - g * g)
            d_o = dh * tanh_c * o * (ONE - o)
            if cuda.blockIdx.x == 0:
                dA[r, 0 * H + j] = d_i
                dA[r, 1 * H + j] = d_f
                dA[r, 2 * H + j] = d_g
                dA[r, 3 * H + j] = d_o
                dc_out[b, j] = dc * f  # the constant error carousel: only the forget gate
        da_tile[0, ty, tx] = d_i
        da_tile[1, ty, tx] = d_f
        da_tile[2, ty, tx] = d_g
        da_tile[3, ty, tx] = d_o
        row = j0 + ty
        for q in range(4):  # W_hh read along its rows: k = k0 + tx is contiguous
            w_tile[q, ty, tx] = W_hh[q * H + row, k] if row < H and k < H else ZERO
        cuda.syncthreads()
        for jj in range(TILE):
            acc += (
                da_tile[0, ty, jj] * w_tile[0, jj, tx]
                + da_tile[1, ty, jj] * w_tile[1, jj, tx]
                + da_tile[2, ty, jj] * w_tile[2, jj, tx]
                + da_tile[3, ty, jj] * w_tile[3, jj, tx]
            )
        cuda.syncthreads()
    if b < B and k < H:
        dh_out[b, k] = acc


# ------------------------------------------------------------------------------- RNN kernels
# The same layout with one gate: hs (T + 1, B, H), xp (T * B, H).


@cuda.jit
def _rnn_step_teaching(t, x, W_ih, W_hh, b_ih, b_hh, hs):
    """RNN step t, one thread per (batch row b, hidden unit j): h = tanh(two dot products)."""
    j, b = cuda.grid(2)
    if b < hs.shape[1] and j < hs.shape[2]:
        hs[t + 1, b, j] = math.tanh(_preactivation(j, t, b, x, W_ih, W_hh, b_ih, b_hh, hs))


@cuda.jit
def _rnn_step_tiled(t, xp, W_hh, hs):
    """RNN step t: h_{t-1} W_hh^T as a tiled product, fused with the bias-included input
    projection and the tanh (see ``_lstm_step_tiled``, which does the same with 4 gates)."""
    h_tile = cuda.shared.array((TILE, TILE_PAD), float32)
    w_tile = cuda.shared.array((TILE, TILE_PAD), float32)  # w_tile[k, j] = W_hh[j0 + j, k0 + k]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    B, H = hs.shape[1], hs.shape[2]
    j0, b0 = cuda.blockIdx.x * TILE, cuda.blockIdx.y * TILE
    b, j = b0 + ty, j0 + tx
    acc = ZERO
    for k0 in range(0, H, TILE):
        k, row = k0 + tx, j0 + ty
        h_tile[ty, tx] = hs[t, b, k] if b < B and k < H else ZERO
        w_tile[tx, ty] = W_hh[row, k] if row < H and k < H else ZERO
        cuda.syncthreads()
        for kk in range(TILE):
            acc += h_tile[ty, kk] * w_tile[kk, tx]
        cuda.syncthreads()
    if b < B and j < H:
        hs[t + 1, b, j] = math.tanh(xp[t * B + b, j] + acc)


@cuda.jit
def _rnn_step_backward(t, dy, dh_in, hs, W_hh, dA, dh_out):
    """Backward through RNN step t: dA_t = (dy[t] + dh_in) (1 - h_t^2), dh_out = dA_t W_hh.
    One launch, organised like ``_lstm_step_backward``."""
    da_tile = cuda.shared.array((TILE, TILE_PAD), float32)  # da_tile[b, j]
    w_tile = cuda.shared.array((TILE, TILE_PAD), float32)  # w_tile[j, k] = W_hh[j0 + j, k0 + k]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    B, H = dh_in.shape
    k0, b0 = cuda.blockIdx.x * TILE, cuda.blockIdx.y * TILE
    b, k = b0 + ty, k0 + tx
    acc = ZERO
    for j0 in range(0, H, TILE):
        j, row = j0 + tx, j0 + ty
        da = ZERO
        if b < B and j < H:
            h = hs[t + 1, b, j]
            da = (dy[t, b, j] + dh_in[b, j]) * (ONE - h * h)  # tanh' = 1 - tanh^2
            if cuda.blockIdx.x == 0:
                dA[t * B + b, j] = da
        da_tile[ty, tx] = da
        w_tile[ty, tx] = W_hh[row, k] if row < H and k < H else ZERO
        cuda.syncthreads()
        for jj in range(TILE):
            acc += da_tile[ty, jj] * w_tile[jj, tx]
        cuda.syncthreads()
    if b < B and k < H:
        dh_out[b, k] = acc


# ------------------------------------------------------------- persistent kernels (LSTM, RNN)
# The whole time loop in one launch. Block b runs batch row b through every step. Batch rows
# never meet, so a step needs no other block's h: the barrier between steps is a
# syncthreads() inside the block, not a new launch from Python. G = 4 (LSTM) or 1 (RNN).
#
# Unsigned offsets: a signed index makes Numba check for negative (wrap-around) indices at every
# load, several 64-bit integer instructions per element, more than the multiply-add itself.
_U1, _U2, _U3, _U4 = uint64(1), uint64(2), uint64(3), uint64(4)


@cuda.jit(device=True)
def _column_dot(v, M, col, k0, k1, stride):
    """v[k0] M[col + k0 stride] + ... + v[k1-1] M[col + (k1-1) stride]: part of v . column
    `col` of a row-major matrix given flat, with rows of `stride` elements.

    Four partial sums: their loads of M are independent, so a thread has four (unrolled:
    sixteen) reads of global memory in flight, instead of waiting for each one in turn."""
    s, i = uint64(stride), uint64(col) + uint64(k0) * uint64(stride)
    a0 = ZERO
    a1 = ZERO
    a2 = ZERO
    a3 = ZERO
    for k in range(k0, k1 - 3, 4):
        ku = uint64(k)
        a0 += v[ku] * M[i]
        a1 += v[ku + _U1] * M[i + s]
        a2 += v[ku + _U2] * M[i + _U2 * s]
        a3 += v[ku + _U3] * M[i + _U3 * s]
        i += _U4 * s
    for k in range(k1 - (k1 - k0) % 4, k1):
        a0 += v[uint64(k)] * M[i]
        i += s
    return (a0 + a1) + (a2 + a3)


@cuda.jit(device=True)
def _split_products(v, M, rows, n, splits, part):
    """part[s * rows + r] = slice s of v . column r of M (M flat, (n, rows)), for every row r
    and each of `splits` slices of the n terms. The block's threads share the (s, r) pairs,
    neighbouring threads on neighbouring r, so that a warp reads neighbouring addresses of M."""
    for idx in range(cuda.threadIdx.x, rows * splits, cuda.blockDim.x):
        s, r = idx // rows, idx % rows
        part[idx] = _column_dot(v, M, r, n * s // splits, n * (s + 1) // splits, rows)


@cuda.jit(device=True)
def _parts_sum(part, r, rows, splits):
    """Row r's dot product: the sum of its `splits` slices in ``part`` (see _split_products)."""
    acc = part[r]
    for s in range(1, splits):
        acc += part[s * rows + r]
    return acc


@cuda.jit(**_PERSISTENT_JIT)
def _seq_forward_persistent(xp, W_hhT, hs, cs, gates, splits):
    """All T steps of one batch row per block. xp: (T*B, G*H), the input projections;
    W_hhT: (H * G*H,), W_hh^T flat, so that threads with neighbouring gate rows read
    neighbouring addresses; hs, cs, gates as for ``_lstm_step_tiled`` (an RNN passes cs and
    gates empty); splits: slices per dot product (see ``_split_products``).

    Each step has two phases. (1) The threads compute h_{t-1} . W_hh[row] for every gate row,
    in slices, into shared memory. (2) After a syncthreads(), thread j < H finishes unit j:
    its pre-activations (xp plus the slices), gates, c_t and h_t, which goes into shared
    memory for the next step.
    """
    part = cuda.shared.array(PERSISTENT_ROWS, float32)
    h_prev = cuda.shared.array(PERSISTENT_MAX_H, float32)
    b, tid, nt = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    T1, B, H = hs.shape
    GH = xp.shape[1]
    for k in range(tid, H, nt):
        h_prev[k] = hs[0, b, k]
    cuda.syncthreads()
    for t in range(T1 - 1):
        r = t * B + b
        _split_products(h_prev, W_hhT, GH, H, splits, part)
        cuda.syncthreads()  # every slice is in; everyone is done reading h_prev
        for j in range(tid, H, nt):
            if GH == 4 * H:
                i = _sigmoid(xp[r, j] + _parts_sum(part, j, GH, splits))
                f = _sigmoid(xp[r, H + j] + _parts_sum(part, H + j, GH, splits))
                g = math.tanh(xp[r, 2 * H + j] + _parts_sum(part, 2 * H + j, GH, splits))
                o = _sigmoid(xp[r, 3 * H + j] + _parts_sum(part, 3 * H + j, GH, splits))
                c = f * cs[t, b, j] + i * g
                cs[t + 1, b, j] = c
                h = o * math.tanh(c)
                gates[r, j] = i
                gates[r, H + j] = f
                gates[r, 2 * H + j] = g
                gates[r, 3 * H + j] = o
            else:
                h = math.tanh(xp[r, j] + _parts_sum(part, j, GH, splits))
            hs[t + 1, b, j] = h
            h_prev[j] = h
        cuda.syncthreads()  # h_t is complete before the next step reads it


@cuda.jit(**_PERSISTENT_JIT)
def _seq_backward_persistent(dy, dh, dc, hs, cs, gates, W_hh, dA, splits):
    """Backward through all T steps of one batch row per block (see
    ``_seq_forward_persistent``). dh, dc: (B, H), on entry the gradients reaching h_{T-1} and
    c_{T-1} (dh_n, dc_n), on exit those of h0 and c0 (an RNN passes dc and cs, gates empty);
    W_hh: (G*H * H,), flat; dA: (T*B, G*H), filled with the pre-activation gradients.

    Each step: (1) thread j computes the gradients of unit j's pre-activations (as in
    ``_lstm_step_backward``) into dA and shared memory; (2) after a syncthreads(), the threads
    compute dh_{t-1}[k] = dA_t . W_hh[:, k] in slices, reading W_hh along its rows
    (coalesced); (3) after another, thread k adds up unit k's slices. Phases 1 and 3 give a
    thread the same units, so dh and dc need no barrier of their own.
    """
    da = cuda.shared.array(PERSISTENT_ROWS, float32)
    part = cuda.shared.array(PERSISTENT_ROWS, float32)
    b, tid, nt = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    T1, B, H = hs.shape
    GH = dA.shape[1]
    for t in range(T1 - 2, -1, -1):
        r = t * B + b
        for j in range(tid, H, nt):
            d_h = dy[t, b, j] + dh[b, j]
            if GH == 4 * H:
                i, f = gates[r, j], gates[r, H + j]
                g, o = gates[r, 2 * H + j], gates[r, 3 * H + j]
                tanh_c = math.tanh(cs[t + 1, b, j])
                d_c = dc[b, j] + d_h * o * (ONE - tanh_c * tanh_c)
                da[j] = d_c * g * i * (ONE - i)
                da[H + j] = d_c * cs[t, b, j] * f * (ONE - f)
                da[2 * H + j] = d_c * i * (ONE - g * g)
                da[3 * H + j] = d_h * tanh_c * o * (ONE - o)
                dc[b, j] = d_c * f
                for q in range(4):
                    dA[r, q * H + j] = da[q * H + j]
            else:
                h = hs[t + 1, b, j]
                da[j] = d_h * (ONE - h * h)
                dA[r, j] = da[j]
        cuda.syncthreads()  # all of dA_t is in shared memory
        _split_products(da, W_hh, H, GH, splits, part)
        cuda.syncthreads()  # every slice is in; everyone is done reading da
        for k in range(tid, H, nt):
            dh[b, k] = _parts_sum(part, k, H, splits)


# -------------------------------------------------------------------------- ConvLSTM kernels
# Frames are flattened: a (B, 4C, Hh, Ww) becomes (B, 4, N) with N = C * Hh * Ww positions,
# c (B, N), w_peep (3, N). One thread per position n loops over the batch; n runs along the
# contiguous axis, so a warp reads 32 neighbouring floats of every array.


@cuda.jit
def _convlstm_gates_kernel(a, c_prev, w, peep, h, c_new, gates):
    """Pointwise ConvLSTM gates (see reference.convlstm_step_forward) for one position n."""
    n = cuda.grid(1)
    if n >= c_prev.shape[1]:
        return
    for b in range(c_prev.shape[0]):
        cp = c_prev[b, n]
        a_i, a_f, a_o = a[b, 0, n], a[b, 1, n], a[b, 3, n]
        if peep:  # peepholes: the gates also look at the cell state
            a_i += w[0, n] * cp
            a_f += w[1, n] * cp
        i, f, g = _sigmoid(a_i), _sigmoid(a_f), math.tanh(a[b, 2, n])
        c = f * cp + i * g
        if peep:
            a_o += w[2, n] * c  # the output gate sees the new cell state
        o = _sigmoid(a_o)
        c_new[b, n] = c
        h[b, n] = o * math.tanh(c)
        gates[b, 0, n] = i
        gates[b, 1, n] = f
        gates[b, 2, n] = g
        gates[b, 3, n] = o


@cuda.jit
def _convlstm_gates_backward_kernel(dh, dc, gates, c_prev, c_new, w, peep, da, dc_prev, dw):
    """Backward of ``_convlstm_gates_kernel`` for one position n.

    A peephole weight is shared by the whole batch, so its gradient is a sum over b. One
    thread owns position n for every b and sums in a register: no two threads write the
    same dw element, so no atomics are needed.
    """
    n = cuda.grid(1)
    if n >= c_prev.shape[1]:
        return
    dw_i = ZERO
    dw_f = ZERO
    dw_o = ZERO
    for b in range(c_prev.shape[0]):
        i, f, g, o = gates[b, 0, n], gates[b, 1, n], gates[b, 2, n], gates[b, 3, n]
        cp, c = c_prev[b, n], c_new[b, n]
        tanh_c = math.tanh(c)
        d_o = dh[b, n] * tanh_c * o * (ONE - o)
        dcell = dc[b, n] + dh[b, n] * o * (ONE - tanh_c * tanh_c)
        if peep:
            dcell += d_o * w[2, n]  # c also reaches the loss through the output gate
        d_i = dcell * g * i * (ONE - i)
        d_f = dcell * cp * f * (ONE - f)
        d_g = dcell * i * (ONE - g * g)
        dcp = dcell * f
        if peep:
            dcp += d_i * w[0, n] + d_f * w[1, n]
            dw_i += d_i * cp
            dw_f += d_f * cp
            dw_o += d_o * c
        da[b, 0, n] = d_i
        da[b, 1, n] = d_f
        da[b, 2, n] = d_g
        da[b, 3, n] = d_o
        dc_prev[b, n] = dcp
    if peep:
        dw[0, n] = dw_i
        dw[1, n] = dw_f
        dw[2, n] = dw_o


# ------------------------------------------------------------------------ host-side helpers


def _blocks(n: int) -> int:
    return (n + TILE - 1) // TILE


def _launcher(kernel, grid: tuple, block: tuple):
    """``kernel[grid, block]``, or a no-op when the grid is empty (B = 0, H = 0, ...).

    Small problems make small grids; numba's low-occupancy hint about that is silenced
    here, because the grid is the shape of the problem, not a mistake.
    """
    if 0 in grid:
        return lambda *args: None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        return kernel[grid, block]


def _grid2(cols: int, rows: int):
    """Launch configuration for TILE x TILE blocks covering a (rows, cols) output."""
    return (_blocks(cols), _blocks(rows)), (TILE, TILE)


def _grid1(n: int):
    return ((n + THREADS - 1) // THREADS,), (THREADS,)


# Blocks and threads of the grid-stride kernels (_copy_kernel, ...): enough to fill a GPU; on
# the simulator, one block of a few threads (each one a Python thread to start).
STRIDE_BLOCKS = 1 if _simulated() else 1024
STRIDE_THREADS = 4 if _simulated() else THREADS


def _stride_grid(n: int):
    return (min(STRIDE_BLOCKS, (n + STRIDE_THREADS - 1) // STRIDE_THREADS),), (STRIDE_THREADS,)


def _empty(*shape: int):
    return cuda.device_array(shape, dtype=np.float32)


def _zeros(*shape: int):
    a = _empty(*shape)
    _launcher(_fill_kernel, *_grid1(a.size))(a.reshape(a.size), ZERO)
    return a


@functools.cache
def _no_array(ndim: int = 1):
    """A zero-size array with `ndim` dimensions, which the kernels read as 'no bias', 'no
    peepholes', 'no cell state' (an RNN), ... Never written to, so one serves every call."""
    return _empty(*(0,) * ndim)


def _copy(src, shape: tuple):
    """A fresh (shape) copy of the contiguous device array ``src``, for outputs that must not
    alias ``saved``'s buffers."""
    dst = _empty(*shape)
    _launcher(_copy_kernel, *_stride_grid(dst.size))(src.reshape(dst.size), dst.reshape(dst.size))
    return dst


def _matmul(A, B, C, trans_a: bool = False, trans_b: bool = False, bias=None) -> None:
    """C = op(A) @ op(B) (+ bias[0] + bias[1] on every row), on the device."""
    M, N = C.shape
    b1, b2 = bias if bias is not None else (_no_array(), _no_array())
    _launcher(_matmul_kernel, *_grid2(N, M))(A, B, b1, b2, C, trans_a, trans_b)


def _colsum(A):
    out = _empty(A.shape[1])
    _launcher(_colsum_kernel, *_grid1(A.shape[1]))(A, out)
    return out


def _is_device_array(a) -> bool:
    # numba's own device arrays (and the simulator's) carry __cuda_ndarray__; other
    # libraries' (torch, CuPy) expose __cuda_array_interface__.
    return bool(getattr(a, "__cuda_ndarray__", False)) or hasattr(a, "__cuda_array_interface__")


def _arg(name: str, a, ndim: int, layout: str):
    """Validate one input array and return it on the device (no copy if it is already there)."""
    if _is_device_array(a):
        d = a if getattr(a, "__cuda_ndarray__", False) else cuda.as_cuda_array(a)
        dtype = d.dtype
    else:
        d, dtype = None, getattr(a, "dtype", None)
    if dtype is not None and dtype != np.float32:
        raise TypeError(
            f"{name} has dtype {dtype}, but the CUDA kernels compute in float32: "
            f"convert it first ({name}.astype(np.float32), or .float() for a torch tensor)"
        )
    if d is None:  # a NumPy array: the shared checks (type, dimensions, finite values)
        _checks.array(name, a, ndim, layout)
        return cuda.to_device(np.ascontiguousarray(a))
    if d.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dimensions), got shape {d.shape}")
    if not d.is_c_contiguous():
        raise ValueError(f"{name} must be C-contiguous on the device (torch: call .contiguous())")
    return d


def _grad(name: str, g, shape: tuple, layout: str):
    """An incoming gradient on the device; None means zeros."""
    if g is None:
        return _zeros(*shape)
    d = _arg(name, g, len(shape), layout)
    _checks.shape(name, d, layout, shape)
    return d


def _sequence_inputs(kind: str, x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    """Validate a sequence call (the rules of ``_checks.sequence_args``) and move it to the
    device. Returns (on_device, dict of device arrays, (T, B, I, H))."""
    G = _checks.GATES[kind]
    gl = "4H" if G == 4 else "H"
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be arrays or both be None")
    d = {"x": _arg("x", x, 3, "(T, B, I)"), "W_hh": _arg("W_hh", W_hh, 2, f"({gl}, H)")}
    T, B, I = d["x"].shape
    H = d["W_hh"].shape[1]
    if H < 1:
        raise ValueError(f"W_hh must have shape ({gl}, H) with H >= 1, got {d['W_hh'].shape}")
    _checks.shape("W_hh", d["W_hh"], f"({gl}, H)", (G * H, H))
    d["W_ih"] = _arg("W_ih", W_ih, 2, f"({gl}, I)")
    if I < 1:
        raise ValueError(f"x must have shape (T, B, I) with I >= 1, got {d['x'].shape}")
    _checks.shape("W_ih", d["W_ih"], f"({gl}, I)", (G * H, I))
    for name, s in (("h0", h0), ("c0", c0)) if kind == "lstm" else (("h0", h0),):
        d[name] = _arg(name, s, 2, "(B, H)")
        _checks.shape(name, d[name], "(B, H)", (B, H))
    for name, bias in (("b_ih", b_ih), ("b_hh", b_hh)):
        if bias is not None:
            d[name] = _arg(name, bias, 1, f"({gl},)")
            _checks.shape(name, d[name], f"({gl},)", (G * H,))
    return _is_device_array(x), d, (T, B, I, H)


def _out(d, on_device: bool):
    return d if on_device else d.copy_to_host()


def _pick_kernel(kernel: str, H: int) -> str:
    """The kernel to run: "auto" is "persistent" up to PERSISTENT_AUTO_UP_TO units, else "tiled"."""
    if kernel == "auto":
        return "persistent" if H <= PERSISTENT_AUTO_UP_TO else "tiled"
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be 'auto' or one of {KERNELS}, got {kernel!r}")
    if kernel == "persistent" and H > PERSISTENT_MAX_H:
        raise ValueError(f"kernel='persistent' keeps a step's gates in shared memory and needs "
                         f"H <= {PERSISTENT_MAX_H}, got H = {H}: use kernel='tiled'")
    return kernel


def _projection(d: dict, T: int, B: int, I: int, GH: int, has_bias: bool):
    """x_t W_ih^T + b_ih + b_hh for every step at once: (T*B, G*H), one tiled product."""
    xp = _empty(T * B, GH)
    _matmul(d["x"].reshape(T * B, I), d["W_ih"], xp, trans_b=True,
            bias=(d["b_ih"], d["b_hh"]) if has_bias else None)
    return xp


def _persistent(kernel, B: int, rows: int, n: int):
    """A persistent kernel's launch, for dot products of n terms into `rows` outputs: one block
    per batch row, a thread per slice of a dot product (up to PERSISTENT_THREADS), rounded up
    to whole warps of 32. Returns (launcher, slices per dot product)."""
    splits = max(1, min(PERSISTENT_THREADS // rows, n // SPLIT_MIN_TERMS))
    threads = min(PERSISTENT_THREADS, -(-rows * splits // 32) * 32)
    return _launcher(kernel, (B,), (threads,)), splits


def _transposed(W):
    """W^T as a new (C, R) device array."""
    R, C = W.shape
    WT = _empty(C, R)
    _launcher(_transpose_kernel, *_grid2(C, R))(W, WT)
    return WT


@dataclass
class _Saved:
    """What backward needs, kept on the device. x: (T*B, I), hs/cs: (T+1, B, H) (h0 and the
    outputs), gates: (T*B, 4H) activated gates (LSTM only).

    Device inputs are kept by reference, not copied (like torch's saved tensors): writing
    into x or the weights between forward and backward changes the gradients.
    """

    kind: str
    on_device: bool
    has_bias: bool
    shape: tuple  # (T, B, I, H)
    x: Any
    W_ih: Any
    W_hh: Any
    hs: Any
    cs: Any = None
    gates: Any = None
    kernel: str = "tiled"  # the persistent forward has a persistent backward


# Device arrays are costly objects on the host: measured on an H100, ~28 us to allocate one,
# ~23 us for a slice, ~20-40 us per launch. So the histories are filled and the outputs copied
# out of them by one launch each, never through slices (hs[0], hs[1:], hs[T], ...).


def _histories(T: int, B: int, H: int, h0, c0=None):
    """hs and (for an LSTM, else an empty array) cs: (T + 1, B, H), with h0 and c0 in row 0."""
    hs = _empty(T + 1, B, H)
    cs = _no_array(3) if c0 is None else _empty(T + 1, B, H)
    _launcher(_start_kernel, *_stride_grid(B * H))(h0, _no_array(2) if c0 is None else c0, hs, cs)
    return hs, cs


def _outputs(hs, cs) -> tuple:
    """New arrays y = hs[1:], h_n = hs[T] and, if cs is not empty, c_n = cs[T]: outputs must
    not alias the histories that backward reads."""
    T1, B, H = hs.shape
    lstm = cs.shape[0] > 0
    y, h_n, c_n = _empty(T1 - 1, B, H), _empty(B, H), _empty(B, H) if lstm else _no_array(2)
    _launcher(_finish_kernel, *_stride_grid(T1 * B * H))(hs, cs, y, h_n, c_n)
    return (y, h_n, c_n) if lstm else (y, h_n)


def _state_grad(name: str, g, B: int, H: int):
    """An incoming gradient of h_n or c_n in a (B, H) buffer of its own, which the backward
    time loop overwrites: zeros for None, else a copy."""
    if g is None:
        return _zeros(B, H)
    return _copy(_grad(name, g, (B, H), "(B, H)"), (B, H))


# ------------------------------------------------------------------------------- public API


def lstm_forward(
    x: Array,
    h0: Array,
    c0: Array,
    W_ih: Array,
    W_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    *,
    kernel: str = "auto",
) -> tuple[Array, Array, Array, _Saved]:
    """Run an LSTM over a sequence on the GPU.

    x: (T, B, I) float32, h0, c0: (B, H), W_ih: (4H, I), W_hh: (4H, H), b_ih, b_hh: (4H,) or
    None (both or neither). kernel: "auto" (persistent up to H = 256, else tiled), "persistent"
    (one launch for all steps), "tiled" (one launch per step) or "teaching" (one thread per unit).
    Returns y: (T, B, H), h_n, c_n: (B, H) and ``saved`` for ``lstm_backward``; NumPy
    arrays for NumPy input, numba device arrays for device input. T = 0 gives an empty y
    and the initial states back.
    """
    require_cuda()
    on_device, d, (T, B, I, H) = _sequence_inputs("lstm", x, h0, c0, W_ih, W_hh, b_ih, b_hh)
    kernel = _pick_kernel(kernel, H)
    has_bias = "b_ih" in d
    hs, cs = _histories(T, B, H, d["h0"], d["c0"])
    gates = _empty(T * B, 4 * H)
    grid, block = _grid2(H, B)
    if kernel == "tiled":
        xp = _projection(d, T, B, I, 4 * H, has_bias)
        step = _launcher(_lstm_step_tiled, grid, block)
        for t in range(T):  # a launch boundary is the only barrier across blocks
            step(t, xp, d["W_hh"], hs, cs, gates)
    elif kernel == "persistent":  # one launch for all steps
        xp = _projection(d, T, B, I, 4 * H, has_bias)
        WT = _transposed(d["W_hh"]).reshape(4 * H * H)
        launch, splits = _persistent(_seq_forward_persistent, B, 4 * H, H)
        launch(xp, WT, hs, cs, gates, splits)
    else:
        bi, bh = (d["b_ih"], d["b_hh"]) if has_bias else (_no_array(), _no_array())
        step = _launcher(_lstm_step_teaching, grid, block)
        for t in range(T):
            step(t, d["x"], d["W_ih"], d["W_hh"], bi, bh, hs, cs, gates)
    saved = _Saved("lstm", on_device, has_bias, (T, B, I, H), d["x"].reshape(T * B, I),
                   d["W_ih"], d["W_hh"], hs, cs, gates, kernel)
    y, h_n, c_n = _outputs(hs, cs)
    return _out(y, on_device), _out(h_n, on_device), _out(c_n, on_device), saved


def lstm_backward(
    dy: Array | None, dh_n: Array | None, dc_n: Array | None, saved: _Saved
) -> dict[str, Array]:
    """Backpropagation through time for ``lstm_forward`` (persistent after a persistent forward,
    else one launch per step).

    dy: (T, B, H) or None, dh_n, dc_n: (B, H) or None (None means zero gradient).
    Returns a dict: "x" (T, B, I), "h0", "c0" (B, H), "W_ih" (4H, I), "W_hh" (4H, H) and,
    with biases, "b_ih", "b_hh" (4H,) (equal: both biases get the summed gate gradient).
    """
    require_cuda()
    T, B, I, H = saved.shape
    dy = _grad("dy", dy, (T, B, H), "(T, B, H)")
    dh, dc = _state_grad("dh_n", dh_n, B, H), _state_grad("dc_n", dc_n, B, H)
    dA = _empty(T * B, 4 * H)
    if saved.kernel == "persistent":  # one launch; dh, dc turn into the gradients of h0, c0
        launch, splits = _persistent(_seq_backward_persistent, B, H, 4 * H)
        launch(dy, dh, dc, saved.hs, saved.cs, saved.gates, saved.W_hh.reshape(4 * H * H), dA,
               splits)
    else:
        dh_next, dc_next = _empty(B, H), _empty(B, H)
        step = _launcher(_lstm_step_backward, *_grid2(H, B))
        for t in reversed(range(T)):
            step(t, dy, dh, dc, saved.cs, saved.gates, saved.W_hh, dA, dh_next, dc_next)
            dh, dh_next, dc, dc_next = dh_next, dh, dc_next, dc  # this step's output feeds the next
    grads = {"h0": dh, "c0": dc, **_weight_grads(dA, saved)}
    return {name: _out(g, saved.on_device) for name, g in grads.items()}


def rnn_forward(
    x: Array,
    h0: Array,
    W_ih: Array,
    W_hh: Array,
    b_ih: Array | None = None,
    b_hh: Array | None = None,
    *,
    kernel: str = "auto",
) -> tuple[Array, Array, _Saved]:
    """Run a tanh RNN over a sequence on the GPU: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

    x: (T, B, I) float32, h0: (B, H), W_ih: (H, I), W_hh: (H, H), b_ih, b_hh: (H,) or None;
    kernel as for ``lstm_forward``. Returns y: (T, B, H), h_n: (B, H) and ``saved`` for
    ``rnn_backward``.
    """
    require_cuda()
    on_device, d, (T, B, I, H) = _sequence_inputs("rnn", x, h0, None, W_ih, W_hh, b_ih, b_hh)
    kernel = _pick_kernel(kernel, H)
    has_bias = "b_ih" in d
    hs, _ = _histories(T, B, H, d["h0"])
    grid, block = _grid2(H, B)
    if kernel == "tiled":
        xp = _projection(d, T, B, I, H, has_bias)
        step = _launcher(_rnn_step_tiled, grid, block)
        for t in range(T):
            step(t, xp, d["W_hh"], hs)
    elif kernel == "persistent":  # no cell state and no gates to keep: empty arrays
        xp = _projection(d, T, B, I, H, has_bias)
        WT = _transposed(d["W_hh"]).reshape(H * H)
        launch, splits = _persistent(_seq_forward_persistent, B, H, H)
        launch(xp, WT, hs, _no_array(3), _no_array(2), splits)
    else:
        bi, bh = (d["b_ih"], d["b_hh"]) if has_bias else (_no_array(), _no_array())
        step = _launcher(_rnn_step_teaching, grid, block)
        for t in range(T):
            step(t, d["x"], d["W_ih"], d["W_hh"], bi, bh, hs)
    saved = _Saved("rnn", on_device, has_bias, (T, B, I, H), d["x"].reshape(T * B, I),
                   d["W_ih"], d["W_hh"], hs, kernel=kernel)
    y, h_n = _outputs(hs, _no_array(3))
    return _out(y, on_device), _out(h_n, on_device), saved


def rnn_backward(dy: Array | None, dh_n: Array | None, saved: _Saved) -> dict[str, Array]:
    """Backpropagation through time for ``rnn_forward``.

    dy: (T, B, H) or None, dh_n: (B, H) or None. Returns a dict: "x" (T, B, I), "h0" (B, H),
    "W_ih" (H, I), "W_hh" (H, H) and, with biases, "b_ih", "b_hh" (H,).
    """
    require_cuda()
    T, B, I, H = saved.shape
    dy = _grad("dy", dy, (T, B, H), "(T, B, H)")
    dh = _state_grad("dh_n", dh_n, B, H)
    dA = _empty(T * B, H)
    if saved.kernel == "persistent":
        launch, splits = _persistent(_seq_backward_persistent, B, H, H)
        launch(dy, dh, _no_array(2), saved.hs, _no_array(3), _no_array(2),
               saved.W_hh.reshape(H * H), dA, splits)
    else:
        dh_next = _empty(B, H)
        step = _launcher(_rnn_step_backward, *_grid2(H, B))
        for t in reversed(range(T)):
            step(t, dy, dh, saved.hs, saved.W_hh, dA, dh_next)
            dh, dh_next = dh_next, dh
    grads = {"h0": dh, **_weight_grads(dA, saved)}
    return {name: _out(g, saved.on_device) for name, g in grads.items()}


def _weight_grads(dA, saved: _Saved) -> dict:
    """Everything that sums over time, computed once after the time loop.

    dA: (T*B, G*H), the pre-activation gradients of all steps. Every gate row is an affine
    map of [x_t, h_{t-1}], so dx = dA W_ih, dW_ih = dA^T X, dW_hh = dA^T H_prev and
    db = column sums of dA: four batched kernels instead of four small ones per step.
    """
    T, B, I, H = saved.shape
    GH = saved.W_hh.shape[0]
    dx = _empty(T * B, I)
    _matmul(dA, saved.W_ih, dx)
    dW_ih, dW_hh = _empty(GH, I), _empty(GH, H)
    _matmul(dA, saved.x, dW_ih, trans_a=True)
    # h0 .. h_{T-1}: all of hs, whose last B rows the product never reads (it runs over
    # dA's T*B rows); a slice hs[:T] would cost more than the product at small sizes
    _matmul(dA, saved.hs.reshape((T + 1) * B, H), dW_hh, trans_a=True)
    grads = {"x": dx.reshape(T, B, I), "W_ih": dW_ih, "W_hh": dW_hh}
    if saved.has_bias:
        grads["b_ih"] = _colsum(dA)
        grads["b_hh"] = _copy(grads["b_ih"], (GH,))
    return grads


@dataclass
class _ConvSaved:
    """What ``convlstm_gates_backward`` needs, on the device (positions flattened, N = C Hh Ww)."""

    on_device: bool
    shape: tuple  # (B, C, Hh, Ww)
    gates: Any  # (B, 4, N) activated gates
    c_prev: Any  # (B, N)
    c: Any  # (B, N)
    w_peep: Any  # (3, N) or None


def convlstm_gates_forward(
    a: Array, c_prev: Array, w_peep: Array | None = None
) -> tuple[Array, Array, _ConvSaved]:
    """The pointwise part of a ConvLSTM step, after the convolution.

    a: (B, 4C, Hh, Ww) float32 pre-activations (conv of [x, h_prev] plus bias; gates i, f, g,
    o along channels), c_prev: (B, C, Hh, Ww), w_peep: (3, C, Hh, Ww) or None (peepholes:
    i += w_peep[0] c_prev, f += w_peep[1] c_prev, o += w_peep[2] c, as in
    ``reference.convlstm_step_forward``). Returns h, c: (B, C, Hh, Ww) and ``saved``.
    """
    require_cuda()
    a_dev = _arg("a", a, 4, "(B, 4C, Hh, Ww)")
    B, C4, Hh, Ww = a_dev.shape
    if C4 < 4 or C4 % 4:
        raise ValueError(f"a must have shape (B, 4C, Hh, Ww) with 4C a positive multiple of 4, "
                         f"got {a_dev.shape}")
    C = C4 // 4
    shape, N = (B, C, Hh, Ww), C * Hh * Ww
    cp = _arg("c_prev", c_prev, 4, "(B, C, Hh, Ww)")
    _checks.shape("c_prev", cp, "(B, C, Hh, Ww)", shape)
    cp = cp.reshape(B, N)
    peep = w_peep is not None
    if peep:
        dw = _arg("w_peep", w_peep, 4, "(3, C, Hh, Ww)")
        _checks.shape("w_peep", dw, "(3, C, Hh, Ww)", (3, C, Hh, Ww))
        dw = dw.reshape(3, N)
    else:
        dw = _no_array(2)
    h, c, gates = _empty(B, N), _empty(B, N), _empty(B, 4, N)
    _launcher(_convlstm_gates_kernel, *_grid1(N))(a_dev.reshape(B, 4, N), cp, dw, peep, h, c, gates)
    on_device = _is_device_array(a)
    saved = _ConvSaved(on_device, shape, gates, cp, c, dw if peep else None)
    return _out(h.reshape(*shape), on_device), _out(_copy(c, (B, N)).reshape(*shape), on_device), saved


def convlstm_gates_backward(dh: Array | None, dc: Array | None, saved: _ConvSaved) -> dict[str, Array]:
    """Backward of ``convlstm_gates_forward``.

    dh, dc: (B, C, Hh, Ww) or None (zeros): gradients with respect to h and c.
    Returns a dict: "a" (B, 4C, Hh, Ww), "c_prev" (B, C, Hh, Ww) and, with peepholes,
    "w_peep" (3, C, Hh, Ww) (summed over the batch).
    """
    require_cuda()
    B, C, Hh, Ww = saved.shape
    N = C * Hh * Ww
    layout = "(B, C, Hh, Ww)"
    ddh = _grad("dh", dh, saved.shape, layout).reshape(B, N)
    ddc = _grad("dc", dc, saved.shape, layout).reshape(B, N)
    peep = saved.w_peep is not None
    w = saved.w_peep if peep else _no_array(2)
    da, dc_prev = _empty(B, 4, N), _empty(B, N)
    dw = _empty(3, N) if peep else w
    _launcher(_convlstm_gates_backward_kernel, *_grid1(N))(
        ddh, ddc, saved.gates, saved.c_prev, saved.c, w, peep, da, dc_prev, dw
    )
    grads = {"a": da.reshape(B, 4 * C, Hh, Ww), "c_prev": dc_prev.reshape(B, C, Hh, Ww)}
    if peep:
        grads["w_peep"] = dw.reshape(3, C, Hh, Ww)
    return {name: _out(g, saved.on_device) for name, g in grads.items()}
