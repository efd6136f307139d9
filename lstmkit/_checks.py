"""Argument validation shared by every entry point (reference, kernels, functional, nn).

Validation happens once at the edge so that kernels never see a bad shape or dtype. Every
error names the argument and says what was expected, e.g.::

    ValueError: h0 must have shape (B, H) = (4, 16), got (4, 15)
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)
GATES = {"rnn": 1, "lstm": 4}


class NonFiniteError(ValueError):
    """An argument holds a NaN or an inf; ``name`` is the argument's name (x, W_hh, ...), which
    ``lstmkit.nn`` turns into its own (input, weight_hh_l0, ...)."""

    def __init__(self, name: str):
        super().__init__(f"{name} contains NaN or inf")
        self.name = name


def array(name: str, a, ndim: int, layout: str, dtype=None, finite: bool = True) -> np.ndarray:
    """Check that ``a`` is a floating NumPy array with ``ndim`` dimensions.

    ``layout`` names the dimensions for the message, e.g. "(T, B, I)". ``dtype`` (if given)
    is the dtype every array in the call must share (that of ``x``).
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of shape {layout}, got {type(a).__name__}")
    if a.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {a.dtype} but x has dtype {np.dtype(dtype)}: "
            f"convert with {name}.astype(np.{np.dtype(dtype)})"
        )
    if a.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dimensions), got shape {a.shape}")
    if finite and not np.isfinite(a).all():
        raise NonFiniteError(name)
    return a


def shape(name: str, a: np.ndarray, layout: str, expected: tuple) -> None:
    if a.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {layout} = {tuple(expected)}, got {a.shape}")


def weights(kind: str, W_ih, W_hh, b_ih, b_hh, dtype, I: int, finite: bool = True) -> int:
    """Check the parameters of one RNN/LSTM layer for input size I (from x); return H."""
    G = GATES[kind]
    gl = "4H" if G == 4 else "H"
    array("W_hh", W_hh, 2, f"({gl}, H)", dtype, finite)
    H = W_hh.shape[1]
    if H < 1:
        raise ValueError(f"W_hh must have shape ({gl}, H) with H >= 1, got {W_hh.shape}")
    shape("W_hh", W_hh, f"({gl}, H)", (G * H, H))
    array("W_ih", W_ih, 2, f"({gl}, I)", dtype, finite)
    if W_ih.shape != (G * H, I):
        raise ValueError(
            f"W_ih must have shape ({gl}, I) = {(G * H, I)} (I = {I} from x, H = {H} from W_hh), "
            f"got {W_ih.shape}"
        )
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be arrays or both be None")
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            array(name, b, 1, f"({gl},)", dtype, finite)
            shape(name, b, f"({gl},)", (G * H,))
    return H


def sequence_args(kind: str, x, h0, c0, W_ih, W_hh, b_ih, b_hh,
                  finite: bool = True) -> tuple[int, int, int, int]:
    """Validate a whole-sequence call; return (T, B, I, H). finite=False leaves the test for
    NaN and inf to the caller (the CPU kernels make it in one compiled call)."""
    array("x", x, 3, "(T, B, I)", finite=finite)
    T, B, I = x.shape
    if I < 1:
        raise ValueError(f"x must have shape (T, B, I) with I >= 1 input features, got {x.shape}")
    H = weights(kind, W_ih, W_hh, b_ih, b_hh, x.dtype, I, finite)
    for name, s in (("h0", h0), ("c0", c0)):
        if name == "c0" and kind != "lstm":
            continue
        array(name, s, 2, "(B, H)", x.dtype, finite)
        shape(name, s, "(B, H)", (B, H))
    return T, B, I, H


def step_args(kind: str, x, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh) -> tuple[int, int, int]:
    """Validate a single-step call; return (B, I, H)."""
    array("x", x, 2, "(B, I)")
    B, I = x.shape
    H = weights(kind, W_ih, W_hh, b_ih, b_hh, x.dtype, I)
    array("h_prev", h_prev, 2, "(B, H)", x.dtype)
    shape("h_prev", h_prev, "(B, H)", (B, H))
    if kind == "lstm":
        array("c_prev", c_prev, 2, "(B, H)", x.dtype)
        shape("c_prev", c_prev, "(B, H)", (B, H))
    return B, I, H


def grad_arg(name: str, g, expected: tuple, dtype, finite: bool = True) -> np.ndarray:
    """An incoming gradient: None means zero; otherwise it must match the output it belongs to."""
    if g is None:
        return np.zeros(expected, dtype=dtype)
    layout = "(T, B, H)" if len(expected) == 3 else "(B, H)"
    array(name, g, len(expected), layout, dtype, finite)
    shape(name, g, layout, expected)
    return g


def convlstm_step_args(x, h_prev, c_prev, W, b, w_peep) -> None:
    """Validate one ConvLSTM step (see ``reference.convlstm_step_forward``)."""
    array("x", x, 4, "(B, C_in, Hh, Ww)")
    B, C_in, Hh, Ww = x.shape
    array("h_prev", h_prev, 4, "(B, C_h, Hh, Ww)", x.dtype)
    Ch = h_prev.shape[1]
    shape("h_prev", h_prev, "(B, C_h, Hh, Ww)", (B, Ch, Hh, Ww))
    array("c_prev", c_prev, 4, "(B, C_h, Hh, Ww)", x.dtype)
    shape("c_prev", c_prev, "(B, C_h, Hh, Ww)", (B, Ch, Hh, Ww))
    array("W", W, 4, "(4 C_h, C_in + C_h, k, k)", x.dtype)
    k = W.shape[-1]
    if k % 2 == 0:
        raise ValueError(f"W must have an odd kernel size k (so that padding k // 2 keeps the frame "
                         f"size), got k = {k}")
    shape("W", W, "(4 C_h, C_in + C_h, k, k)", (4 * Ch, C_in + Ch, k, k))
    if b is not None:
        array("b", b, 1, "(4 C_h,)", x.dtype)
        shape("b", b, "(4 C_h,)", (4 * Ch,))
    if w_peep is not None:
        array("w_peep", w_peep, 4, "(3, C_h, Hh, Ww)", x.dtype)
        shape("w_peep", w_peep, "(3, C_h, Hh, Ww)", (3, Ch, Hh, Ww))
