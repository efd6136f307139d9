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
def test_extreme_preactivations_stay_finite(dtype):
    """Saturating gates (|pre-activation| ~ 1e4) must not overflow to NaN in either dtype."""
    a = layer_args("lstm", 5, 2, 3, 4, dtype=dtype, scale=3000.0)
    y, h, c, saved = K.lstm_forward(**a)
    g = K.lstm_backward(*output_grads("lstm", 5, 2, 4, dtype=dtype), saved)
    assert np.isfinite(y).all() and all(np.isfinite(v).all() for v in g.values())
    if dtype == np.float64:
        assert_close(y, R.lstm_forward(**a)[0], TOL[dtype], "y saturated")


def test_small_problems_use_one_blas_thread_and_restore_the_setting():
    from threadpoolctl import threadpool_info

    blas_threads = lambda: [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    a = layer_args("lstm", 5, 2, 3, 4, dtype=np.float32)
    K.lstm_backward(None, None, None, K.lstm_forward(**a)[-1])  # loads the BLAS that Numba calls
    before = blas_threads()
    with K._blas_threads(B=2, H=4, G=4):
        assert set(blas_threads()) == {1}
    assert blas_threads() == before
    K.lstm_backward(None, None, None, K.lstm_forward(**a)[-1])
    assert blas_threads() == before
    with K._blas_threads(B=64, H=512, G=4):  # a large product keeps the machine's setting
        assert blas_threads() == before
