"""The Numba kernels agree with the reference: float64 to 1e-10, float32 to 1e-5 (relative to
each array's scale), forward and backward, on random shapes including the awkward ones."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, layer_args, output_grads

from lstmkit import reference as R
from lstmkit.kernels import cpu as K

TOL = {np.float64: 1e-10, np.float32: 1e-5}
SHAPES = [(7, 3, 5, 4), (1, 1, 1, 1), (12, 16, 33, 17), (3, 2, 64, 128), (30, 1, 4, 8)]
FUNCS = {"lstm": (R.lstm_forward, R.lstm_backward, K.lstm_forward, K.lstm_backward),
         "rnn": (R.rnn_forward, R.rnn_backward, K.rnn_forward, K.rnn_backward)}


def as64(d: dict) -> dict:
    return {k: None if v is None else v.astype(np.float64) for k, v in d.items()}


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_matches_reference(kind, dtype, shape, bias):
    T, B, I, H = shape
    seed = hash((kind, shape, bias)) % 1000
    a = layer_args(kind, T, B, I, H, dtype=dtype, bias=bias, seed=seed, scale=0.7)
    up = output_grads(kind, T, B, H, dtype=dtype, seed=seed + 1)
    ref_fwd, ref_bwd, k_fwd, k_bwd = FUNCS[kind]
    # The reference runs in float64 on the same (possibly float32) numbers.
    ref = ref_fwd(**as64(a))
    ours = k_fwd(**a)
    for name, r, o in zip(["y", "h_n", "c_n"], ref[:-1], ours[:-1]):
        assert o.dtype == dtype
        assert_close(o, r, TOL[dtype], name)
    ref_g = ref_bwd(*[g.astype(np.float64) for g in up], ref[-1])
    our_g = k_bwd(*up, ours[-1])
    assert set(our_g) == set(ref_g) - {"dh_norms"}
    for name, g in our_g.items():
        assert g.dtype == dtype, name
        assert_close(g, ref_g[name], TOL[dtype], f"d{name}")


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("T,B", [(0, 3), (4, 0), (0, 0)])
def test_empty_sequences_and_batches(kind, T, B):
    a = layer_args(kind, T, B, 3, 5)
    _, _, k_fwd, k_bwd = FUNCS[kind]
    out = k_fwd(**a)
    assert out[0].shape == (T, B, 5)
    np.testing.assert_array_equal(out[1], a["h0"])
    dh_n = np.ones((B, 5))
    grads = k_bwd(None, dh_n, *([None] if kind == "lstm" else []), out[-1])
    assert grads["x"].shape == (T, B, 3)
    np.testing.assert_array_equal(grads["h0"], dh_n)
    assert not grads["W_ih"].any() and not grads["W_hh"].any()


def test_non_contiguous_inputs_give_the_same_answer():
    a = layer_args("lstm", 6, 4, 5, 3, seed=9)
    strided = dict(a)
    strided["x"] = np.asfortranarray(a["x"])
    strided["W_hh"] = np.ascontiguousarray(a["W_hh"].T).T  # same values, transposed layout
    assert not strided["W_hh"].flags.c_contiguous
    np.testing.assert_array_equal(K.lstm_forward(**strided)[0], K.lstm_forward(**a)[0])


def test_fast_float32_tanh_and_sigmoid_accuracy():
    """The rational float32 tanh used inside the kernels, against float64 libm."""
    from numba import njit

    @njit(fastmath=True, error_model="numpy")
    def apply(x, out_t, out_s):
        for k in range(x.size):
            out_t[k] = K.tanh(x[k])
            out_s[k] = K.sigmoid(x[k])

    x = np.concatenate([np.linspace(-20, 20, 400_001), [-1e4, -89.0, 89.0, 1e4]]).astype(np.float32)
    t, s = np.empty_like(x), np.empty_like(x)
    apply(x, t, s)
    x64 = x.astype(np.float64)
    assert np.abs(t - np.tanh(x64)).max() < 1e-6
    assert np.abs(s - (0.5 * np.tanh(0.5 * x64) + 0.5)).max() < 1e-6
    assert np.all(np.abs(t) <= 1) and np.all((s >= 0) & (s <= 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_check_finds_nan_and_inf_anywhere_and_nothing_else(dtype):
    """The kernels test every argument for NaN and inf in one compiled pass over the bits of
    each float: any position, either sign, and never the largest finite value or a subnormal."""
    names = "x h0 c0 W_ih W_hh b_ih b_hh"
    big, tiny = np.finfo(dtype).max, np.finfo(dtype).smallest_subnormal
    for k, name in enumerate(names.split()):
        for size in (1, 7, 33, 200):  # (vectorised loops: whole vectors, and remainders)
            for pos in (0, size // 2, size - 1):
                for value, bad in [(np.nan, True), (np.inf, True), (-np.inf, True), (big, False),
                                   (-big, False), (tiny, False), (-0.0, False)]:
                    arrays = [np.ones(5, dtype) for _ in range(7)]
                    arrays[k] = np.ones(size, dtype)
                    arrays[k][pos] = value
                    if bad:
                        with pytest.raises(ValueError, match=f"^{name} contains NaN or inf"):
                            K._check_finite(names, *arrays)
                    else:
                        K._check_finite(names, *arrays)
    K._check_finite("dy dh_n", np.ones((2, 3), dtype), None)  # fewer arrays, and None


# The forward pass's paths, (T, B, I, H), with every threshold for threads at 0: on two threads,
# batch 1 on tiles with the input projection split by columns, then by rows; blocks of units
# shared by the threads; batch rows split between them; and small problems on one thread.
FORWARD_PATHS = {"tiles-columns": (9, 1, 128, 128), "tiles-rows": (64, 1, 128, 128),
                 "blocks": (3, 3, 5, 32), "batch-split": (3, 8, 5, 16), "one-thread": (4, 2, 3, 5)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", FORWARD_PATHS)
def test_forward_names_the_argument_that_holds_nan_or_inf(monkeypatch, path, dtype):
    """lstm_forward's threads test the arguments as they first read them, each its share: a
    NaN or inf anywhere in any argument is found, and named, on every path; a sum b_ih + b_hh
    that overflows is not the arguments' fault, and a later call runs as usual."""
    T, B, I, H = FORWARD_PATHS[path]
    if path != "one-thread":
        for name in ("PARALLEL_FROM", "PARALLEL_FROM_BATCH1", "PARALLEL_PRODUCT_FROM"):
            monkeypatch.setattr(K, name, 0)
    threads, width, batch_split = K._plan(B, H, np.dtype(dtype).itemsize, dtype == np.float32)
    assert batch_split == (path == "batch-split" and dtype == np.float32 and threads > 1)
    assert K._tiled(T, B, H, width, dtype) == (path.startswith("tiles") and dtype == np.float32)
    a = layer_args("lstm", T, B, I, H, dtype=dtype, seed=len(path))
    expected = K.lstm_forward(**a)[0]
    for name in ("x", "h0", "c0", "W_ih", "W_hh", "b_ih", "b_hh"):
        for pos in (0, a[name].size // 2, a[name].size - 1):
            for value in (np.nan, np.inf, -np.inf):
                bad = dict(a, **{name: a[name].copy()})
                bad[name].reshape(-1)[pos] = value
                with pytest.raises(ValueError, match=f"^{name} contains NaN or inf"):
                    K.lstm_forward(**bad)
    big = np.finfo(dtype).max
    over = dict(a, b_ih=np.full_like(a["b_ih"], big), b_hh=np.full_like(a["b_hh"], big))
    with np.errstate(over="ignore"):  # (numpy's warning, as it sums them)
        assert np.isfinite(K.lstm_forward(**over)[0]).all()  # every gate saturated, no error
    np.testing.assert_array_equal(K.lstm_forward(**a)[0], expected)


# The gate loops' compile options, for helpers called here as the kernels call them (a
# function takes its caller's fast-math flags unless it sets its own; no cache for lambdas).
_KERNEL_FLAGS = {**K._JIT_GATES, "cache": False}


@pytest.mark.parametrize("H", [1, 3, 4, 13, 16, 20, 32])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch1_matvec_sums_in_order(H, dtype):
    """_add_matvec adds h @ W^T to y summing left to right for each output: exactly what a
    loop over the inputs, one at a time, gives (so it cannot depend on the compiler), also
    when called from a function with the kernels' fast-math flags, as in the kernels; on
    W^T as packed for it, whole tiles and a partial one; nothing beyond y changes."""
    rng = np.random.default_rng(H)
    W = rng.standard_normal((4 * H, H)).astype(dtype)
    h, y = rng.standard_normal(H).astype(dtype), rng.standard_normal(4 * H + 1).astype(dtype)
    expected = y.copy()
    for k in range(H):
        expected[:-1] = expected[:-1] + W[:, k] * h[k]  # one rounding per step, in dtype
    from numba import njit

    got, pad = y.copy(), np.full(K.TILE, np.nan, dtype)
    caller = njit(**_KERNEL_FLAGS)(lambda WT, h, y, pad: K._add_matvec(WT, h, y[:-1], pad))
    caller(K._packed(W, H, True, 1), h, got, pad)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_preactivations_stay_finite(dtype):
    """Saturating gates (|pre-activation| ~ 1e4) must not overflow to NaN in either dtype."""
    a = layer_args("lstm", 5, 2, 3, 4, dtype=dtype, scale=3000.0)
    y, h, c, saved = K.lstm_forward(**a)
    g = K.lstm_backward(*output_grads("lstm", 5, 2, 4, dtype=dtype), saved)
    assert np.isfinite(y).all() and all(np.isfinite(v).all() for v in g.values())
    if dtype == np.float64:
        assert_close(y, R.lstm_forward(**a)[0], TOL[dtype], "y saturated")


def _check_lstm_against_reference(T, B, I, H, dtype, seed=3, W_hh=None):
    """Outputs and gradients against the reference, on random arguments (W_hh: the array to
    hold the random W_hh, for a test of where it lies in memory)."""
    a = layer_args("lstm", T, B, I, H, dtype=dtype, seed=seed, scale=0.7)
    if W_hh is not None:
        W_hh[:], a["W_hh"] = a["W_hh"], W_hh
    up = output_grads("lstm", T, B, H, dtype=dtype, seed=seed + 1)
    ref = R.lstm_forward(**as64(a))
    ours = K.lstm_forward(**a)
    for name, r, o in zip(["y", "h_n", "c_n"], ref[:-1], ours[:-1]):
        assert_close(o, r, TOL[dtype], name)
    ref_g = R.lstm_backward(*[g.astype(np.float64) for g in up], ref[-1])
    for name, g in K.lstm_backward(*up, ours[-1]).items():
        assert_close(g, ref_g[name], TOL[dtype], f"d{name}")


@pytest.mark.parametrize("offset", [0, 16])
def test_a_backward_pass_in_one_block_reads_w_hh_itself_where_it_starts_on_a_cache_line(offset):
    """Its packed form would be a copy of W_hh; a W_hh `offset` bytes past a cache line is
    packed all the same (rows straddling lines were slower to read)."""
    T, B, I, H = 6, 16, 5, 8  # one thread, one block of all H units
    assert K._plan(B, H)[1] == H
    nbytes = 4 * H * H * 4
    line = K._aligned_empty((nbytes + 64,), np.uint8)
    W_hh = line[offset:offset + nbytes].view(np.float32).reshape(4 * H, H)
    assert np.shares_memory(K._packed(W_hh, H, False, B), W_hh) == (offset == 0)
    _check_lstm_against_reference(T, B, I, H, np.float32, W_hh=W_hh)


@pytest.mark.parametrize("dtype,threads_from,split_rows", [
    (np.float32, 0, 1 << 30), (np.float32, 0, 1), (np.float32, 1 << 60, 1 << 30),
    (np.float64, 1 << 60, 1 << 30)],  # float64 runs on one thread: see the test below
    ids=["float32-threads-units", "float32-threads-batch-split", "float32-one-thread", "float64"])
@pytest.mark.parametrize("width,block_mnk", [(13, 1 << 19), (5, 1 << 19), (1, 1 << 19), (8, 1)])
@pytest.mark.parametrize("batch", [3, 1], ids=["batch3", "batch1"])
def test_blocked_time_loops_match_reference(monkeypatch, dtype, threads_from, split_rows, width,
                                            block_mnk, batch):
    """Every way of cutting a step into blocks gives the reference's answer: one block of all
    13 units, blocks whose last one is narrower (5 + 5 + 3), blocks of one unit, the backward
    product split by gates (BLOCK_MNK = 1), on one thread or on Numba's threads, sharing the
    blocks or each with its own batch rows (uneven: 1 and 2 of 3), with the large products split
    by rows too; with BLAS products (batch 3) and matrix-vector loops (batch 1)."""
    monkeypatch.setattr(K, "PARALLEL_FROM", threads_from)
    monkeypatch.setattr(K, "PARALLEL_FROM_BATCH1", threads_from)
    monkeypatch.setattr(K, "PARALLEL_PRODUCT_FROM", threads_from)
    monkeypatch.setattr(K, "BLOCK_MNK", block_mnk)
    monkeypatch.setattr(K, "BATCH_SPLIT_ROWS", split_rows)
    monkeypatch.setattr(K, "block_width", lambda B, H, threads: width)
    _check_lstm_against_reference(6, batch, 5, 13, dtype)


@pytest.mark.parametrize("M,N", [(1, 40), (3, 40), (30, 20)], ids=["one-row", "wide", "tall"])
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_product_parts_write_each_element_once(M, N, ta, tb):
    """The parts of a shared product (_gemm_part) together write C = op(A) @ op(B), each the
    block that it reports: by columns where C is much wider than tall (one row of A: a
    matrix-vector product), in whole cache lines, so that of 3 parts of 40 columns one gets
    none; by rows otherwise; one to three parts, A and B as stored or transposed."""
    from numba import njit

    K_ = 7
    rng = np.random.default_rng(M * N)
    A = rng.standard_normal((K_, M) if ta else (M, K_))
    Bm = rng.standard_normal((N, K_) if tb else (K_, N))
    expected = (A.T if ta else A) @ (Bm.T if tb else Bm)
    part = njit(lambda p, n, a, ta, b, tb, c, s: K._gemm_part(
        p, n, M, N, K_, a, M if ta else K_, ta, b, K_ if tb else N, tb, c, N, s))
    for parts in (1, 2, 3):
        C = np.full(M * N, np.nan)
        covered = np.zeros((M, N), int)
        for p in range(parts):
            r0, r1, c0, c1 = part(p, parts, A.reshape(-1), ta, Bm.reshape(-1), tb, C,
                                  K._SCALARS[np.dtype(np.float64)])
            covered[r0:r1, c0:c1] += 1
            # whole columns where C is much wider than tall, else whole rows
            assert (r0, r1) == (0, M) if K.COLUMNS_PER_ROW * M < N else (c0, c1) == (0, N)
        assert (covered == 1).all()
        np.testing.assert_allclose(C.reshape(M, N), expected, rtol=1e-12)


@pytest.mark.parametrize("T,B,H,parts", [(1, 1, 13, 1), (1, 1, 13, 3), (3, 2, 13, 2), (3, 2, 13, 3),
                                          (40, 2, 3, 2), (40, 2, 3, 3)],
                         ids=["one-row", "one-row-3-parts", "wide", "wide-3-parts", "tall", "tall-3-parts"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_projection_parts_write_each_preactivation_once(T, B, H, parts, dtype):
    """The parts of the input projection together write x W_ih^T + bias for every step: split
    by columns where the product is much wider than tall (one row: a matrix-vector product), by
    rows otherwise, adding the bias to each block that a part wrote."""
    from numba import njit

    rng = np.random.default_rng(T + parts)
    I, G = 7, 4 * H
    assert (K.COLUMNS_PER_ROW * T * B < G) == (H == 13)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    W, bias = rng.standard_normal((G, I)).astype(dtype), rng.standard_normal(G).astype(dtype)
    gates = np.full((T, B, G), np.nan, dtype)
    part = njit(lambda p, n, x, W, b, g, s: K._project(p, n, x, W, b, g, s))
    for p in range(parts):
        part(p, parts, x, W, bias, gates, K._SCALARS[np.dtype(dtype)])
    expected = x.reshape(T * B, I).astype(np.float64) @ W.T.astype(np.float64) + bias
    np.testing.assert_allclose(gates.reshape(T * B, G), expected, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("H,width,threads_from", [(64, 64, 1 << 60), (128, 64, 0), (128, 128, 0),
                                                  (192, 64, 0), (16, 16, 1 << 60), (48, 48, 1 << 60)],
                         ids=["one-tile-a-gate", "two-blocks", "two-tiles-a-gate", "three-blocks",
                              "four-gates-a-tile", "tiles-across-gates"])
def test_batch1_tiles_match_reference(monkeypatch, H, width, threads_from):
    """At batch 1, blocks of whole tiles run the product on ``add_tile``, after packing W_hh^T
    at their first step, in one order at even steps and the other at odd ones: one block or
    several (more than the threads), one tile per gate or two, on one thread or shared by
    Numba's threads; and one block of all H units, whose tiles hold several gates' rows."""
    monkeypatch.setattr(K, "PARALLEL_FROM_BATCH1", threads_from)
    monkeypatch.setattr(K, "block_width", lambda B, H, threads: width)
    monkeypatch.setattr(K, "TILES_FROM_STEPS", 9)
    assert K._tiled(9, 1, H, width, np.float32)
    _check_lstm_against_reference(9, 1, 5, H, np.float32)


def test_tiles_only_where_blocks_are_whole_tiles_and_the_packing_pays():
    T = K.TILES_FROM_STEPS
    assert K._tiled(T, 1, 128, 64) and K._tiled(T, 1, 512, 256) and K._tiled(T, 1, 64, 64)
    assert not K._tiled(T - 1, 1, 128, 64)  # too few steps to repay the packing
    assert not K._tiled(T, 2, 128, 64)  # batch 2: matrix products
    assert not K._tiled(T, 1, 96, 48)  # blocks narrower than a tile
    # one block of all H units: its 4H gate rows, W_hh's own, must be whole tiles
    assert K._tiled(T, 1, 16, 16) and K._tiled(T, 1, 32, 32) and K._tiled(T, 1, 48, 48)
    assert not K._tiled(T, 1, 20, 20) and not K._tiled(T, 1, 8, 8)
    assert not K._tiled(T, 1, 192, 128)  # a last block of 64: the blocks must all be alike
    assert not K._tiled(T, 1, 128, 64, np.float64)  # float64, the precise path: no tiles


@pytest.mark.parametrize("H,width", [(128, 64), (48, 48), (16, 16)],
                         ids=["two-blocks", "tiles-across-gates", "four-gates-a-tile"])
def test_tiles_hold_each_blocks_transposed_gate_rows_and_sum_in_a_fixed_order(H, width):
    """At its first step a block packs its gate rows of W_hh, transposed, into tiles, and at
    every step adds h @ them to its pre-activations, each output summed over h in the order
    of the time loop's three calls: the block's own units, then those before them, then
    those after them; in plain float32 (also with the kernels' fast-math flags), whichever
    order the tiles run in (first to last at even steps, last to first at odd ones)."""
    from numba import njit

    G = 4 * H
    rng = np.random.default_rng(0)
    W = rng.standard_normal((G, H)).astype(np.float32)
    h, a = rng.standard_normal(H).astype(np.float32), rng.standard_normal(G).astype(np.float32)
    out = np.full(W.size, np.nan, np.float32)

    @njit(**_KERNEL_FLAGS)
    def product(t, j0, W, out, h, a):  # as _lstm_fwd_steps calls it
        K._tiled_product(t, j0, width, W, out, h, a, j0, j0 + width)
        K._tiled_product(t, j0, width, W, out, h, a, 0, j0)
        K._tiled_product(t, j0, width, W, out, h, a, j0 + width, H)

    got = {t: a.copy() for t in (0, 1)}
    expected = a.copy()
    for j0 in range(0, H, width):
        for t in (0, 1):  # packs at step 0
            product(t, j0, W, out, h, got[t])
        for p in range(0, 4 * width, K.TILE):  # the block's gate rows, gate by gate
            start = G * j0 + p * H
            tile = out[start:start + H * K.TILE].reshape(H, K.TILE)
            rows = [v // width * H + j0 + v % width for v in range(p, p + K.TILE)]
            np.testing.assert_array_equal(tile, W[rows].T)
        rows = [q * H + j0 + v for q in range(4) for v in range(width)]
        for k in [*range(j0, j0 + width), *range(j0), *range(j0 + width, H)]:
            expected[rows] = expected[rows] + W[rows, k] * h[k]
    for t in (0, 1):
        np.testing.assert_array_equal(got[t], expected)
    assert not np.isnan(out).any()  # the blocks' tiles cover the buffer


def test_float64_runs_on_one_thread(monkeypatch):
    """float64, the precise path, never enters the threaded drivers, however large the
    problem (it compiles without threads, in half the time)."""
    def threaded(*args):
        raise AssertionError("a threaded driver ran for float64")

    monkeypatch.setattr(K, "_lstm_fwd", threaded)
    monkeypatch.setattr(K, "_lstm_bwd", threaded)
    monkeypatch.setattr(K, "PARALLEL_FROM", 0)
    monkeypatch.setattr(K, "PARALLEL_PRODUCT_FROM", 0)
    a = layer_args("lstm", 6, 16, 5, 13)
    assert a["x"].dtype == np.float64
    y, h, c, saved = K.lstm_forward(**a)
    K.lstm_backward(*output_grads("lstm", 6, 16, 13), saved)
    with pytest.raises(AssertionError, match="threaded driver"):  # while float32 does
        K.lstm_forward(**layer_args("lstm", 6, 16, 5, 13, dtype=np.float32))


@pytest.mark.parametrize("blocks", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_each_thread_tries_every_block_once_its_own_first(blocks, n):
    shares = []
    for p in range(n):
        order = [K._nth_block(k, p, n, blocks) for k in range(blocks)]
        assert sorted(order) == list(range(blocks))
        own = list(range(blocks * p // n, blocks * (p + 1) // n))
        assert order[:len(own)] == own
        shares += own
    assert sorted(shares) == list(range(blocks))  # the shares cover the blocks once


@pytest.mark.parametrize("batch,split_rows,H,width", [
    (3, 1 << 30, 13, 3), (1, 1 << 30, 13, 3), (7, 1, 13, 3), (1, 1 << 30, 320, 64)],
    ids=["batch3", "batch1", "batch7-split", "batch1-tiles"])
@pytest.mark.parametrize("shares,numba_threads", [(2, 2), (3, 2), (4, 1)])
def test_threaded_time_loops_finish_and_agree_however_shares_are_scheduled(
        monkeypatch, batch, split_rows, H, width, shares, numba_threads):
    """The threads of a time loop wait for each other at every step. Cut into more shares than
    Numba has threads, some thread runs several shares in turn (with one thread, all of them
    one after the other): the loop must still finish, with the same answer as when one thread
    runs every share, bit for bit, whoever ran which block (with tiles, whoever packed it).
    Against one share (no split at all) the answer agrees to float32 rounding only: BLAS may
    sum a product of 3 rows in another order than one of 7 (OpenBLAS's AVX-512 kernels do)."""
    import threading

    from numba import config, set_num_threads

    monkeypatch.setattr(K, "block_width", lambda B, H, threads: width)  # 5 blocks
    monkeypatch.setattr(K, "TILES_FROM_STEPS", 1)
    assert K._tiled(7, batch, H, width) == (H == 320)
    monkeypatch.setattr(K, "MACS_PER_THREAD", 1)  # as many threads as get_num_threads says
    monkeypatch.setattr(K, "PARALLEL_FROM", 0)
    monkeypatch.setattr(K, "PARALLEL_FROM_BATCH1", 0)
    monkeypatch.setattr(K, "BATCH_SPLIT_ROWS", split_rows)
    a = layer_args("lstm", 7, batch, 5, H, dtype=np.float32, seed=2)
    up = output_grads("lstm", 7, batch, H, dtype=np.float32, seed=3)

    def run(results, numba_threads=numba_threads):
        # per thread in Numba, so set in the thread that runs; a 1-core machine has only one
        set_num_threads(min(numba_threads, config.NUMBA_NUM_THREADS))
        y, h, c, saved = K.lstm_forward(**a)
        results += [y, h, c, *K.lstm_backward(*up, saved).values()]

    monkeypatch.setattr(K, "get_num_threads", lambda: 1)
    unsplit: list = []
    run(unsplit, numba_threads=1)
    monkeypatch.setattr(K, "get_num_threads", lambda: shares)
    alone: list = []
    run(alone, numba_threads=1)
    shared: list = []
    worker = threading.Thread(target=run, args=(shared,), daemon=True)  # so a hang fails the test
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the threaded time loop did not finish"
    assert len(shared) == len(alone) == len(unsplit)
    for ours, one, whole in zip(shared, alone, unsplit):
        np.testing.assert_array_equal(ours, one)
        np.testing.assert_allclose(ours, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width", [1, 3, 8, 13])
def test_packed_weights_hold_each_blocks_slices(width):
    """The packed layouts that the time loops read, against slicing W_hh directly."""
    H = 13
    W = np.random.default_rng(0).standard_normal((4 * H, H))
    fwd, bwd = np.empty(W.size), np.empty(W.size)
    K._pack(W, width, True, fwd)
    K._pack(W, width, False, bwd)
    for j0 in range(0, H, width):
        w = min(width, H - j0)
        block_f = fwd[4 * H * j0:4 * H * (j0 + w)].reshape(H, 4 * w)
        block_b = bwd[4 * H * j0:4 * H * (j0 + w)].reshape(4 * H, w)
        for q in range(4):
            np.testing.assert_array_equal(block_f[:, q * w:(q + 1) * w], W[q * H + j0:q * H + j0 + w].T)
        np.testing.assert_array_equal(block_b, W[:, j0:j0 + w])


def test_time_loop_threads_grow_with_the_work_per_step(monkeypatch):
    monkeypatch.setattr(K, "get_num_threads", lambda: 64)
    threads = lambda B, H: K._plan(B, H)[0]
    assert threads(16, 32) == 1  # 2^16 multiply-adds per step: below PARALLEL_FROM
    assert threads(8, 64) == 2 and threads(16, 64) == 2  # 2^17, 2^18: from PARALLEL_FROM, two
    assert threads(16, 128) == 4 and threads(64, 128) == 16  # 2^20, 2^22: one per 2^18
    assert threads(1, 64) == 1 and threads(1, 128) == 2  # PARALLEL_FROM_BATCH1 = 2^16
    assert threads(64, 512) == 32  # no more threads than blocks: 512 units, 16 per block
    for B, H in [(64, 32), (64, 512), (16, 128), (1, 512), (64, 40), (4, 128)]:
        n, width, batch_split = K._plan(B, H)
        if batch_split:  # each thread its own rows, and W_hh small enough for each to read it all
            assert B >= K.BATCH_SPLIT_ROWS * n and 4 * H * H * 4 <= K.BATCH_SPLIT_BYTES
        else:  # threads share the blocks, of whole cache lines each
            assert -(-H // width) >= n and width % K.LINE_UNITS == 0
    split = lambda B, H, itemsize=4: K._plan(B, H, itemsize)[2]
    assert split(64, 128) and split(16, 128)  # 16 threads of 4 rows each, 4 of 4
    monkeypatch.setattr(K, "get_num_threads", lambda: 2)
    assert split(16, 128) and not split(64, 512) and not split(4, 128)  # 2 rows each: too few
    assert split(64, 256) and not split(64, 256, itemsize=8)  # W_hh of 1 MiB, then 2 MiB
    monkeypatch.setattr(K, "get_num_threads", lambda: 1)
    assert threads(64, 512) == 1 and not split(64, 128)


def test_block_width_keeps_products_small_and_feeds_every_thread():
    for B, H, threads in [(1, 32, 1), (16, 128, 2), (64, 128, 2), (16, 512, 2), (1, 512, 2), (7, 13, 2)]:
        w = K.block_width(B, H, threads)
        lines = -(-H // K.LINE_UNITS)  # blocks on several threads are whole cache lines wide
        assert 1 <= w <= H and -(-H // w) >= min(threads, lines if threads > 1 else H)
        assert B * H * 4 * w <= max(K.BLOCK_MNK, B * H * 4 * 8) or w == -(-H // threads)
    assert K.block_width(64, 512, 2) == 256  # large steps: one wide block per thread
    assert K.block_width(1, 512, 2) == 256  # batch 1: matrix-vector products, one block per thread
    assert K.block_width(16, 512, 2) == 16  # otherwise within BLOCK_MNK
    assert K.block_width(64, 32, 4) == 16  # on several threads, whole cache lines (not 8)
    assert K.block_width(64, 32, 1) == 32 and K.block_width(7, 13, 2) == 13


def test_recycled_memory_is_reused_per_thread():
    import threading

    r = K._Recycler()  # one pool per thread, as the kernels' own K._recycled
    shape = (64, 1024)  # 256 KiB of float32: above the size from which buffers are kept
    address = lambda arr: arr.__array_interface__["data"][0]
    first = address(r.empty(shape, np.float32))  # dropped at once: its buffer is free again
    assert address(r.empty(shape, np.float32)) == first  # reused, not reallocated:
    assert len(r.buffers) == 1  # the pool still holds one buffer
    assert r.empty((32, 1024), np.float64).dtype == np.float64
    other = []
    t = threading.Thread(target=lambda: other.append(r.empty(shape, np.float32)))
    t.start()
    t.join()
    assert not np.shares_memory(other[0], r.empty(shape, np.float32))


def test_concurrent_calls_from_threads_give_each_its_own_answer():
    """The kernels release the GIL and keep scratch memory per thread: two Python threads
    running different layers at once must not mix their packed weights."""
    from concurrent.futures import ThreadPoolExecutor

    args = [layer_args("lstm", 20, 4, 6, 24, dtype=np.float32, seed=s) for s in range(4)]
    alone = [K.lstm_forward(**a)[0] for a in args]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda a: K.lstm_forward(**a)[0], args * 3))
    for i, y in enumerate(together):
        np.testing.assert_array_equal(y, alone[i % 4])


def test_small_problems_use_one_blas_thread_and_restore_the_setting():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()
                if lib["user_api"] == "blas"}

    a = layer_args("lstm", 5, 2, 3, 4, dtype=np.float32)
    K.lstm_backward(None, None, None, K.lstm_forward(**a)[-1])  # loads the BLAS that Numba calls
    numba_blas = {lib.filepath for lib in K._blas_libraries()}
    before = blas_threads()
    assert numba_blas and numba_blas <= set(before)
    with K._blas_threads(B=2, H=4, G=4):
        inside = blas_threads()
    assert {path: inside[path] for path in numba_blas} == dict.fromkeys(numba_blas, 1)
    assert {p: n for p, n in inside.items() if p not in numba_blas} == {
        p: n for p, n in before.items() if p not in numba_blas}  # another BLAS (NumPy's) untouched
    assert blas_threads() == before
    K.lstm_backward(None, None, None, K.lstm_forward(**a)[-1])
    assert blas_threads() == before
    with K._blas_threads(B=64, H=512, G=4):  # a large product keeps the machine's setting
        assert blas_threads() == before


def test_the_blas_whose_threads_are_set_is_the_one_scipy_links():
    """Numba's kernels call BLAS through scipy.linalg.cython_blas: the library it links is the
    one whose threads matter (the dynamic linker's answer, not the file names that
    _blas_libraries goes by)."""
    import os
    import subprocess

    import scipy.linalg.cython_blas as cython_blas

    ldd = subprocess.run(["ldd", cython_blas.__file__], capture_output=True, text=True, check=True)
    linked = {os.path.realpath(line.split("=>")[1].split("(")[0].strip())
              for line in ldd.stdout.splitlines() if "=>" in line and "/" in line.split("=>")[1]}
    assert {os.path.realpath(lib.filepath) for lib in K._blas_libraries()} <= linked


def test_recycled_memory_is_reused_only_once_nothing_refers_to_it():
    import torch

    r = K._Recycler()
    shape = (64, 1024)  # 256 KiB of float32: above the size from which buffers are kept
    a = r.empty(shape, np.float32)
    view = a[10:]
    del a
    b = r.empty(shape, np.float32)
    assert not np.shares_memory(b, view)  # a view of the first array is alive
    del view
    c = r.empty((1024, 64), np.float32)  # the same number of bytes, another shape
    assert np.shares_memory(c, r.buffers[0])
    tensor = torch.from_numpy(c)
    del c
    assert not any(np.shares_memory(r.empty(shape, np.float32), x) for x in (b, tensor.numpy()))
    kept = len(r.buffers)
    small = r.empty((3,), np.float32)  # small arrays are not kept
    assert len(r.buffers) == kept and not any(np.shares_memory(small, x) for x in r.buffers)
    small_max = K._Recycler()
    small_max.MAX = 300 << 10
    kept, extra = small_max.empty(shape, np.float32), small_max.empty(shape, np.float32)
    assert len(small_max.buffers) == 1 and not np.shares_memory(kept, extra)
    del kept, extra
    small_max.empty((256, 512), np.float32)  # 512 KiB: more than MAX on its own, so not kept,
    assert small_max.buffers == []  # and the free buffer of another size was dropped for it


@pytest.mark.parametrize("shape", [(64, 1024), (1000, 33), (4097, 5)])
def test_recycled_arrays_start_on_a_cache_line(shape):
    """Threads writing neighbouring blocks of a row must not share cache lines; that needs
    rows that start on one, which malloc (16-byte alignment) does not give."""
    r = K._Recycler()
    small_max = K._Recycler()
    small_max.MAX = 1 << 16  # arrays that are not kept
    a = K._aligned_empty((5, 7), np.float32)
    assert a.shape == (5, 7) and a.ctypes.data % r.LINE == 0
    for dtype in (np.float32, np.float64):
        assert small_max.empty(shape, dtype).ctypes.data % r.LINE == 0
        arrays = [r.empty(shape, dtype) for _ in range(3)]  # new buffers
        del arrays[1:]
        arrays += [r.empty(shape, dtype) for _ in range(2)]  # reused ones, where kept
        for a in arrays:
            assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
            assert a.ctypes.data % r.LINE == 0


def test_backward_uses_up_saved_and_says_so_when_called_again():
    a = layer_args("lstm", 4, 2, 3, 5, dtype=np.float32)
    saved = K.lstm_forward(**a)[-1]
    K.lstm_backward(None, None, None, saved)
    with pytest.raises(RuntimeError, match="used up by an earlier lstm_backward"):
        K.lstm_backward(None, None, None, saved)


# Run in a fresh Python: which kernels (Numba dispatchers of lstmkit.kernels.cpu) a piece of
# compile_all ({run}) compiled or loaded, and which of them it had to compile (cache misses).
_DISPATCHERS = """
import json
from numba.core.registry import CPUDispatcher
from lstmkit.kernels import cpu
cpu._compile_finiteness_check()  # what compile_all does before it starts its second process
before = {n for n, d in vars(cpu).items() if isinstance(d, CPUDispatcher) and d.signatures}
{run}
print(json.dumps({n: bool(d.stats.cache_misses) for n, d in vars(cpu).items()
                  if isinstance(d, CPUDispatcher) and d.signatures and n not in before}))
"""


def _dispatchers(run: str, env: dict | None = None) -> dict[str, bool]:
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _DISPATCHERS.replace("{run}", run)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_two_halves_of_compile_all_share_no_kernel():
    """compile_all's second process compiles kernels while this one compiles others. Two
    processes adding to one function's cache index at once would lose (or swap) entries, so
    no kernel may be in both halves."""
    second = _dispatchers("cpu._compile_second_half()")
    first = _dispatchers("cpu._compile_first_half()")
    assert {"_lstm_fwd", "_lstm_fwd_one_thread"} <= set(first)
    assert {"_lstm_bwd", "_lstm_bwd_one_thread", "_pack", "_rnn_fwd", "_rnn_bwd"} <= set(second)
    assert not set(first) & set(second)


def test_compile_all_leaves_every_kernel_in_the_cache(tmp_path):
    """With an empty cache, compile_all compiles every kernel (with a second core, half of them
    in a second process) into it; a new process then loads them all, compiling nothing, and has
    every kernel that lstm/rnn forward and backward use at batch 1 and above."""
    import os

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    cold = _dispatchers("cpu.compile_all()", env)
    if K._usable_cores() > 1:  # the second half came from the second process's cache entries
        assert not cold["_lstm_bwd"] and not cold["_rnn_bwd"] and cold["_lstm_fwd"], cold
    warm = _dispatchers("cpu.compile_all(); "
                        "[cpu.lstm_backward(None, None, None, cpu.lstm_forward(x, h, h, W, U)[-1]) "
                        "for dt in cpu._DTYPES for x, h, W, U in [cpu._tiny_arrays(dt, 16)]]", env)
    # (a kernel loaded from the cache brings the kernels it calls with it: fewer names)
    assert {"_lstm_fwd", "_lstm_bwd", "_pack", "_rnn_fwd"} <= set(warm) <= set(cold), (warm, cold)
    assert not any(warm.values()), warm
