"""lstmkit.viz: every figure has a title and labelled axes, takes an ``ax``, and stays light."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lstmkit import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def png_bytes(fig) -> int:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return len(buf.getvalue())


def assert_labelled(ax, *, title=True):
    if title:
        assert ax.get_title(), "axes without a title"
    assert ax.get_xlabel(), "x axis without a label"
    assert ax.get_ylabel(), "y axis without a label"


RNG = np.random.default_rng(0)


def test_gradient_norm_curves():
    curves = {"r = 0.5": 0.5 ** np.arange(50), "with zeros": np.r_[1.0, 0.0, 0.1]}
    fig = viz.gradient_norm_curves(curves, bounds={"r = 0.5": 0.5})
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert_labelled(ax)
    assert ax.get_yscale() == "log"
    assert len(ax.lines) == 3  # two curves and one bound
    np.testing.assert_allclose(ax.lines[1].get_ydata(), 0.5 ** np.arange(50))
    assert np.isnan(ax.lines[2].get_ydata()[1])  # a zero is left out of a log plot


def test_metric_vs_lag_marks_the_baseline():
    fig = viz.metric_vs_lag([5, 20, 50, 100], {"RNN": [1, 0.5, 0.25, 0.25], "LSTM": [1, 1, 1, 1]},
                            baseline=0.25)
    ax = fig.axes[0]
    assert_labelled(ax)
    assert len(ax.lines) == 3
    assert ax.lines[-1].get_ydata()[0] == 0.25
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("chance" in s for s in labels)


def test_loss_curves_smoothing_and_divergence():
    losses = np.r_[np.linspace(1, 0.1, 100), np.inf, np.nan]
    fig = viz.loss_curves({"run": losses}, smooth=10, logy=True, baseline=0.167)
    ax = fig.axes[0]
    assert_labelled(ax)
    assert ax.get_yscale() == "log"
    assert len(ax.lines[0].get_xdata()) == len(losses) - 9
    one = viz.loss_curves([3.0, 2.0, 1.0], ylabel="MSE").axes[0]  # one run, no dict needed
    assert [t.get_text() for t in one.get_legend().get_texts()] == ["MSE"]
    np.testing.assert_array_equal(one.lines[0].get_ydata(), [3, 2, 1])


def test_gate_heatmaps():
    gates = {"input i": RNG.random((30, 6)), "forget f": RNG.random((30, 6)),
             "cell c": RNG.standard_normal((30, 6))}
    fig = viz.gate_heatmaps(gates, inputs=RNG.random((30, 2)), input_labels=["v", "m"],
                            marks=[3, 20], unit_labels=[4, 8, 15, 16, 23, 42])
    main = [ax for ax in fig.axes if ax.get_ylabel()]
    assert len(main) == 4  # the input panel and three heatmaps (the others are colour bars)
    assert main[0].get_title()
    assert main[-1].get_xlabel() == "time step t"
    assert len(main[0].lines) == 2 + 2  # two inputs and two marks
    assert [t.get_text() for t in main[1].get_yticklabels()] == ["4", "8", "15", "16", "23", "42"]
    vmin, vmax = main[-1].images[0].get_clim()
    assert vmin < 0 < vmax and vmin == -vmax  # the cell state gets a symmetric scale
    assert main[1].images[0].get_clim() == (0, 1)


def test_lstm_trace_and_draw():
    T = 20
    trace = {"x": np.zeros((T, 2)), "c": np.linspace(0, 1, T), "h": np.linspace(0, 0.5, T),
             **{k: np.full(T, 0.5) for k in "ifo"}}
    fig = viz.lstm_trace(trace)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_title()
    for ax in fig.axes:
        assert ax.get_ylabel()
    assert fig.axes[-1].get_xlabel()
    fig2, axes = viz.new_figure(3, 1, pyplot=False)
    lines = viz.draw_lstm_trace(axes, trace)
    assert len(lines) == 2 + 3 + 2
    assert fig2 not in map(plt.figure, plt.get_fignums())  # not registered with pyplot


def test_show_frames():
    frames = RNG.random((12, 16, 16))
    fig = viz.show_frames(frames, n=6)
    assert len(fig.axes) == 6
    assert fig._suptitle is not None and fig._suptitle.get_text()
    assert [ax.get_xlabel() for ax in fig.axes] == [f"t = {t}" for t in (0, 2, 4, 7, 9, 11)]
    assert fig.axes[0].get_ylabel()
    one_channel = viz.show_frames(frames[:, None], n=6)  # (T, 1, H, W), as a ConvLSTM takes it
    np.testing.assert_array_equal(one_channel.axes[2].images[0].get_array(), frames[4])
    for bad in (frames[0], frames[:0]):
        with pytest.raises(ValueError, match=r"frames must be a clip of shape \(T, H, W\)"):
            viz.show_frames(bad)


def test_time_series_forecast_and_bar_chart():
    fig = viz.time_series({"a": RNG.random(30), "b": RNG.random(30)})
    assert_labelled(fig.axes[0])
    assert len(fig.axes[0].lines) == 2
    fig = viz.time_series(RNG.random(30))
    assert fig.axes[0].get_legend() is None
    fig = viz.forecast(RNG.random(40), {"model": RNG.random(40)}, start=100)
    assert_labelled(fig.axes[0])
    assert fig.axes[0].lines[0].get_xdata()[0] == 100
    fig = viz.bar_chart({"numpy": 10.0, "numba": 2.0}, xlabel="backend", ylabel="ms",
                        title="time")
    assert_labelled(fig.axes[0])
    assert len(fig.axes[0].patches) == 2


def test_drawing_on_a_given_axes():
    fig, (a1, a2) = viz.new_figure(1, 2)
    assert viz.loss_curves({"x": [1, 2, 3]}, ax=a1) is fig
    assert viz.gradient_norm_curves({"x": [1, 0.5]}, ax=a2) is fig
    assert len(a1.lines) == 1 and len(a2.lines) == 1


def test_figures_are_small():
    fig = viz.loss_curves({"noisy loss": RNG.random(1000)})
    w, h = fig.get_size_inches()
    assert w <= 7 and h <= 4 and fig.dpi <= 100
    assert png_bytes(fig) < 60_000
    gates = {k: RNG.random((100, 8)) for k in ("input i", "forget f", "output o")}
    gates["cell c"] = np.cumsum(RNG.standard_normal((100, 8)), axis=0) / 10
    fig = viz.gate_heatmaps(gates, inputs=RNG.random((100, 2)), marks=[8, 88])
    assert png_bytes(fig) < 60_000
