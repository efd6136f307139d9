"""The hand-written SIMD intrinsics of ``lstmkit.kernels.simd``, against plain numpy: exact,
bit for bit, since each sum runs in a fixed order with one rounding per operation."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from lstmkit.kernels.simd import TILE, add_tile, transpose_block

# (Numba passes a TypeError raised while typing an intrinsic on as it is, or wrapped)
_TYPE_ERRORS = (TypeError, TypingError)


@njit
def _add_tile(y, y0, W, w0, ld, h):
    add_tile(y, y0, W, w0, ld, h)


@njit(fastmath=True)  # as in the kernels: the flags must not reach add_tile's arithmetic
def _add_tile_fastmath(y, y0, W, w0, ld, h):
    add_tile(y, y0, W, w0, ld, h)


@njit
def _transpose_block(dst, d0, ldd, src, s0, lds):
    transpose_block(dst, d0, ldd, src, s0, lds)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,ld,y0,w0", [(1, TILE, 0, 0), (7, TILE, 5, 3), (33, 100, 1, 17),
                                        (0, TILE, 2, 0), (64, 2 * TILE + 1, 0, 9)])
def test_add_tile_sums_each_output_in_order(dtype, n, ld, y0, w0):
    """y[y0 + v] += h[0] W[w0 + v] + h[1] W[w0 + ld + v] + ..., left to right, for v < TILE,
    at unaligned offsets and row strides; nothing outside the tile changes."""
    rng = np.random.default_rng(n + ld)
    W = rng.standard_normal(w0 + max(n - 1, 0) * ld + TILE + 5).astype(dtype)
    h = rng.standard_normal(n).astype(dtype)
    y = rng.standard_normal(y0 + TILE + 3).astype(dtype)
    expected = y.copy()
    for k in range(n):  # one product and one sum per step, each rounded in dtype
        expected[y0:y0 + TILE] = expected[y0:y0 + TILE] + W[w0 + k * ld:w0 + k * ld + TILE] * h[k]
    for f in (_add_tile, _add_tile_fastmath):
        got = y.copy()
        f(got, y0, W, w0, ld, h)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype,side", [(np.float32, 16), (np.float64, 8)])
def test_transpose_block_moves_one_square_and_nothing_else(dtype, side):
    src = np.arange(60 * 50, dtype=dtype)
    dst = np.full(40 * 70, -1, dtype)
    _transpose_block(dst, 75, 70, src, 103, 50)
    expected = np.full_like(dst, -1)
    for r in range(side):
        for c in range(side):
            expected[75 + c * 70 + r] = src[103 + r * 50 + c]
    np.testing.assert_array_equal(dst, expected)


def test_intrinsics_name_the_array_they_cannot_take():
    f32, f64 = np.zeros(TILE, np.float32), np.zeros(TILE, np.float64)
    with pytest.raises(_TYPE_ERRORS, match="add_tile: y, W, h must have one dtype"):
        _add_tile(f32, 0, f64, 0, TILE, f32[:1])
    with pytest.raises(_TYPE_ERRORS, match="add_tile: W must be a contiguous 1-D"):
        _add_tile(f32, 0, np.zeros((2, TILE), np.float32), 0, TILE, f32[:1])
    with pytest.raises(_TYPE_ERRORS, match="add_tile: h must be a contiguous 1-D"):
        _add_tile(f32, 0, f32, 0, TILE, f32[::2])
    with pytest.raises(_TYPE_ERRORS, match="transpose_block: src must be a contiguous 1-D"):
        _transpose_block(f32, 0, 1, np.zeros(4, np.int32), 0, 1)
