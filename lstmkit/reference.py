"""The textbook: RNN and LSTM cells and sequences in plain NumPy.

Read this file next to the lessons' equations. Every faster backend in lstmkit (the
Numba kernels, the CUDA kernels, the torch modules) is tested against these functions.

Conventions (the same as ``torch.nn.LSTM``, so weights move between the two unchanged):

* time-major sequences: ``x: (T, B, I)`` for T steps, a batch of B, I input features;
* hidden size H; an LSTM stacks its four gates in the order **i, f, g, o**, so
  ``W_ih: (4H, I)``, ``W_hh: (4H, H)``, ``b_ih, b_hh: (4H,)``; a tanh RNN has one block:
  ``W_ih: (H, I)``, ``W_hh: (H, H)``, ``b_ih, b_hh: (H,)``;
* biases may be ``None`` (``bias=False`` in torch);
* arithmetic happens in the dtype of ``x`` (float64 for the textbook, float32 accepted).

Step functions return a ``cache`` for the matching backward step, the style of classic
course assignments. Sequence functions follow one contract shared by every backend::

    lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh) -> (y, h_n, c_n, saved)
    lstm_backward(dy, dh_n, dc_n, saved) -> grads
    rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh) -> (y, h_n, saved)
    rnn_backward(dy, dh_n, saved) -> grads

``grads`` is a dict with keys ``"x", "h0", ("c0",) "W_ih", "W_hh", ("b_ih", "b_hh")`` and,
from the reference only, ``"dh_norms"``: the norm ||dL/dh_t|| at every step t, the quantity
the vanishing-gradient lesson plots.
"""

from __future__ import annotations

import numpy as np

from lstmkit import _checks

__all__ = [
    "sigmoid",
    "rnn_step_forward",
    "rnn_step_backward",
    "lstm_step_forward",
    "lstm_step_backward",
    "rnn_forward",
    "rnn_backward",
    "lstm_forward",
    "lstm_backward",
    "convlstm_step_forward",
]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + e^-x), elementwise, without overflow for any x.

    ``np.exp(-x)`` overflows for x < -710 (float64) or x < -89 (float32). Only ever
    exponentiate a non-positive number: e = exp(-|x|) lies in (0, 1], and
    sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) for x < 0.
    """
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _affine(x, h_prev, W_ih, W_hh, b_ih, b_hh):
    """Pre-activations x W_ih^T + b_ih + h_prev W_hh^T + b_hh, shape (B, rows of W)."""
    a = x @ W_ih.T + h_prev @ W_hh.T
    if b_ih is not None:
        a = a + b_ih + b_hh
    return a


def _weight_grads(da, x, h_prev, has_bias):
    """Parameter gradients shared by both cells: every gate row is an affine map."""
    grads = {"W_ih": da.T @ x, "W_hh": da.T @ h_prev}
    if has_bias:
        # b_ih and b_hh enter the pre-activation the same way, so they share a gradient.
        grads["b_ih"] = da.sum(axis=0)
        grads["b_hh"] = da.sum(axis=0)
    return grads


# --------------------------------------------------------------------------- RNN cell


def rnn_step_forward(x, h_prev, W_ih, W_hh, b_ih=None, b_hh=None):
    """One step of a tanh RNN:  h = tanh(x W_ih^T + b_ih + h_prev W_hh^T + b_hh).

    x: (B, I), h_prev: (B, H), W_ih: (H, I), W_hh: (H, H), b_ih, b_hh: (H,) or None.
    Returns h: (B, H) and the cache that ``rnn_step_backward`` needs.
    """
    _checks.step_args("rnn", x, h_prev, None, W_ih, W_hh, b_ih, b_hh)
    h = np.tanh(_affine(x, h_prev, W_ih, W_hh, b_ih, b_hh))
    cache = (x, h_prev, W_ih, W_hh, h, b_ih is not None)
    return h, cache


def rnn_step_backward(dh, cache):
    """Backward through one RNN step.

    dh: (B, H), the gradient of the loss with respect to this step's h.
    Returns a dict: "x" (B, I), "h_prev" (B, H), "W_ih", "W_hh" and, with biases, "b_ih", "b_hh".
    """
    x, h_prev, W_ih, W_hh, h, has_bias = cache
    da = dh * (1 - h * h)  # tanh'(a) = 1 - tanh(a)^2, and h = tanh(a)
    grads = {"x": da @ W_ih, "h_prev": da @ W_hh}
    grads.update(_weight_grads(da, x, h_prev, has_bias))
    return grads


# -------------------------------------------------------------------------- LSTM cell


def lstm_step_forward(x, h_prev, c_prev, W_ih, W_hh, b_ih=None, b_hh=None):
    """One step of an LSTM (gate order i, f, g, o, as in torch.nn.LSTM).

        i = sigmoid(a_i)        input gate: how much of the candidate to write
        f = sigmoid(a_f)        forget gate: how much of the old cell state to keep
        g = tanh(a_g)           candidate values
        o = sigmoid(a_o)        output gate: how much of the cell to reveal
        c = f * c_prev + i * g  the cell state: an additive update, the "conveyor belt"
        h = o * tanh(c)

    where [a_i, a_f, a_g, a_o] = x W_ih^T + b_ih + h_prev W_hh^T + b_hh.

    x: (B, I), h_prev, c_prev: (B, H), W_ih: (4H, I), W_hh: (4H, H), b_ih, b_hh: (4H,) or None.
    Returns h: (B, H), c: (B, H) and the cache that ``lstm_step_backward`` needs.
    """
    _checks.step_args("lstm", x, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh)
    H = h_prev.shape[1]
    a = _affine(x, h_prev, W_ih, W_hh, b_ih, b_hh)
    i = sigmoid(a[:, 0 * H : 1 * H])
    f = sigmoid(a[:, 1 * H : 2 * H])
    g = np.tanh(a[:, 2 * H : 3 * H])
    o = sigmoid(a[:, 3 * H : 4 * H])
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    cache = (x, h_prev, c_prev, W_ih, W_hh, i, f, g, o, tanh_c, b_ih is not None)
    return h, c, cache


def lstm_step_backward(dh, dc, cache):
    """Backward through one LSTM step.

    dh: (B, H), gradient of the loss with respect to this step's h;
    dc: (B, H), gradient arriving at this step's c from the next step (zeros at the end).
    Returns a dict: "x" (B, I), "h_prev" (B, H), "c_prev" (B, H), "W_ih", "W_hh" and,
    with biases, "b_ih", "b_hh".
    """
    x, h_prev, c_prev, W_ih, W_hh, i, f, g, o, tanh_c, has_bias = cache
    # h = o * tanh(c): the gradient reaches c through tanh, and adds to what came from t+1.
    dc = dc + dh * o * (1 - tanh_c * tanh_c)
    do = dh * tanh_c
    # c = f * c_prev + i * g
    di, df, dg = dc * g, dc * c_prev, dc * i
    # The constant error carousel: c_prev's gradient is dc scaled by the forget gate only,
    # with no squashing derivative in between.
    dc_prev = dc * f
    # Back through the nonlinearities: sigmoid' = s(1 - s), tanh' = 1 - tanh^2.
    da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1)
    grads = {"x": da @ W_ih, "h_prev": da @ W_hh, "c_prev": dc_prev}
    grads.update(_weight_grads(da, x, h_prev, has_bias))
    return grads


# ------------------------------------------------------------------------- sequences


def _zeros_like_or(a, like):
    return np.zeros_like(like) if a is None else a


def rnn_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None):
    """Run a tanh RNN over a whole sequence by repeating ``rnn_step_forward``.

    x: (T, B, I), h0: (B, H). Returns y: (T, B, H) (every step's h), h_n: (B, H) and
    ``saved``, the per-step caches for ``rnn_backward``. T = 0 gives an empty y and h_n = h0.
    """
    T, B, _, H = _checks.sequence_args("rnn", x, h0, None, W_ih, W_hh, b_ih, b_hh)
    y = np.empty((T, B, H), dtype=x.dtype)
    h, caches = h0, []
    for t in range(T):
        h, cache = rnn_step_forward(x[t], h, W_ih, W_hh, b_ih, b_hh)
        y[t] = h
        caches.append(cache)
    saved = {"caches": caches, "x": x, "h0": h0, "W_ih": W_ih, "W_hh": W_hh, "bias": b_ih is not None}
    return y, h.copy(), saved


def rnn_backward(dy, dh_n, saved):
    """Backpropagation through time for ``rnn_forward``.

    dy: (T, B, H) or None, gradient of the loss with respect to every output;
    dh_n: (B, H) or None, gradient with respect to the final hidden state.
    Returns grads (see the module docstring), including "dh_norms": (T,).
    """
    return _bptt(dy, dh_n, None, saved, rnn_step_backward)


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih=None, b_hh=None):
    """Run an LSTM over a whole sequence by repeating ``lstm_step_forward``.

    x: (T, B, I), h0, c0: (B, H). Returns y: (T, B, H) (every step's h), h_n: (B, H),
    c_n: (B, H) and ``saved`` for ``lstm_backward``. T = 0 gives an empty y and the
    initial states back.
    """
    T, B, _, H = _checks.sequence_args("lstm", x, h0, c0, W_ih, W_hh, b_ih, b_hh)
    y = np.empty((T, B, H), dtype=x.dtype)
    h, c, caches = h0, c0, []
    for t in range(T):
        h, c, cache = lstm_step_forward(x[t], h, c, W_ih, W_hh, b_ih, b_hh)
        y[t] = h
        caches.append(cache)
    saved = {"caches": caches, "x": x, "h0": h0, "c0": c0, "W_ih": W_ih, "W_hh": W_hh,
             "bias": b_ih is not None}
    return y, h.copy(), c.copy(), saved


def lstm_backward(dy, dh_n, dc_n, saved):
    """Backpropagation through time for ``lstm_forward``.

    dy: (T, B, H) or None; dh_n, dc_n: (B, H) or None (None means zero gradient).
    Returns grads (see the module docstring), including "dh_norms": (T,).
    """
    return _bptt(dy, dh_n, dc_n, saved, lstm_step_backward)


def _bptt(dy, dh_n, dc_n, saved, step_backward):
    """Walk the steps backwards, summing each parameter's gradient over time.

    The gradient reaching h_t has two sources: the loss at step t (dy[t]) and step t+1,
    through h_t's role as h_prev there. Its norm, recorded as dh_norms[t], is what shrinks
    or grows geometrically with the distance to the loss in a plain RNN.
    """
    x, h0, caches = saved["x"], saved["h0"], saved["caches"]
    is_lstm = "c0" in saved
    T, B, H = len(caches), h0.shape[0], h0.shape[1]
    dy = _checks.grad_arg("dy", dy, (T, B, H), x.dtype)
    dh = _checks.grad_arg("dh_n", dh_n, (B, H), x.dtype).copy()
    dc = _checks.grad_arg("dc_n", dc_n, (B, H), x.dtype).copy() if is_lstm else None

    grads = {
        "x": np.zeros_like(x),
        "W_ih": np.zeros_like(saved["W_ih"]),
        "W_hh": np.zeros_like(saved["W_hh"]),
    }
    if saved["bias"]:
        grads["b_ih"] = np.zeros(saved["W_ih"].shape[0], dtype=x.dtype)
        grads["b_hh"] = np.zeros(saved["W_ih"].shape[0], dtype=x.dtype)
    dh_norms = np.zeros(T, dtype=np.float64)

    for t in reversed(range(T)):
        dh = dh + dy[t]
        dh_norms[t] = np.linalg.norm(dh)
        if is_lstm:
            step = step_backward(dh, dc, caches[t])
            dc = step["c_prev"]
        else:
            step = step_backward(dh, caches[t])
        dh = step["h_prev"]
        grads["x"][t] = step["x"]
        for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
            if name in grads:
                grads[name] += step[name]

    grads["h0"] = dh
    if is_lstm:
        grads["c0"] = dc
    grads["dh_norms"] = dh_norms
    return grads


# --------------------------------------------------------------------------- ConvLSTM


def _conv2d_same(x, w):
    """2-D cross-correlation with zero padding that keeps the frame size.

    x: (B, C, Hh, Ww), w: (O, C, k, k) with k odd. Returns (B, O, Hh, Ww).
    """
    k = w.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    Hh, Ww = x.shape[2], x.shape[3]
    out = np.zeros((x.shape[0], w.shape[0], Hh, Ww), dtype=np.result_type(x, w))
    for di in range(k):
        for dj in range(k):
            patch = xp[:, :, di : di + Hh, dj : dj + Ww]  # (B, C, Hh, Ww)
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, di, dj])
    return out


def convlstm_step_forward(x, h_prev, c_prev, W, b=None, w_peep=None):
    """One ConvLSTM step (Shi et al. 2015): every gate's matrix product becomes a convolution.

        [a_i, a_f, a_g, a_o] = W * [x, h_prev] + b         (* is a 'same' 2-D convolution)
        i = sigmoid(a_i + w_ci . c_prev)                    (peephole terms only if w_peep)
        f = sigmoid(a_f + w_cf . c_prev)
        g = tanh(a_g)
        c = f . c_prev + i . g                              (. is elementwise)
        o = sigmoid(a_o + w_co . c)
        h = o . tanh(c)

    x: (B, C_in, Hh, Ww), h_prev, c_prev: (B, C_h, Hh, Ww), W: (4 C_h, C_in + C_h, k, k) with
    k odd, b: (4 C_h,) or None, w_peep: (3, C_h, Hh, Ww) or None (the i, f, o peepholes).
    Returns h, c: (B, C_h, Hh, Ww).
    """
    _checks.convlstm_step_args(x, h_prev, c_prev, W, b, w_peep)
    Ch = h_prev.shape[1]
    a = _conv2d_same(np.concatenate([x, h_prev], axis=1), W)
    if b is not None:
        a = a + b[None, :, None, None]
    a_i, a_f, a_g, a_o = (a[:, k * Ch : (k + 1) * Ch] for k in range(4))
    if w_peep is not None:
        a_i = a_i + w_peep[0] * c_prev
        a_f = a_f + w_peep[1] * c_prev
    i, f, g = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g)
    c = f * c_prev + i * g
    if w_peep is not None:
        a_o = a_o + w_peep[2] * c
    o = sigmoid(a_o)
    h = o * np.tanh(c)
    return h, c
