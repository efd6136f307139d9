"""lstmkit.nn against torch.nn: outputs, final states and every gradient, on random
configurations, for each CPU backend; plus the module API (state_dict, cells, errors)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from conftest import assert_close

import lstmkit.nn as lnn

# 1-3 layers x bidirectional x batch_first x hx given x bias: 48 combinations, 24 sampled.
ALL = list(itertools.product([1, 2, 3], [False, True], [False, True], [False, True], [True, False]))
CONFIGS = random.Random(0).sample(ALL, 24)
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def pair(kind: str, backend: str, layers, bidir, batch_first, bias, dtype, I=5, H=6):
    """An lstmkit module and a torch module with the same weights."""
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first, bias=bias)
    ours = (lnn.LSTM if kind == "lstm" else lnn.RNN)(I, H, backend=backend, **kw).to(dtype)
    theirs = (torch.nn.LSTM if kind == "lstm" else torch.nn.RNN)(I, H, **kw).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def run(module, x, hx, up):
    """Forward, a loss that touches every output, and all gradients."""
    x = x.clone().requires_grad_()
    hx = None if hx is None else tuple(h.clone().requires_grad_() for h in hx)
    out, state = module(x, hx if hx is None or len(hx) == 2 else hx[0])
    state = state if isinstance(state, tuple) else (state,)
    loss = (out * up[0]).sum() + sum((s * u).sum() for s, u in zip(state, up[1:]))
    inputs = [x, *(hx or ()), *module.parameters()]
    return [out, *state], torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("layers,bidir,batch_first,with_hx,bias", CONFIGS)
def test_parity_with_torch(backend, kind, layers, bidir, batch_first, with_hx, bias):
    dtype = torch.float64 if (layers + bidir) % 2 else torch.float32  # both dtypes, half each
    torch.manual_seed(layers * 16 + bidir * 8 + batch_first * 4 + with_hx * 2 + bias)
    ours, theirs = pair(kind, backend, layers, bidir, batch_first, bias, dtype)
    T, B, D = 7, 3, 2 if bidir else 1
    x = torch.randn((B, T, 5) if batch_first else (T, B, 5), dtype=dtype)
    n_states = 2 if kind == "lstm" else 1
    hx = tuple(torch.randn(layers * D, B, 6, dtype=dtype) for _ in range(n_states)) if with_hx else None
    y_shape = (B, T, D * 6) if batch_first else (T, B, D * 6)
    up = [torch.randn(y_shape, dtype=dtype)] + [torch.randn(layers * D, B, 6, dtype=dtype)
                                               for _ in range(n_states)]
    outs, grads = run(ours, x, hx, up)
    ref_outs, ref_grads = run(theirs, x, hx, up)
    for k, (a, b) in enumerate(zip(outs, ref_outs)):
        assert a.dtype == dtype
        assert_close(a.detach().numpy(), b.detach().numpy(), TOL[dtype], f"output {k}")
    names = ["input"] + ([f"hx{k}" for k in range(n_states)] if with_hx else []) + [
        n for n, _ in ours.named_parameters()]
    assert len(grads) == len(ref_grads) == len(names)
    for name, a, b in zip(names, grads, ref_grads):
        assert_close(a.numpy(), b.numpy(), TOL[dtype], f"grad of {name}")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_cells_match_torch(backend):
    torch.manual_seed(0)
    for ours_cls, theirs_cls in [(lnn.LSTMCell, torch.nn.LSTMCell), (lnn.RNNCell, torch.nn.RNNCell)]:
        ours = ours_cls(4, 3, backend=backend).double()
        theirs = theirs_cls(4, 3).double()
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
        for unbatched in (False, True):
            xi = x[0] if unbatched else x
            a, b = ours(xi), theirs(xi)
            a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
            for u, v in zip(a, b):
                assert_close(u.detach().numpy(), v.detach().numpy(), 1e-12, ours_cls.__name__)
            ga = torch.autograd.grad(sum(u.sum() for u in a), [x, *ours.parameters()])
            gb = torch.autograd.grad(sum(v.sum() for v in b), [x, *theirs.parameters()])
            for u, v in zip(ga, gb):
                assert_close(u.numpy(), v.numpy(), 1e-12, "cell grad")


def test_state_dict_moves_both_ways():
    torch.manual_seed(1)
    ours = lnn.LSTM(3, 4, num_layers=2, bidirectional=True)
    theirs = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 2, 3)
    assert_close(ours(x)[0].detach().numpy(), theirs(x)[0].detach().numpy(), 1e-5, "y")


def test_unbatched_input_and_training_with_an_optimiser():
    torch.manual_seed(2)
    m = lnn.LSTM(2, 8, backend="numba")
    y, (h, c) = m(torch.randn(10, 2))
    assert y.shape == (10, 8) and h.shape == c.shape == (1, 8)
    head = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam([*m.parameters(), *head.parameters()], lr=0.05)
    x = torch.randn(20, 16, 2)
    target = x[:, :, :1].cumsum(0)[-1]  # the running sum of the first feature
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = ((head(m(x)[0][-1]) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(3)
    m = lnn.LSTM(3, 5, num_layers=2, dropout=0.5, backend="numba")
    x = torch.randn(6, 2, 3)
    m.eval()
    a, b = m(x)[0], m(x)[0]
    assert torch.equal(a, b)
    m.train()
    torch.manual_seed(4)
    c = m(x)[0]
    torch.manual_seed(5)
    d = m(x)[0]
    assert not torch.equal(c, d)


def test_backend_auto_uses_numba_on_cpu():
    from lstmkit.functional import resolve_backend

    assert resolve_backend("auto", torch.zeros(1)) == "numba"
    assert "backend='numba'" in repr(lnn.LSTM(2, 3, backend="numba"))


@pytest.mark.parametrize("call,err,match", [
    (lambda m: m(torch.randn(4, 2, 3)), ValueError, r"input must have 5 features"),
    (lambda m: m(torch.randn(4, 2, 3, 5)), ValueError, r"input must have shape \(L, N, input_size\)"),
    (lambda m: m(torch.randint(0, 3, (4, 2, 5))), TypeError, r"floating-point"),
    (lambda m: m(np.zeros((4, 2, 5))), TypeError, r"torch.Tensor"),
    (lambda m: m(torch.randn(4, 2, 5), (torch.zeros(1, 3, 6), torch.zeros(1, 2, 6))), ValueError,
     r"h_0 must have shape .* = \(1, 2, 6\), got \(1, 3, 6\)"),
    (lambda m: m(torch.randn(4, 2, 5), torch.zeros(1, 2, 6)), ValueError, r"tuple \(h_0, c_0\)"),
    (lambda m: m(torch.randn(4, 2, 5), (torch.zeros(1, 2, 6, dtype=torch.float64),) * 2), TypeError,
     r"dtype and device"),
    (lambda m: m(torch.randn(4, 2, 5, dtype=torch.float64)), TypeError,
     r"input has dtype torch.float64 but the module's parameters have torch.float32: "
     r".*input.to\(torch.float32\)"),
    (lambda m: m(torch.randn(4, 2, 5, device="meta")), TypeError,
     r"input is on meta but the module's parameters are on cpu"),
    (lambda m: m(torch.randn(4, 2, 5), (torch.full((1, 2, 6), float("inf")), torch.zeros(1, 2, 6))),
     ValueError, r"^h_0 contains NaN or inf$"),
])
def test_bad_input_gets_a_clear_error(call, err, match):
    with pytest.raises(err, match=match):
        call(lnn.LSTM(5, 6, backend="numba"))


@pytest.mark.parametrize("make,shape", [
    *[(lambda b=b: lnn.RNN(5, 6, backend=b), (4, 2, 5)) for b in ("numba", "numpy")],
    *[(lambda b=b: lnn.LSTMCell(5, 6, backend=b), (2, 5)) for b in ("numba", "numpy")],
    *[(lambda b=b: lnn.RNNCell(5, 6, backend=b), (2, 5)) for b in ("numba", "numpy")],
    *[(lambda b=b: lnn.ConvLSTM(5, 6, 3, backend=b), (4, 2, 5, 3, 3)) for b in ("auto", "torch")],
])
def test_an_input_of_another_dtype_than_the_module_is_named_in_the_modules_terms(make, shape):
    """The usual slip: a tensor made from a NumPy array (float64) given to a float32 module."""
    m = make()
    with pytest.raises(TypeError, match=r"input has dtype torch.float64 but the module's parameters "
                                        r"have torch.float32"):
        m(torch.randn(shape, dtype=torch.float64))
    m.double()(torch.randn(shape, dtype=torch.float64))  # once the module is converted, it runs


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("make,where,shape,match", [
    (lambda b: lnn.LSTM(5, 6, num_layers=2, bidirectional=True, backend=b), "weight_hh_l1_reverse",
     (4, 2, 5), r"^weight_hh_l1_reverse contains NaN or inf: training has probably diverged .*clip_grad"),
    (lambda b: lnn.LSTM(5, 6, backend=b), "bias_ih_l0", (4, 2, 5), r"^bias_ih_l0 contains NaN or inf: "),
    (lambda b: lnn.RNN(5, 6, num_layers=2, backend=b), "weight_ih_l1", (4, 2, 5), r"^weight_ih_l1 contains"),
    (lambda b: lnn.LSTMCell(5, 6, backend=b), "weight_ih", (2, 5), r"^weight_ih contains NaN or inf: "),
    (lambda b: lnn.LSTM(5, 6, backend=b), "input", (4, 2, 5), r"^input contains NaN or inf$"),
    (lambda b: lnn.RNNCell(5, 6, backend=b), "input", (2, 5), r"^input contains NaN or inf$"),
    (lambda b: lambda x: lnn.RNNCell(5, 6, backend=b)(x, torch.full((2, 6), float("nan"))), "", (2, 5),
     r"^hx contains NaN or inf$"),
])
def test_a_nan_is_reported_under_the_modules_own_name_for_it(make, where, shape, match, backend):
    """What a learner meets when training diverges: the parameter that turned NaN, and what to do."""
    m, x = make(backend), torch.randn(shape)
    with torch.no_grad():
        if where:  # (otherwise make() put the NaN in a state)
            (x if where == "input" else getattr(m, where)).view(-1)[1] = float("nan")
    with pytest.raises(ValueError, match=match):
        m(x)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("kind,which,what", [("lstm", 0, "output"), ("rnn", 1, "final hidden state")])
def test_a_loss_that_overflowed_is_reported_in_the_terms_of_backward(kind, which, what, backend):
    m = (lnn.LSTM if kind == "lstm" else lnn.RNN)(5, 6, backend=backend)
    out = m(torch.randn(4, 2, 5))
    y = out[0] if which == 0 else out[1]
    with pytest.raises(ValueError, match=f"^the gradient reaching this {kind.upper()} layer's {what} "
                                         "contains NaN or inf: .*diverged"):
        (y.sum() * float("inf")).backward()


@pytest.mark.parametrize("call,match", [
    (lambda: lnn.LSTMCell(5, 6)(torch.randn(2, 5), (torch.zeros(2, 6, dtype=torch.float64),) * 2),
     r"h_0 must have the input's dtype and device \(torch.float32, cpu\)"),
    (lambda: lnn.RNNCell(5, 6)(torch.randn(2, 5), torch.zeros(2, 6, dtype=torch.float64)),
     r"hx must have the input's dtype"),
    (lambda: lnn.ConvLSTM(5, 6, 3)(torch.randn(4, 2, 5, 3, 3),
                                   [(torch.zeros(2, 6, 3, 3, dtype=torch.float64),) * 2]),
     r"hx\[0\] h must have the input's dtype"),
])
def test_states_of_another_dtype_than_the_input_get_a_clear_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="backend must be one of"):
        lnn.LSTM(2, 3, backend="fortran")
    with pytest.raises(ValueError, match="only available with backend='torch'"):
        lnn.RNN(2, 3, nonlinearity="relu")
    lnn.RNN(2, 3, nonlinearity="relu", backend="torch")  # torch's own path still offers it


def test_empty_sequence_returns_initial_state():
    m = lnn.LSTM(3, 4, backend="numba")
    h0, c0 = torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    y, (h, c) = m(torch.zeros(0, 2, 3), (h0, c0))
    assert y.shape == (0, 2, 4)
    assert torch.equal(h, h0) and torch.equal(c, c0)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
def test_the_default_initial_state_stays_zero_whatever_is_done_to_the_outputs(kind, backend, layers,
                                                                              bidir):
    """The zeros standing in for a missing hx are kept between calls (lstmkit.nn's _zeros):
    no output may share their memory, whatever the batch size, dtype or sequence length."""
    ours, theirs = pair(kind, backend, layers, bidir, False, True, torch.float32, I=3, H=4)
    for dtype, B, T in [(torch.float32, 2, 0), (torch.float32, 2, 5), (torch.float64, 2, 5),
                        (torch.float32, 3, 5), (torch.float32, 2, 5)]:
        ours.to(dtype)
        theirs.to(dtype)
        x = torch.randn(T, B, 3, dtype=dtype)
        with torch.no_grad():
            out, state = ours(x)
            got = [out, *(state if kind == "lstm" else [state])]
            if T:
                y, state = theirs(x)
                expected = [y, *(state if kind == "lstm" else [state])]
            else:  # (torch refuses an empty sequence) the final states are the initial zeros
                expected = [torch.zeros_like(g) for g in got]
            for g, want in zip(got, expected):
                assert_close(g, want, TOL[dtype])
                g.add_(1.0)  # the caller's to change


def test_set_forget_bias_sets_every_layer_and_direction_and_refuses_what_has_none():
    from lstmkit.training import set_forget_bias

    torch.manual_seed(0)
    m = lnn.LSTM(3, 4, num_layers=2, bidirectional=True, backend="numba")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    set_forget_bias(m, 2.5)
    for name, p in m.named_parameters():
        p, old = p.detach(), before[name]
        if name.startswith("bias"):  # the forget gate is [H:2H]; the other gates keep their values
            assert (p[4:8] == (2.5 if name.startswith("bias_ih") else 0)).all()
            assert torch.equal(p[:4], old[:4]) and torch.equal(p[8:], old[8:])
        else:
            assert torch.equal(p, old)
    cell = set_forget_bias(lnn.LSTMCell(3, 4), -1.0)
    assert (cell.bias_ih.detach()[4:8] == -1).all() and (cell.bias_hh.detach()[4:8] == 0).all()
    with pytest.raises(TypeError, match="must be an LSTM or LSTMCell"):
        set_forget_bias(torch.nn.Linear(3, 4), 1.0)
    with pytest.raises(ValueError, match="no biases"):
        set_forget_bias(lnn.LSTM(3, 4, bias=False), 1.0)
