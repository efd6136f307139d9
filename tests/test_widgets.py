"""lstmkit.widgets: the measurements behind the explorers, and the explorers' callbacks.

Setting a slider's ``value`` runs its observers synchronously, with no browser: each test
changes a value and checks what the callback computed and drew (the figure's line data and
the PNG in the Output widget), never captured output.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lstmkit import widgets  # noqa: E402

# ---------------------------------------------------------------- measurements


def test_rnn_gradient_norms_shape_and_bound():
    for r in (0.5, 0.9, 1.5):
        n = widgets.rnn_gradient_norms(r, 60, hidden=16)
        assert n.shape == (60,)
        assert n[0] == pytest.approx(1.0)  # a unit gradient enters at the last step
        # tanh' <= 1 and every singular value of W_hh is r: the norm is at most r**k
        assert (n <= r ** np.arange(60) * (1 + 1e-9)).all()


def test_rnn_gradient_norms_vanish_and_explode():
    assert widgets.rnn_gradient_norms(0.5, 100)[-1] < 1e-20
    assert widgets.rnn_gradient_norms(2.0, 100, input_scale=0.1)[-1] > 1e3
    # saturating inputs shrink the gradient
    big = widgets.rnn_gradient_norms(1.5, 100, input_scale=2.0)[-1]
    small = widgets.rnn_gradient_norms(1.5, 100, input_scale=0.1)[-1]
    assert big < small


def test_rnn_gradient_norms_are_deterministic():
    np.testing.assert_array_equal(widgets.rnn_gradient_norms(0.9, 30, seed=4),
                                  widgets.rnn_gradient_norms(0.9, 30, seed=4))


def _unrolled_hidden_grad_norms(cell_kind, module, head, x, y):
    """||dL/dh_t|| by autograd through an explicit loop of torch cells sharing the weights."""
    H = module.hidden_size
    cell = (torch.nn.LSTMCell if cell_kind == "lstm" else torch.nn.RNNCell)(
        module.input_size, H).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(module, name + "_l0"))
    x = x.double()
    h = torch.zeros(x.shape[0], H, dtype=torch.float64)
    c = torch.zeros_like(h)
    hs = []
    for t in range(x.shape[1]):
        if cell_kind == "lstm":
            h, c = cell(x[:, t], (h, c))
        else:
            h = cell(x[:, t], h)
        h.retain_grad()
        hs.append(h)
    loss = torch.nn.functional.cross_entropy(head.double()(h), y)
    loss.backward()
    return np.array([hs[t].grad.norm().item() for t in reversed(range(len(hs)))])


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_gradient_norms_match_autograd(kind):
    torch.manual_seed(0)
    module = (torch.nn.LSTM if kind == "lstm" else torch.nn.RNN)(5, 7, batch_first=True)
    head = torch.nn.Linear(7, 3)
    x = torch.randn(4, 12, 5)
    y = torch.tensor([0, 1, 2, 1])
    norms = widgets.gradient_norms(module, head, torch.nn.functional.cross_entropy, x, y)
    expected = _unrolled_hidden_grad_norms(kind, module, head, x, y)
    assert norms.shape == (12,)
    np.testing.assert_allclose(norms, expected, rtol=1e-4)


def test_gradient_norms_time_major_module():
    torch.manual_seed(1)
    module = torch.nn.RNN(3, 4)  # (T, N, I) layout
    head = torch.nn.Linear(4, 2)
    x = torch.randn(6, 2, 3)
    y = torch.tensor([0, 1])
    norms = widgets.gradient_norms(module, head, torch.nn.functional.cross_entropy, x, y)
    expected = _unrolled_hidden_grad_norms("rnn", module, head, x.transpose(0, 1), y)
    np.testing.assert_allclose(norms, expected, rtol=1e-4)


def test_gradient_norms_reject_stacked_layers():
    module = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    with pytest.raises(ValueError):
        widgets.gradient_norms(module, torch.nn.Linear(4, 2), torch.nn.functional.cross_entropy,
                               torch.randn(2, 5, 3), torch.tensor([0, 1]))


def test_lstm_gate_trace_matches_the_module():
    torch.manual_seed(2)
    lstm = torch.nn.LSTM(3, 5, batch_first=True)
    x = torch.randn(2, 9, 3)
    tr = widgets.lstm_gate_trace(lstm, x)
    assert set(tr) == set("ifgoch")
    for v in tr.values():
        assert v.shape == (2, 9, 5)
    out, (h_n, c_n) = lstm(x)
    np.testing.assert_allclose(tr["h"], out.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(tr["c"][:, -1], c_n[0].detach().numpy(), atol=1e-5)
    for k in "ifo":
        assert ((tr[k] > 0) & (tr[k] < 1)).all()
    # the cached gates are the ones the equations use
    c_prev = np.concatenate([np.zeros((2, 1, 5)), tr["c"][:, :-1]], axis=1)
    np.testing.assert_allclose(tr["c"], tr["f"] * c_prev + tr["i"] * tr["g"], atol=1e-12)
    np.testing.assert_allclose(tr["h"], tr["o"] * np.tanh(tr["c"]), atol=1e-12)


def test_lstm_gate_trace_from_arrays():
    rng = np.random.default_rng(0)
    W_ih, W_hh = rng.standard_normal((8, 1)), rng.standard_normal((8, 2))
    tr = widgets.lstm_gate_trace((W_ih, W_hh, None, None), rng.standard_normal((3, 4, 1)))
    assert tr["h"].shape == (3, 4, 2)


def test_gate_explorer_run_stores_and_reveals():
    run = widgets.gate_explorer_run()
    assert run["x"].shape == (40, 2) and run["c"].shape == (40,)
    assert run["c"][5] == pytest.approx(np.tanh(2) / (1 + np.exp(-4)), rel=1e-6)  # i * g at the write
    assert run["h"][30] > 0.5  # revealed at the read cue
    assert run["h"][29] < 0.02 and run["h"][31] < 0.02  # and hidden around it
    assert widgets.gate_explorer_run(forget_bias=0.0)["h"][30] < 1e-6  # forgotten
    assert abs(widgets.gate_explorer_run(write_weight=0.0)["c"]).max() < 0.05  # never written
    leaky = widgets.gate_explorer_run(output_bias=4.0)
    assert leaky["h"][15] > 0.3  # the output valve is always open


# ------------------------------------------------------------------- explorers


def _png(explorer) -> str:
    (output,) = explorer.out.outputs
    assert output["output_type"] == "display_data"
    return output["data"]["image/png"]


def test_gradient_norm_explorer_updates_on_slider_changes():
    e = widgets.GradientNormExplorer(radius=0.9, length=50, hidden=8)
    png0, norms0 = _png(e), e.norms.copy()
    assert len(norms0) == 50
    np.testing.assert_allclose(e._curve.get_ydata(), norms0)

    e.controls["radius"].value = 1.5
    assert not np.allclose(e.norms, norms0)
    np.testing.assert_allclose(e._curve.get_ydata(), e.norms)
    np.testing.assert_allclose(e._bound.get_ydata(), 1.5 ** np.arange(50))
    assert "1.50" in e.ax.get_title()
    assert _png(e) != png0

    e.controls["length"].value = 120
    assert e.norms.shape == (120,) and len(e._curve.get_xdata()) == 120
    assert e.ax.get_xlim()[1] == 119

    before = e.norms.copy()
    e.controls["input_scale"].value = 1.5
    assert not np.allclose(e.norms, before)


def test_gradient_norm_explorer_is_a_widget():
    e = widgets.GradientNormExplorer(length=20, hidden=4)
    bundle = e._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert e.ax.get_xlabel() and e.ax.get_ylabel() and e.ax.get_title()


def test_gate_explorer_updates_on_slider_changes():
    e = widgets.GateExplorer()
    png0 = _png(e)
    h_read = e.trace["h"][30]
    assert h_read > 0.5
    e.controls["forget_bias"].value = 0.0
    assert e.trace["h"][30] < 1e-6
    np.testing.assert_allclose(e._lines["c"].get_ydata(), e.trace["c"])
    np.testing.assert_allclose(e._lines["f"].get_ydata(), 0.5)
    assert "0.00" in e.fig.axes[0].get_title()
    assert _png(e) != png0

    e.controls["output_bias"].value = 4.0
    np.testing.assert_allclose(e._lines["o"].get_ydata(), e.trace["o"])
    e.controls["write_weight"].value = 0.0
    assert abs(e.trace["c"]).max() < 0.05
    e.controls["read_weight"].value = 2.0
    e.controls["input_bias"].value = 2.0
    np.testing.assert_allclose(e._lines["i"].get_ydata(), e.trace["i"])


def test_gate_explorer_initial_values():
    e = widgets.GateExplorer(forget_bias=6.0, T=20, write_at=2, read_at=15)
    assert e.controls["forget_bias"].value == 6.0
    assert len(e.trace["c"]) == 20
    assert e.trace["h"][15] > 0.5


def test_importing_the_module_makes_no_widget():
    """A widget made at import would belong to every kernel that imports lstmkit.widgets, and a
    notebook executed there would store its state with no output to show it (checked in a fresh
    process, where no test has made one yet)."""
    import subprocess
    import sys

    code = ("import ipywidgets.widgets.widget as w; before = len(w._instances); "
            "import lstmkit.widgets; print(before, len(w._instances))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "0"]


def test_each_slider_has_a_layout_of_its_own():
    explorer = widgets.GradientNormExplorer()
    layouts = [slider.layout for slider in explorer.controls.values()]
    assert len({id(layout) for layout in layouts}) == len(layouts)
    assert all(layout.width == "300px" for layout in layouts)
