"""Matplotlib figures for the lessons.

Every function draws one kind of figure, gives it a title and labelled axes, and returns the
``Figure``. Functions that draw on a single set of axes take an optional ``ax`` (draw there,
e.g. in a panel of your own figure) and otherwise create a small figure with
``matplotlib.pyplot``, so in a notebook with ``%matplotlib inline`` it shows once when the
cell ends: write ``fig = viz.loss_curves(...)`` (or ``_ = ...``) to avoid showing it twice.

Figures are small on purpose (about 6 x 3.5 inches at 80 dpi), which keeps the executed
notebooks light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "FIGSIZE",
    "DPI",
    "new_figure",
    "gradient_norm_curves",
    "metric_vs_lag",
    "loss_curves",
    "gate_heatmaps",
    "lstm_trace",
    "draw_lstm_trace",
    "show_frames",
    "time_series",
    "forecast",
    "bar_chart",
]

FIGSIZE = (6.0, 3.5)
DPI = 80


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize=None, pyplot: bool = True, **kw):
    """A small figure and its axes (``plt.subplots`` with the course's size and dpi).

    With ``pyplot=False`` the figure is not registered with pyplot: it is never shown
    automatically, which is what a widget that redraws one figure needs.
    """
    figsize = figsize or FIGSIZE
    if pyplot:
        return plt.subplots(nrows, ncols, figsize=figsize, dpi=DPI, **kw)
    fig = Figure(figsize=figsize, dpi=DPI)
    axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = new_figure()
    return fig, ax


def _finish(fig: Figure) -> Figure:
    fig.tight_layout()
    return fig


def gradient_norm_curves(curves: Mapping[str, np.ndarray], *, bounds: Mapping[str, float] | None
                         = None, title: str = "Gradient norm against distance to the loss",
                         ax: Axes | None = None) -> Figure:
    """||dL/dh_t|| against the distance k = T - t between step t and the loss, log scale.

    curves: label -> 1-D array whose entry k is the norm k steps before the loss (entry 0 is
    the last step), e.g. ``reference.rnn_backward(...)["dh_norms"][::-1]``.
    bounds: optional label -> r; draws the geometric bound curve[0] * r**k dashed in the
    same colour (r = the recurrent matrix's largest singular value, when tanh' <= 1).
    """
    fig, ax = _axes(ax)
    for label, norms in curves.items():
        norms = np.asarray(norms, dtype=np.float64)
        k = np.arange(len(norms))
        shown = np.where(norms > 0, norms, np.nan)  # log scale: leave exact zeros out
        (line,) = ax.plot(k, shown, label=label)
        if bounds and label in bounds:
            r = float(bounds[label])
            ax.plot(k, norms[0] * r**k, ls="--", lw=1, color=line.get_color(), label=f"bound {r:g}$^k$")
    ax.set_yscale("log")
    ax.set_xlabel("distance to the loss, k = T - t (steps)")
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$")
    ax.set_title(title)
    if curves:
        ax.legend(fontsize="small")
    return _finish(fig)


def metric_vs_lag(lags: Sequence[int], results: Mapping[str, Sequence[float]], *,
                  baseline: float | None = None, baseline_label: str = "chance",
                  ylabel: str = "test accuracy", title: str = "Final score against lag",
                  ax: Axes | None = None) -> Figure:
    """One line per model: a score (accuracy or error) at each lag, with the baseline dashed."""
    fig, ax = _axes(ax)
    for (label, values), marker in zip(results.items(), "osD^v", strict=False):
        ax.plot(lags, values, marker=marker, label=label)
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls="--", lw=1, label=f"{baseline_label} ({baseline:.3g})")
    ax.set_xscale("log")
    ax.set_xticks(list(lags))
    ax.set_xticklabels([str(v) for v in lags])
    ax.minorticks_off()
    ax.set_xlabel("lag (steps between the fact and the question)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    return _finish(fig)


def loss_curves(histories: Mapping[str, Sequence[float]] | Sequence[float], *, baseline: float | None = None,
                baseline_label: str = "baseline", logy: bool = False, smooth: int = 1,
                xlabel: str = "training step", ylabel: str = "loss",
                title: str = "Training loss", ax: Axes | None = None) -> Figure:
    """Loss (or any metric) per training step, one line per run.

    histories: run label -> values (a plain sequence of values is one run, labelled by ylabel).
    smooth: average over a trailing window of this many steps (1 = raw). Non-finite values
    (a run that diverged) end the line there.
    """
    if not isinstance(histories, Mapping):
        histories = {ylabel: histories}
    fig, ax = _axes(ax)
    for label, values in histories.items():
        v = np.asarray(values, dtype=np.float64)
        if smooth > 1 and len(v) >= smooth:
            finite = np.isfinite(v)
            kernel = np.ones(smooth) / smooth
            v = np.convolve(np.where(finite, v, np.nan), kernel, mode="valid")
            steps = np.arange(smooth, smooth + len(v))
        else:
            steps = np.arange(1, len(v) + 1)
        ax.plot(steps, v, label=label)
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls="--", lw=1, label=f"{baseline_label} ({baseline:.3g})")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if histories or baseline is not None:
        ax.legend(fontsize="small")
    return _finish(fig)


def gate_heatmaps(gates: Mapping[str, np.ndarray], *, inputs: np.ndarray | None = None,
                  input_labels: Sequence[str] | None = None, marks: Sequence[int] = (),
                  unit_labels: Sequence | None = None, title: str = "Gate activations over time",
                  figsize=(6.5, 5.5)) -> Figure:
    """One heatmap per gate (rows: hidden units, columns: time steps), values in [0, 1].

    gates: name -> (T, H) array, e.g. ``{"input i": ..., "forget f": ..., "output o": ...}``;
    gates whose values leave [0, 1] (the candidate g, the cell c) get a symmetric colour scale.
    inputs: optional (T, I) array drawn as lines in a top panel; marks: time steps to mark
    with vertical lines in every panel (e.g. where the adding problem's markers are).
    unit_labels: optional names of the H rows (e.g. the unit numbers of a selection).
    """
    names = list(gates)
    n = len(names) + (inputs is not None)
    fig = plt.figure(figsize=figsize, dpi=72, layout="constrained")  # many pixels: keep it light
    grid = fig.add_gridspec(n, 2, width_ratios=[60, 1])
    axes: list[Axes] = []
    for r in range(n):
        axes.append(fig.add_subplot(grid[r, 0], sharex=axes[0] if axes else None))
    row = 0
    if inputs is not None:
        inputs = np.asarray(inputs)
        labels = input_labels or [f"input {j}" for j in range(inputs.shape[1])]
        for j in range(inputs.shape[1]):  # one value per time step: steps, centred on the cells
            axes[0].plot(np.arange(len(inputs)), inputs[:, j], label=labels[j], lw=1, drawstyle="steps-mid")
        axes[0].set_xlim(-0.5, len(inputs) - 0.5)
        lo, hi = float(np.nanmin(inputs)), float(np.nanmax(inputs))
        span = hi - lo or 1.0
        axes[0].set_ylim(lo - 0.08 * span, hi + 0.6 * span)  # headroom: the legend hides no input
        axes[0].set_ylabel("input")
        axes[0].legend(fontsize="x-small", loc="upper right", ncol=len(labels), frameon=False)
        row = 1
    for r, name in enumerate(names, start=row):
        ax = axes[r]
        a = np.asarray(gates[name]).T  # (H, T)
        if a.min() >= 0 and a.max() <= 1:
            im = ax.imshow(a, aspect="auto", cmap=plt.get_cmap("viridis", 20), vmin=0, vmax=1,
                           interpolation="nearest")
        else:
            m = float(np.abs(a).max()) or 1.0
            im = ax.imshow(a, aspect="auto", cmap=plt.get_cmap("RdBu_r", 20), vmin=-m, vmax=m,
                           interpolation="nearest")
        ax.set_ylabel(f"{name}\nunit", fontsize="small")
        if unit_labels is not None:
            ax.set_yticks(range(len(unit_labels)))
            ax.set_yticklabels([str(u) for u in unit_labels], fontsize=7)
        fig.colorbar(im, cax=fig.add_subplot(grid[r, 1]))
    for ax in axes:
        for t in marks:
            ax.axvline(t, color="red", lw=0.8, ls=":")
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("time step t")
    axes[0].set_title(title, fontsize="medium")
    return fig


def draw_lstm_trace(axes: Sequence[Axes], trace: Mapping[str, np.ndarray], *,
                    title: str = "One LSTM unit over time") -> list:
    """Draw a one-unit LSTM's run on three axes; return the line objects (to update later).

    trace: "x" (T, I) inputs, and "i", "f", "o", "c", "h" (T,) as from
    ``lstmkit.widgets.gate_explorer_run``. Panels: the inputs; the three gates (valves
    between 0 and 1); the cell state c and the output h.
    """
    ax_x, ax_g, ax_c = axes
    T = len(trace["c"])
    t = np.arange(T)
    x = np.asarray(trace["x"]).reshape(T, -1)
    names = trace.get("input_names") or [f"x{j}" for j in range(x.shape[1])]
    lines = [ax_x.step(t, x[:, j], where="mid", label=names[j])[0] for j in range(x.shape[1])]
    ax_x.set_ylabel("input")
    ax_x.set_ylim(-0.15, 1.25)
    ax_x.set_title(title)
    for key, label in (("i", "input gate i"), ("f", "forget gate f"), ("o", "output gate o")):
        lines.append(ax_g.plot(t, trace[key], label=label)[0])
    ax_g.set_ylim(-0.05, 1.05)
    ax_g.set_ylabel("gate value")
    lines.append(ax_c.plot(t, trace["c"], label="cell state c", lw=2)[0])
    lines.append(ax_c.plot(t, trace["h"], label="output h", ls="--")[0])
    ax_c.set_ylim(-1.1, 1.1)
    ax_c.axhline(0, color="grey", lw=0.5)
    ax_c.set_ylabel("state")
    ax_c.set_xlabel("time step t")
    for ax in axes:
        ax.legend(fontsize="x-small", loc="upper right", ncol=3)
    return lines


def lstm_trace(trace: Mapping[str, np.ndarray], *, title: str = "One LSTM unit over time",
               pyplot: bool = True) -> Figure:
    """A one-unit LSTM's inputs, gates, cell state and output over time (three panels)."""
    fig, axes = new_figure(3, 1, figsize=(6.0, 5.0), sharex=True, pyplot=pyplot)
    draw_lstm_trace(axes, trace, title=title)
    return _finish(fig)


def show_frames(frames: np.ndarray, *, n: int | None = None,
                title: str = "A short video: one frame per time step") -> Figure:
    """The frames of a (T, H, W) clip side by side, each labelled with its time step (a
    (T, 1, H, W) clip, one channel as a ConvLSTM takes it, is shown the same)."""
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[1] == 1:
        frames = frames[:, 0]
    if frames.ndim != 3 or len(frames) == 0:
        raise ValueError(f"frames must be a clip of shape (T, H, W) with T >= 1, got shape {frames.shape}")
    T = len(frames)
    n = min(n or T, T)
    idx = np.linspace(0, T - 1, n).round().astype(int)
    fig, axes = plt.subplots(1, n, figsize=(min(1.1 * n, 9.0), 1.7), dpi=DPI, squeeze=False,
                             layout="constrained")
    for ax, t in zip(axes[0], idx, strict=True):
        ax.imshow(frames[t], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"t = {t}", fontsize="small")
    axes[0, 0].set_ylabel("pixels (H x W)", fontsize="small")
    fig.suptitle(title, fontsize="medium")
    return fig


def time_series(series: Mapping[str, np.ndarray] | np.ndarray, *, xlabel: str = "time step t",
                ylabel: str = "value", title: str = "A time series",
                ax: Axes | None = None) -> Figure:
    """One or more 1-D series against time (a dict gives a legend)."""
    fig, ax = _axes(ax)
    if not isinstance(series, Mapping):
        series = {"": np.asarray(series)}
    for label, y in series.items():
        ax.plot(np.arange(len(y)), y, label=label or None, lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if any(series):
        ax.legend(fontsize="small")
    return _finish(fig)


def forecast(actual: np.ndarray, predicted: Mapping[str, np.ndarray], *, start: int = 0,
             xlabel: str = "time step t", ylabel: str = "value",
             title: str = "One-step-ahead forecast", ax: Axes | None = None) -> Figure:
    """The actual series (dots) against one or more forecasts (lines)."""
    fig, ax = _axes(ax)
    t = start + np.arange(len(actual))
    ax.plot(t, actual, ".", ms=3, color="black", label="actual")
    for label, y in predicted.items():
        ax.plot(start + np.arange(len(y)), y, label=label, lw=1.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    return _finish(fig)


def bar_chart(values: Mapping[str, float], *, ylabel: str, title: str, xlabel: str = "",
              fmt: str = "{:.3g}", logy: bool = False, ax: Axes | None = None) -> Figure:
    """Labelled bars with their values written on top (e.g. time per backend)."""
    fig, ax = _axes(ax)
    names = list(values)
    heights = [float(values[k]) for k in names]
    bars = ax.bar(names, heights, color=[f"C{j}" for j in range(len(names))])
    for bar, v in zip(bars, heights, strict=True):
        ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, v), ha="center",
                    va="bottom", fontsize="small")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _finish(fig)


# ==================================================================== lessons 04-06 plots

__all__ += ["curves_at", "frame_grid"]


def curves_at(x: Sequence[float], curves: Mapping[str, Sequence[float]], *, xlabel: str,
              ylabel: str, title: str, baseline: float | None = None,
              baseline_label: str = "chance", markers: bool = True, logx: bool = False,
              ax: Axes | None = None) -> Figure:
    """One line per run, all measured at the same x values (e.g. validation accuracy every 50
    training steps, or accuracy against a distance), with an optional baseline dashed."""
    fig, ax = _axes(ax)
    for (label, values), marker in zip(curves.items(), "osD^v<>p" * 4, strict=False):
        ax.plot(list(x), list(values), marker=marker if markers else None, ms=4, label=label)
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls="--", lw=1, label=f"{baseline_label} ({baseline:.3g})")
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x))
        ax.set_xticklabels([f"{v:g}" for v in x])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if curves or baseline is not None:
        ax.legend(fontsize="small")
    return _finish(fig)


def frame_grid(rows: Mapping[str, np.ndarray], *, title: str = "Predicted and true frames",
               first_step: int = 0, vmax: float = 1.0) -> Figure:
    """Image grid: one row per entry of ``rows`` (label -> (T, H, W) frames), one column per
    time step, e.g. ``{"true": ..., "predicted": ..., "copy last frame": ...}``. Columns are
    labelled ``t = first_step, first_step + 1, ...``; all rows share the grey scale 0 .. vmax."""
    labels = list(rows)
    if not labels:
        raise ValueError("rows must hold at least one row: label -> (T, H, W) frames")
    arrays = [np.asarray(rows[k]) for k in labels]
    T = len(arrays[0])
    if any(len(a) != T for a in arrays):
        raise ValueError("every row of frame_grid needs the same number of frames")
    fig, axes = plt.subplots(len(labels), T, figsize=(min(0.9 * T + 0.8, 9.0), 0.95 * len(labels) + 0.6),
                             dpi=DPI, squeeze=False, layout="constrained")
    for r, (label, frames) in enumerate(zip(labels, arrays, strict=True)):
        for t in range(T):
            ax = axes[r, t]
            ax.imshow(frames[t], cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == len(labels) - 1:
                ax.set_xlabel(f"t = {first_step + t}", fontsize="small")
        axes[r, 0].set_ylabel(label, fontsize="small")
    fig.suptitle(title, fontsize="medium")
    return fig


# ==================================================================== lessons 07-09 plots


def benchmark(result: Mapping, *, mode: str = "forward", batch: int | None = None,
              title: str | None = None, ax: Axes | None = None) -> Figure:
    """Time per sequence against hidden size, one line per backend: ``lstmkit.bench.run``'s result.

    result: the dict returned by ``bench.run`` (or read from ``lstmkit bench --json``); mode:
    "forward" or "train"; batch: one batch size, or None for every batch size in the result
    (then the line style tells the batch sizes apart). Both axes are logarithmic.
    """
    fig, ax = _axes(ax)
    rows = [r for r in result["rows"] if r["mode"] == mode and (batch is None or r["batch"] == batch)]
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    styles = ["-", "--", ":", "-."]
    for k, backend in enumerate(backends):
        for s, b in enumerate(batches):
            pts = sorted((r["hidden"], r["median_ms"]) for r in rows
                         if r["backend"] == backend and r["batch"] == b)
            if not pts:
                continue
            hs, ms = zip(*pts, strict=True)
            label = backend if len(batches) == 1 else f"{backend}, batch {b}"
            ax.plot(hs, ms, marker="o", ms=4, ls=styles[s % len(styles)], color=f"C{k}", label=label)
    hiddens = sorted({r["hidden"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(hiddens)
    ax.set_xticklabels([str(h) for h in hiddens])
    ax.minorticks_off()
    ax.set_xlabel("hidden size H (input size = H)")
    ax.set_ylabel("milliseconds per call (median)")
    T = rows[0]["seq_len"] if rows else "?"
    what = "forward" if mode == "forward" else "forward + backward"
    on = f", batch {batches[0]}" if len(batches) == 1 else ""
    ax.set_title(title or f"LSTM {what}, T = {T}{on}")
    if rows:
        ax.legend(fontsize="small")
    return _finish(fig)


def text_activation(text: str, values: Sequence[float], *, width: int = 64, max_lines: int = 8,
                    title: str = "One hidden unit over the text", label: str = "activation") -> Figure:
    """Characters on a grid, each cell coloured by the value a hidden unit had at that character.

    text: n characters; values: n numbers (e.g. one unit's h_t, in [-1, 1]). Lines break at
    the text's newlines (shown as a small arrow) and wrap at ``width`` characters; at most
    ``max_lines`` rows are drawn. Blue is negative, red positive.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(text):
        raise ValueError(f"need one value per character: {len(text)} characters, {len(values)} values")
    rows: list[list[tuple[str, float]]] = [[]]
    for ch, v in zip(text, values, strict=True):
        if len(rows[-1]) == width:
            rows.append([])
        rows[-1].append(("\u21b5" if ch == "\n" else ch, v))
        if ch == "\n":
            rows.append([])
    rows = [r for r in rows if r][:max_lines]
    grid = np.full((len(rows), width), np.nan)
    for r, row in enumerate(rows):
        grid[r, :len(row)] = [v for _, v in row]
    m = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    # ~0.12 in (10 px) per character, so that 8-point characters can be read in their cells
    fig, ax = plt.subplots(figsize=(max(5.0, 0.12 * width + 1.2), 0.3 * len(rows) + 0.9), dpi=DPI,
                           layout="constrained")
    # a colour scale wider than the data keeps the cells light enough to read the characters
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-1.6 * m, vmax=1.6 * m, aspect="auto", interpolation="nearest")
    for r, row in enumerate(rows):
        for c, (ch, _) in enumerate(row):
            ax.text(c, r, ch, ha="center", va="center", fontsize=8, family="monospace")
    ax.set_xticks([])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([str(r + 1) for r in range(len(rows))], fontsize="x-small")
    ax.set_xlabel(f"character (lines wrap at {width})")
    ax.set_ylabel("row")
    ax.set_title(title, fontsize="medium")
    fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    return fig


def piano_roll(melodies: Mapping[str, np.ndarray] | np.ndarray, *, step_label: str = "eighth note",
               steps_per_bar: int = 8, title: str = "Piano roll") -> Figure:
    """Melodies as piano rolls: one bar per note, pitch up, time across; one panel per melody.

    melodies: a token grid (T,) of ``lstmkit.data.melodies``, or name -> grid. Bar lines are
    drawn every ``steps_per_bar`` steps; the y axis names the pitches.
    """
    from lstmkit import data  # viz draws data's own format; data never imports viz

    if not isinstance(melodies, Mapping):
        melodies = {"": np.asarray(melodies)}
    n = len(melodies)
    fig, axes = plt.subplots(n, 1, figsize=(6.5, 1.1 + 1.3 * n), dpi=DPI, squeeze=False, sharex=True)
    names = data.melody_token_names()
    pitch_names = {p: names[k + 2] for k, p in enumerate(data.MELODY_PITCHES)}
    for ax, (label, tokens) in zip(axes[:, 0], melodies.items(), strict=True):
        notes = [nt for nt in data.melody_notes(tokens) if nt[0] is not None]
        for pitch, start, dur in notes:
            ax.broken_barh([(start, dur - 0.1)], (pitch - 0.4, 0.8), color="C0")
        T = len(np.asarray(tokens))
        for b in range(0, T + 1, steps_per_bar):
            ax.axvline(b, color="grey", lw=0.5)
        used = sorted({p for p, _, _ in notes}) or [60]
        # label the notes of the C major triad only (C, E, G): every scale step would crowd the axis
        ticks = [p for p in data.MELODY_PITCHES if used[0] <= p <= used[-1] and p % 12 in (0, 4, 7)]
        ax.set_yticks(ticks)
        ax.set_yticklabels([pitch_names[p] for p in ticks], fontsize=7)
        ax.set_ylim(used[0] - 1, used[-1] + 1)
        ax.set_xlim(0, T)
        ax.set_ylabel("pitch", fontsize="small")
        if label:
            ax.set_title(label, fontsize="small")
    axes[-1, 0].set_xlabel(f"time ({step_label}s; grey lines: bars)")
    fig.suptitle(title, fontsize="medium")
    return _finish(fig)


def captioned_images(images: np.ndarray, captions: Sequence[str], *, truths: Sequence[str] | None = None,
                     ncols: int = 4, title: str = "Images and their captions") -> Figure:
    """Images in a grid with a caption under each; with ``truths``, wrong captions are red.

    images: (n, 3, H, W) (channels first, as torch) or (n, H, W, 3), values in [0, 1].
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 3:
        images = images.transpose(0, 2, 3, 1)
    n = len(images)
    for name, texts in (("captions", captions), ("truths", truths)):
        if texts is not None and len(texts) != n:
            raise ValueError(f"{name} must hold one caption per image: {n} images, {len(texts)} {name}")
    nrows = -(-n // ncols)
    # a lower dpi than the other figures (photo-like images make large PNGs), and room for two
    # lines of caption text in a readable size under each image
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.3 * nrows), dpi=64, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        ax.imshow(np.clip(images[k], 0, 1), interpolation="nearest")
        words = captions[k].split()
        text = " ".join(words[:4]) + "\n" + " ".join(words[4:])  # two short lines
        wrong = truths is not None and captions[k] != truths[k]
        ax.set_xlabel(text, fontsize=9, color="red" if wrong else "black")
    fig.suptitle(title, fontsize="medium")
    _finish(fig)
    fig.subplots_adjust(hspace=0.5)  # tight_layout leaves the second caption line under the next row
    return fig


__all__ += ["benchmark", "text_activation", "piano_roll", "captioned_images"]
