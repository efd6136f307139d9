"""lstmkit.nn with backend="cuda": the modules on the CUDA kernels agree with torch.nn.

Runs under the simulator in CI (CPU tensors go through NumPy to the simulated device) and on
a real GPU with CUDA tensors (zero-copy through __cuda_array_interface__)."""

from __future__ import annotations

import pytest
import torch

import lstmkit.nn as lnn

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _run(module, x, hx):
    x = x.clone().requires_grad_()
    out, state = module(x, hx)
    state = state if isinstance(state, tuple) else (state,)
    loss = (out * torch.linspace(-1, 1, out.numel(), device=x.device).view_as(out)).sum()
    loss = loss + sum((s ** 2).sum() for s in state)
    return [out, *state], torch.autograd.grad(loss, [x, *module.parameters()])


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("layers,bidir,batch_first", [(1, False, False), (2, True, True)])
def test_modules_on_cuda_backend_match_torch(kind, layers, bidir, batch_first):
    torch.manual_seed(layers + bidir)
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first)
    ours = (lnn.LSTM if kind == "lstm" else lnn.RNN)(3, 5, backend="cuda", **kw).to(DEVICE)
    theirs = (torch.nn.LSTM if kind == "lstm" else torch.nn.RNN)(3, 5, **kw).to(DEVICE)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 3, device=DEVICE)
    outs, grads = _run(ours, x, None)
    ref_outs, ref_grads = _run(theirs, x, None)
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
