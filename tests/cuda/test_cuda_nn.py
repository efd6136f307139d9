"""lstmkit.nn with backend="cuda": the modules on the CUDA kernels agree with torch.nn.

Runs under the simulator in CI (CPU tensors go through NumPy to the simulated device) and on
a real GPU with CUDA tensors (zero-copy through __cuda_array_interface__)."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

import lstmkit.nn as lnn

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# 1-3 layers x bidirectional x batch_first x hx given x bias: 20 of the 48 combinations.
ALL = list(itertools.product([1, 2, 3], [False, True], [False, True], [False, True], [True, False]))
CONFIGS = random.Random(1).sample(ALL, 20)
# The simulator runs each GPU thread as a Python thread, so these are kept tiny, and the RNN
# (which shares all of the LSTM's wiring in lstmkit.nn) takes 4 of the configurations.
CASES = [("lstm", *c) for c in CONFIGS] + [("rnn", *c) for c in CONFIGS[:4]]


def _run(module, x, hx):
    x = x.clone().requires_grad_()
    hx = None if hx is None else tuple(h.clone().requires_grad_() for h in hx)
    out, state = module(x, hx if hx is None or len(hx) == 2 else hx[0])
    state = state if isinstance(state, tuple) else (state,)
    loss = (out * torch.linspace(-1, 1, out.numel(), device=x.device).view_as(out)).sum()
    loss = loss + sum((s ** 2).sum() for s in state)
    return [out, *state], torch.autograd.grad(loss, [x, *(hx or ()), *module.parameters()])


@pytest.mark.parametrize("kind,layers,bidir,batch_first,with_hx,bias", CASES)
def test_modules_on_cuda_backend_match_torch(kind, layers, bidir, batch_first, with_hx, bias):
    torch.manual_seed(layers + bidir)
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first, bias=bias)
    ours = (lnn.LSTM if kind == "lstm" else lnn.RNN)(3, 5, backend="cuda", **kw).to(DEVICE)
    theirs = (torch.nn.LSTM if kind == "lstm" else torch.nn.RNN)(3, 5, **kw).to(DEVICE)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 2, 3, device=DEVICE)
    shape = (layers * (2 if bidir else 1), 2, 5)
    n_states = 2 if kind == "lstm" else 1
    hx = tuple(torch.randn(shape, device=DEVICE) for _ in range(n_states)) if with_hx else None
    outs, grads = _run(ours, x, hx)
    ref_outs, ref_grads = _run(theirs, x, hx)
    for a, b in zip(outs, ref_outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_backend_auto_picks_cuda_for_cuda_tensors():
    from lstmkit.functional import resolve_backend

    if DEVICE == "cuda":
        assert resolve_backend("auto", torch.zeros(1, device="cuda")) == "cuda"
    assert resolve_backend("auto", torch.zeros(1)) == "numba"


@pytest.mark.parametrize("peephole", [False, True])
def test_convlstm_cuda_gates_match_torch_ops(peephole):
    torch.manual_seed(3)
    ours = lnn.ConvLSTM(2, 3, 3, peephole=peephole, backend="cuda").to(DEVICE)
    theirs = lnn.ConvLSTM(2, 3, 3, peephole=peephole, backend="torch").to(DEVICE)
    if peephole:
        torch.nn.init.normal_(ours.peephole_l0, std=0.5)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 1, 2, 5, 4, device=DEVICE)
    for m in (ours, theirs):
        m.y, [(m.h, m.c)] = m(x)
        m.grads = torch.autograd.grad((m.y ** 2).sum() + m.c.sum(), list(m.parameters()))
    torch.testing.assert_close(ours.y, theirs.y, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.c, theirs.c, rtol=1e-4, atol=1e-5)
    for a, b in zip(ours.grads, theirs.grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_nan_weight_is_named_by_the_module_on_the_cuda_backend_too():
    m = lnn.LSTM(3, 4, num_layers=2, backend="cuda").to(DEVICE)
    with torch.no_grad():
        m.weight_hh_l1.view(-1)[2] = float("nan")
    x = torch.randn(4, 2, 3, device=DEVICE)
    if DEVICE == "cpu":  # host arrays (the simulator) are checked before they reach a kernel
        with pytest.raises(ValueError, match="^weight_hh_l1 contains NaN or inf: training has probably"):
            m(x)
    else:  # device arrays are not copied back to be checked: the NaN reaches the output, as in torch
        assert torch.isnan(m(x)[0]).any()
