"""Bad input gets a clear error naming the argument, at every public entry point, before it
reaches a kernel; hypothesis throws random shapes and values at the public functions."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import layer_args
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstmkit import reference as R
from lstmkit.kernels import cpu as K

ENTRY_POINTS = [R.lstm_forward, K.lstm_forward]


def spoil(args: dict, name: str, how: str) -> dict:
    a = dict(args)
    v = a[name]
    if how == "rank":
        a[name] = v[..., None]
    elif how == "size":
        a[name] = np.concatenate([v, v[..., :1]], axis=-1)
    elif how == "dtype_int":
        a[name] = v.astype(np.int64)
    elif how == "dtype_mixed":
        a[name] = v.astype(np.float32)
    elif how == "nan":
        a[name] = v.copy()
        a[name].flat[0] = np.nan
    elif how == "inf":
        a[name] = v.copy()
        a[name].flat[-1] = -np.inf
    elif how == "list":
        a[name] = v.tolist()
    return a


CASES = [(name, how, err) for name in ["x", "h0", "c0", "W_ih", "W_hh", "b_ih", "b_hh"]
         for how, err in [("rank", ValueError), ("size", ValueError), ("dtype_int", TypeError),
                          ("dtype_mixed", TypeError), ("nan", ValueError), ("inf", ValueError),
                          ("list", TypeError)]]


@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=["reference", "numba"])
@pytest.mark.parametrize("name,how,err", CASES)
def test_each_argument_is_checked(fn, name, how, err):
    a = spoil(layer_args("lstm", 4, 3, 5, 6), name, how)
    with pytest.raises(err, match=rf"(^|\s){name}\b"):
        fn(**a)


def test_messages_state_the_expected_shape():
    a = layer_args("lstm", 4, 3, 5, 6)
    a["h0"] = np.zeros((3, 7))
    with pytest.raises(ValueError, match=r"h0 must have shape \(B, H\) = \(3, 6\), got \(3, 7\)"):
        K.lstm_forward(**a)
    a = layer_args("lstm", 4, 3, 5, 6)
    a["W_ih"] = np.zeros((20, 5))
    with pytest.raises(ValueError, match=r"W_ih must have shape \(4H, I\) = \(24, 5\)"):
        K.lstm_forward(**a)
    a = layer_args("lstm", 4, 3, 5, 6, dtype=np.float32)
    a["W_hh"] = a["W_hh"].astype(np.float64)
    with pytest.raises(TypeError, match=r"W_hh has dtype float64 but x has dtype float32"):
        K.lstm_forward(**a)


def test_one_bias_without_the_other():
    a = layer_args("rnn", 3, 2, 4, 5)
    a["b_hh"] = None
    with pytest.raises(ValueError, match="b_ih and b_hh must both be arrays or both be None"):
        K.rnn_forward(**a)


def test_backward_checks_incoming_gradients():
    a = layer_args("lstm", 4, 3, 5, 6)
    saved = K.lstm_forward(**a)[-1]
    with pytest.raises(ValueError, match=r"dy must have shape \(T, B, H\) = \(4, 3, 6\)"):
        K.lstm_backward(np.zeros((4, 3, 5)), None, None, saved)
    with pytest.raises(TypeError, match=r"dc_n has dtype float32"):
        K.lstm_backward(None, None, np.zeros((3, 6), np.float32), saved)


dims = st.integers(min_value=0, max_value=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=dims, B=dims, I=dims, H=dims, kind=st.sampled_from(["lstm", "rnn"]),
       dtype=st.sampled_from([np.float32, np.float64]), bias=st.booleans(),
       wrong=st.sampled_from([None, "x", "h0", "W_ih", "W_hh"]), data=st.data())
def test_random_shapes_give_a_result_or_a_clear_error(T, B, I, H, kind, dtype, bias, wrong, data):
    """Any shape either runs and matches the reference, or raises ValueError/TypeError that
    names an argument; never a crash, never an unexplained exception."""
    a = layer_args(kind, T, B, I, H, dtype=dtype, bias=bias, seed=T * 7 + B)
    if wrong is not None:
        shape = list(a[wrong].shape)
        axis = data.draw(st.integers(0, len(shape) - 1))
        shape[axis] = data.draw(st.integers(0, 7))
        a[wrong] = np.zeros(shape, dtype=dtype)
    fwd = K.lstm_forward if kind == "lstm" else K.rnn_forward
    ref = R.lstm_forward if kind == "lstm" else R.rnn_forward
    try:
        out = fwd(**a)
    except (ValueError, TypeError) as exc:
        assert str(exc).split()[0] in a, f"error does not start with an argument name: {exc}"
        with pytest.raises(type(exc)):
            ref(**a)
        return
    expected = ref(**a)
    np.testing.assert_allclose(out[0], expected[0], rtol=1e-4, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(min_value=-1e4, max_value=1e4), min_size=1, max_size=64),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_sigmoid_never_overflows(values, dtype):
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = R.sigmoid(np.array(values, dtype=dtype))
    assert np.all((s >= 0) & (s <= 1))
