"""The textbook itself: finite-difference gradient checks (float64) of every cell and
sequence function, agreement with torch, and the numerically stable sigmoid."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import assert_close, layer_args, output_grads

from lstmkit import reference as R

PARAMS = ("W_ih", "W_hh", "b_ih", "b_hh")


def numerical_grad(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of a (in place)."""
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        up = f()
        a[idx] = old - eps
        down = f()
        a[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


def check_grads(f, arrays: dict, analytic: dict, names) -> None:
    for name in names:
        num = numerical_grad(f, arrays[name])
        err = np.abs(num - analytic[name]).max() / max(1e-8, np.abs(num).max())
        assert err < 1e-6, f"gradient of {name}: relative error {err:.1e}"


@pytest.mark.parametrize("bias", [True, False])
def test_rnn_step_gradients(bias):
    a = layer_args("rnn", 1, 3, 4, 5, bias=bias, seed=1)
    x = a["x"][0]
    dh = np.random.default_rng(2).standard_normal((3, 5))
    args = {"x": x, "h_prev": a["h0"], **{k: a[k] for k in PARAMS}}
    loss = lambda: float((R.rnn_step_forward(**args)[0] * dh).sum())
    _, cache = R.rnn_step_forward(**args)
    grads = R.rnn_step_backward(dh, cache)
    check_grads(loss, args, grads, ["x", "h_prev", "W_ih", "W_hh"] + (["b_ih", "b_hh"] if bias else []))


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_step_gradients(bias):
    a = layer_args("lstm", 1, 3, 4, 5, bias=bias, seed=3)
    rng = np.random.default_rng(4)
    dh, dc = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    args = {"x": a["x"][0], "h_prev": a["h0"], "c_prev": a["c0"], **{k: a[k] for k in PARAMS}}

    def loss():
        h, c, _ = R.lstm_step_forward(**args)
        return float((h * dh).sum() + (c * dc).sum())

    _, _, cache = R.lstm_step_forward(**args)
    grads = R.lstm_step_backward(dh, dc, cache)
    names = ["x", "h_prev", "c_prev", "W_ih", "W_hh"] + (["b_ih", "b_hh"] if bias else [])
    check_grads(loss, args, grads, names)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("bias", [True, False])
def test_sequence_gradients(kind, bias):
    T, B, I, H = 5, 2, 3, 4
    a = layer_args(kind, T, B, I, H, bias=bias, seed=5)
    up = output_grads(kind, T, B, H, seed=6)
    fwd, bwd = (R.lstm_forward, R.lstm_backward) if kind == "lstm" else (R.rnn_forward, R.rnn_backward)

    def loss():
        outs = fwd(**a)[:-1]
        return float(sum((o * g).sum() for o, g in zip(outs, up)))

    grads = bwd(*up, fwd(**a)[-1])
    names = ["x", "h0", "W_ih", "W_hh"] + (["c0"] if kind == "lstm" else []) + (
        ["b_ih", "b_hh"] if bias else [])
    check_grads(loss, a, grads, names)
    assert ("b_ih" in grads) == bias


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_matches_torch_and_dh_norms(kind):
    """Outputs equal torch.nn.{RNN,LSTM}; dh_norms[t] equals ||dL/dh_t|| from torch autograd."""
    T, B, I, H = 6, 3, 4, 5
    a = layer_args(kind, T, B, I, H, seed=7)
    up = output_grads(kind, T, B, H, seed=8)
    fwd, bwd = (R.lstm_forward, R.lstm_backward) if kind == "lstm" else (R.rnn_forward, R.rnn_backward)
    out = fwd(**a)
    grads = bwd(*up, out[-1])

    # The same network unrolled step by step in torch, keeping every h_t's gradient.
    cell = (torch.nn.LSTMCell if kind == "lstm" else torch.nn.RNNCell)(I, H).double()
    with torch.no_grad():
        for ours, theirs in zip(PARAMS, ("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
            getattr(cell, theirs).copy_(torch.from_numpy(a[ours]))
    h = torch.from_numpy(a["h0"]).requires_grad_()
    c = torch.from_numpy(a["c0"]).requires_grad_() if kind == "lstm" else None
    hs = []
    for t in range(T):
        if kind == "lstm":
            h, c = cell(torch.from_numpy(a["x"][t]), (h, c))
        else:
            h = cell(torch.from_numpy(a["x"][t]), h)
        h.retain_grad()
        hs.append(h)
    loss = sum((hh * torch.from_numpy(up[0][t])).sum() for t, hh in enumerate(hs))
    loss = loss + (h * torch.from_numpy(up[1])).sum()
    if kind == "lstm":
        loss = loss + (c * torch.from_numpy(up[2])).sum()
    loss.backward()

    y = torch.stack(hs).detach().numpy()
    assert_close(out[0], y, 1e-12, "y")
    torch_norms = np.array([hh.grad.norm().item() for hh in hs])
    assert_close(grads["dh_norms"], torch_norms, 1e-12, "dh_norms")
    assert grads["dh_norms"].shape == (T,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable(dtype):
    x = np.array([-1e4, -800, -100, -20, 0, 20, 100, 800, 1e4], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = R.sigmoid(x)
    assert s.dtype == dtype
    assert np.all((s >= 0) & (s <= 1))
    assert s[0] == 0 and s[-1] == 1 and s[4] == 0.5
    z = np.linspace(-30, 30, 101)
    assert_close(R.sigmoid(z), 1 / (1 + np.exp(-z)), 1e-15, "sigmoid")


def test_float32_accepted_and_kept():
    a = layer_args("lstm", 4, 2, 3, 5, dtype=np.float32)
    y, h, c, saved = R.lstm_forward(**a)
    assert y.dtype == h.dtype == c.dtype == np.float32
    a64 = {k: None if v is None else v.astype(np.float64) for k, v in a.items()}
    assert_close(y, R.lstm_forward(**a64)[0], 1e-6, "y float32")


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_empty_sequence_returns_initial_state(kind):
    a = layer_args(kind, 0, 3, 2, 4)
    fwd, bwd = (R.lstm_forward, R.lstm_backward) if kind == "lstm" else (R.rnn_forward, R.rnn_backward)
    out = fwd(**a)
    assert out[0].shape == (0, 3, 4)
    np.testing.assert_array_equal(out[1], a["h0"])
    grads = bwd(None, np.ones((3, 4)), *([None] if kind == "lstm" else []), out[-1])
    np.testing.assert_array_equal(grads["h0"], np.ones((3, 4)))
    assert not grads["W_hh"].any() and grads["x"].shape == (0, 3, 2)


def test_convlstm_step_shapes_and_padding():
    rng = np.random.default_rng(0)
    B, Cin, Ch, Hh, Ww, k = 2, 3, 4, 6, 5, 3
    x = rng.standard_normal((B, Cin, Hh, Ww))
    h, c = rng.standard_normal((2, B, Ch, Hh, Ww))
    W = rng.standard_normal((4 * Ch, Cin + Ch, k, k)) * 0.1
    h1, c1 = R.convlstm_step_forward(x, h, c, W, np.zeros(4 * Ch))
    assert h1.shape == c1.shape == (B, Ch, Hh, Ww)
    # A 1x1 kernel makes every pixel an ordinary LSTM cell.
    W1 = W[:, :, :1, :1]
    h2, c2 = R.convlstm_step_forward(x, h, c, W1)
    px = lambda a: a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])
    h_ref, c_ref, _ = R.lstm_step_forward(px(x), px(h), px(c), W1[:, :Cin, 0, 0], W1[:, Cin:, 0, 0])
    assert_close(px(h2), h_ref, 1e-12, "h")
    assert_close(px(c2), c_ref, 1e-12, "c")
    with pytest.raises(ValueError, match="odd kernel size"):
        R.convlstm_step_forward(x, h, c, np.zeros((4 * Ch, Cin + Ch, 2, 2)))
