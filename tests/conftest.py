"""Shared helpers. Kept free of numba imports: tests/cuda runs in its own process with
NUMBA_ENABLE_CUDASIM set, and this file is loaded there too."""

from __future__ import annotations

import numpy as np
import pytest


def layer_args(kind: str, T: int, B: int, I: int, H: int, *, dtype=np.float64, bias=True,
               seed=0, scale=0.5) -> dict:
    """Random inputs and parameters of one RNN/LSTM layer, keyed by the contract's names."""
    rng = np.random.default_rng(seed)
    G = 4 if kind == "lstm" else 1
    r = lambda *s, k=scale: (rng.standard_normal(s) * k).astype(dtype)
    args = {"x": r(T, B, I), "h0": r(B, H)}
    if kind == "lstm":
        args["c0"] = r(B, H)
    # Weights scaled like torch's initialisation: a recurrent matrix with entries ~ 1 makes a
    # chaotic network whose gradients grow so fast that float32 rounding, not the code, dominates.
    w = scale / np.sqrt(max(H, I, 1)) * 2
    args.update(W_ih=r(G * H, I, k=w), W_hh=r(G * H, H, k=w),
                b_ih=r(G * H) if bias else None, b_hh=r(G * H) if bias else None)
    return args


def output_grads(kind: str, T: int, B: int, H: int, *, dtype=np.float64, seed=1) -> tuple:
    """Random upstream gradients (dy, dh_n[, dc_n])."""
    rng = np.random.default_rng(seed)
    g = (rng.standard_normal((T, B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype))
    if kind == "lstm":
        g += (rng.standard_normal((B, H)).astype(dtype),)
    return g


def assert_close(actual, expected, rtol: float, name: str = "") -> None:
    """|actual - expected| <= rtol * max(1, max|expected|), elementwise.

    A tolerance relative to the array's scale: the numbers compared here are sums of many
    products, so a per-element relative test would punish values that are merely near zero.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= rtol * scale, f"{name}: max error {err:.2e} > {rtol:.0e} x scale {scale:.2e}"


def assert_deterministic(make):
    """Same seed -> identical arrays; another seed -> different arrays."""
    a, b, c = make(0), make(0), make(1)
    a, b, c = (x if isinstance(x, tuple) else (x,) for x in (a, b, c))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
