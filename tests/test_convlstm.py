"""ConvLSTM: the module against the NumPy reference step, finite-difference gradients,
shapes, stateful use in chunks, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close

from lstmkit import reference as R
from lstmkit.nn import ConvLSTM


def _reference_sequence(m: ConvLSTM, x: np.ndarray) -> tuple[np.ndarray, list]:
    """Run the module's weights through reference.convlstm_step_forward, layer by layer."""
    T, B, _, Hh, Ww = x.shape
    state = []
    for k, ch in enumerate(m.hidden_channels):
        W = getattr(m, f"weight_l{k}").detach().double().numpy()
        b = getattr(m, f"bias_l{k}")
        b = None if b is None else b.detach().double().numpy()
        p = getattr(m, f"peephole_l{k}")
        p = None if p is None else np.broadcast_to(p.detach().double().numpy(), (3, ch, Hh, Ww)).copy()
        h = c = np.zeros((B, ch, Hh, Ww))
        outs = []
        for t in range(T):
            h, c = R.convlstm_step_forward(x[t], h, c, W, b, p)
            outs.append(h)
        x = np.stack(outs)
        state.append((h, c))
    return x, state


@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("kernel_size", [1, 3, [5, 3]])
def test_module_matches_reference(peephole, kernel_size):
    torch.manual_seed(0)
    m = ConvLSTM(2, [3, 4], kernel_size, num_layers=2, peephole=peephole).double()
    if peephole:  # non-zero peepholes, so that they are actually tested
        for k in range(2):
            torch.nn.init.normal_(getattr(m, f"peephole_l{k}"), std=0.5)
    x = torch.randn(4, 2, 2, 6, 5, dtype=torch.float64)
    y, state = m(x)
    y_ref, state_ref = _reference_sequence(m, x.numpy())
    assert y.shape == (4, 2, 4, 6, 5)  # padding keeps the 6 x 5 frame
    assert_close(y.detach().numpy(), y_ref, 1e-12, "output")
    for (h, c), (h_ref, c_ref) in zip(state, state_ref):
        assert_close(h.detach().numpy(), h_ref, 1e-12, "h_n")
        assert_close(c.detach().numpy(), c_ref, 1e-12, "c_n")


@pytest.mark.parametrize("peephole", [False, True])
def test_gradients_by_finite_differences(peephole):
    torch.manual_seed(1)
    m = ConvLSTM(1, 2, 3, peephole=peephole).double()
    if peephole:
        torch.nn.init.normal_(m.peephole_l0, std=0.5)
    x = torch.randn(3, 1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    names, params = zip(*m.named_parameters())

    def f(x, h0, c0, *ps):
        y, [(h, c)] = torch.func.functional_call(m, dict(zip(names, ps)), (x, [(h0, c0)]))
        return y.sum() + (h * 0.3).sum() + (c * 0.7).sum()

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-6)


def test_batch_first_and_chunks_equal_one_long_sequence():
    torch.manual_seed(2)
    m = ConvLSTM(3, [4, 2], 3, num_layers=2, batch_first=True)
    x = torch.randn(2, 6, 3, 8, 8)
    y, state = m(x)
    assert y.shape == (2, 6, 2, 8, 8)
    assert len(state) == 2 and state[0][0].shape == (2, 4, 8, 8)
    y1, s1 = m(x[:, :4])
    y2, s2 = m(x[:, 4:], s1)  # stateful: the returned state goes straight back in
    assert_close(torch.cat([y1, y2], 1).detach().numpy(), y.detach().numpy(), 1e-6, "chunked")
    assert_close(s2[1][1].detach().numpy(), state[1][1].detach().numpy(), 1e-6, "c_n")


def test_parameter_shapes_and_names():
    m = ConvLSTM(3, 8, 5, bias=True, peephole=True)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {"weight_l0": (32, 11, 5, 5), "bias_l0": (32,), "peephole_l0": (3, 8, 1, 1)}
    assert [n for n, _ in ConvLSTM(3, 8, 5, bias=False).named_parameters()] == ["weight_l0"]


@pytest.mark.parametrize("make,call,match", [
    (lambda: ConvLSTM(3, 4, 3), lambda m: m(torch.randn(2, 1, 2, 8, 8)), r"input must have 3 channels"),
    (lambda: ConvLSTM(3, 4, 3), lambda m: m(torch.randn(2, 3, 8, 8)), r"input must have shape \(T, B"),
    (lambda: ConvLSTM(3, 4, 2), None, r"kernel_size must be odd"),
    (lambda: ConvLSTM(3, [4, 4], 3, num_layers=3), None, r"hidden_channels must be .* list of 3"),
    (lambda: ConvLSTM(3, 4, 3), lambda m: m(torch.randn(2, 1, 3, 8, 8), [(torch.zeros(1, 4, 7, 8),) * 2]),
     r"hx\[0\] h must have shape \(B, C_h, Hh, Ww\) = \(1, 4, 8, 8\)"),
    (lambda: ConvLSTM(3, 4, 3), lambda m: m(torch.randn(2, 1, 3, 8, 8), torch.zeros(1, 4, 8, 8)),
     r"hx must be a list of 1 \(h, c\) pairs"),
])
def test_bad_input_gets_a_clear_error(make, call, match):
    with pytest.raises(ValueError, match=match):
        m = make()
        call(m)
