"""Interactive explorers for the lessons, and the measurements behind them.

Each explorer is a small class: sliders, one matplotlib figure shown in an
``ipywidgets.Output``, and an ``update`` method that recomputes and redraws. The computing
is done by plain functions (``rnn_gradient_norms``, ``gate_explorer_run``) that a lesson or a
test can call without a browser; setting a slider's ``value`` runs ``update`` at once.

* ``GradientNormExplorer`` (lesson 01): the spectral radius of a tanh RNN's recurrent
  matrix, the sequence length and the input scale -> ||dL/dh_t|| against the distance to the
  loss.
* ``GateExplorer`` (lesson 02): gate biases and input weights of a one-unit LSTM -> its
  gates, cell state and output over a sequence with a "write" cue and a "read" cue.
* ``TemperatureSampler`` (lesson 07): the sampling temperature of a character-level
  language model -> a new sample of text (``softmax_temperature``, ``sample_sequence``).

Two measurement helpers run trained torch models through ``lstmkit.reference``:
``gradient_norms`` (||dL/dh_t|| of a real loss, step by step) and ``lstm_gate_trace`` (every
gate's activation at every step).
"""

from __future__ import annotations

import base64
import io

import ipywidgets as W
import numpy as np

from lstmkit import reference, viz

__all__ = [
    "rnn_gradient_norms",
    "gradient_norms",
    "lstm_gate_trace",
    "gate_explorer_run",
    "GradientNormExplorer",
    "GateExplorer",
]


# ------------------------------------------------------------------------ measurements


def rnn_gradient_norms(radius: float, T: int, *, hidden: int = 32, input_scale: float = 0.1,
                       batch: int = 8, seed: int = 0) -> np.ndarray:
    """||dL/dh_t|| of a random tanh RNN whose recurrent matrix has every singular value = radius.

    W_hh = radius * Q with Q a random orthogonal matrix, so radius is both the spectral radius
    and the largest singular value, and the Jacobian dh_t/dh_{t-1} = diag(1 - h_t^2) W_hh has
    norm at most radius. Inputs: T steps of N(0, input_scale^2) noise in one feature (larger
    inputs push tanh into saturation, where its derivative is small). The loss gradient
    dL/dh_T is a random unit vector.

    Returns ``norms: (T,)`` float64 with norms[k] = ||dL/dh_{T-k}||: entry 0 is the last step
    (norm 1), entry k is k steps before the loss; it never exceeds radius**k.
    """
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((hidden, hidden)))
    W_hh = radius * Q
    W_ih = rng.standard_normal((hidden, 1))
    x = input_scale * rng.standard_normal((T, batch, 1))
    h0 = np.zeros((batch, hidden))
    _, _, saved = reference.rnn_forward(x, h0, W_ih, W_hh)
    dh = rng.standard_normal((batch, hidden))
    dh /= np.linalg.norm(dh)
    grads = reference.rnn_backward(None, dh, saved)
    return grads["dh_norms"][::-1].copy()


def _layer0(module):
    """A one-layer torch RNN/LSTM's weights as float64 arrays (W_ih, W_hh, b_ih, b_hh)."""
    if getattr(module, "num_layers", 1) != 1 or getattr(module, "bidirectional", False):
        raise ValueError("only a one-layer, one-direction RNN or LSTM is supported here")
    get = lambda name: (getattr(module, name).detach().cpu().double().numpy()
                        if getattr(module, name, None) is not None else None)
    return get("weight_ih_l0"), get("weight_hh_l0"), get("bias_ih_l0"), get("bias_hh_l0")


def _time_major(module, x) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"x must be a batch of sequences (3-D), got shape {x.shape}")
    return x.transpose(1, 0, 2) if getattr(module, "batch_first", False) else x


def gradient_norms(module, head, loss_fn, x, y) -> np.ndarray:
    """||dL/dh_t|| at every step for a one-layer torch RNN or LSTM and a loss on its last output.

    module: ``torch.nn.RNN``/``LSTM`` (or the ``lstmkit.nn`` ones); head: maps the last hidden
    state to predictions; loss_fn(head(h_T), y) -> scalar. x: a batch in the module's layout.
    The gradient at the last step comes from torch autograd; the walk back through time is
    ``lstmkit.reference``'s backward pass (float64), which records the norm at every step.

    Returns ``norms: (T,)`` with norms[k] = ||dL/dh_{T-k}|| (entry 0: the last step).
    """
    import torch

    is_lstm = isinstance(module, torch.nn.LSTM)
    xt = torch.as_tensor(x)
    with torch.enable_grad():
        out, _ = module(xt)
        h_last = (out[:, -1] if module.batch_first else out[-1]).detach().requires_grad_(True)
        loss = loss_fn(head(h_last), torch.as_tensor(y))
        (dh_last,) = torch.autograd.grad(loss, h_last)
    W_ih, W_hh, b_ih, b_hh = _layer0(module)
    xs = _time_major(module, x)
    zeros = np.zeros((xs.shape[1], W_hh.shape[1]))
    dh = dh_last.double().numpy()
    if is_lstm:
        *_, saved = reference.lstm_forward(xs, zeros, zeros, W_ih, W_hh, b_ih, b_hh)
        grads = reference.lstm_backward(None, dh, None, saved)
    else:
        *_, saved = reference.rnn_forward(xs, zeros, W_ih, W_hh, b_ih, b_hh)
        grads = reference.rnn_backward(None, dh, saved)
    return grads["dh_norms"][::-1].copy()


def _step_gates(cache):
    """The gate values a ``reference.lstm_step_forward`` cache holds: (i, f, g, o)."""
    return cache[5], cache[6], cache[7], cache[8]


def lstm_gate_trace(weights, x, h0=None, c0=None) -> dict[str, np.ndarray]:
    """Every gate, the cell state and the output of an LSTM layer at every step.

    weights: a one-layer torch LSTM (``torch.nn.LSTM``/``lstmkit.nn.LSTM``; its ``batch_first``
    decides x's layout) or a tuple ``(W_ih, W_hh, b_ih, b_hh)`` of arrays (then x is
    batch-first). x: (B, T, I) batch-first. Runs ``reference.lstm_step_forward`` in float64.

    Returns a dict of batch-first arrays, each (B, T, H): "i", "f", "g", "o", "c", "h".
    """
    if isinstance(weights, tuple):
        W_ih, W_hh, b_ih, b_hh = (None if w is None else np.asarray(w, np.float64)
                                  for w in weights)
        xs = np.asarray(x, np.float64).transpose(1, 0, 2)
    else:
        W_ih, W_hh, b_ih, b_hh = _layer0(weights)
        xs = _time_major(weights, x)
    T, B, _ = xs.shape
    H = W_hh.shape[1]
    h = np.zeros((B, H)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((B, H)) if c0 is None else np.asarray(c0, np.float64)
    out = {k: np.empty((B, T, H)) for k in "ifgoch"}
    for t in range(T):
        h, c, cache = reference.lstm_step_forward(xs[t], h, c, W_ih, W_hh, b_ih, b_hh)
        for k, v in zip("ifgo", _step_gates(cache), strict=True):
            out[k][:, t] = v
        out["c"][:, t], out["h"][:, t] = c, h
    return out


def gate_explorer_run(forget_bias: float = 4.0, input_bias: float = -4.0,
                      output_bias: float = -4.0, write_weight: float = 8.0,
                      read_weight: float = 8.0, *, T: int = 40, write_at: int = 5,
                      read_at: int = 30, value_weight: float = 2.0) -> dict[str, np.ndarray]:
    """Run a one-unit LSTM over a sequence with a "write" cue and a "read" cue.

    Two input features: "write" is 1 at step ``write_at``, "read" is 1 at step ``read_at``,
    both 0 elsewhere. The unit's weights (no recurrent weights, W_hh = 0, so each gate
    depends on the current input only):

        a_i = write_weight * write + input_bias      input gate opens on the write cue
        a_f = forget_bias                            forget gate: a constant valve
        a_g = value_weight * write                   the candidate: tanh(2) ~ 0.96 on "write"
        a_o = read_weight * read + output_bias       output gate opens on the read cue

    Returns a dict: "x" (T, 2), "i", "f", "g", "o", "c", "h" (T,), and "input_names".
    """
    W_ih = np.array([[write_weight, 0.0], [0.0, 0.0], [value_weight, 0.0], [0.0, read_weight]])
    b_ih = np.array([input_bias, forget_bias, 0.0, output_bias])
    W_hh = np.zeros((4, 1))
    x = np.zeros((T, 2))
    if 0 <= write_at < T:
        x[write_at, 0] = 1.0
    if 0 <= read_at < T:
        x[read_at, 1] = 1.0
    tr = lstm_gate_trace((W_ih, W_hh, b_ih, np.zeros(4)), x[None])
    run = {k: v[0, :, 0] for k, v in tr.items()}
    run["x"] = x
    run["input_names"] = ["write cue", "read cue"]
    return run


# -------------------------------------------------------------------------- explorers


def _figure_output(fig) -> dict:
    """A figure as one Jupyter display_data output (PNG), for ``Output.outputs``.

    Rendering the PNG here, rather than with ``display`` inside ``with output:``, fills the
    Output widget's state directly: it works in JupyterLab, in an executed and saved
    notebook, and headless in a test.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
                     "text/plain": repr(fig)}}


class _Explorer:
    """Sliders above one figure; subclasses define ``_make_controls`` and ``update``."""

    def __init__(self):
        self.out = W.Output()
        self.controls = self._make_controls()
        for slider in self.controls.values():
            slider.observe(lambda _change: self.update(), names="value")
        self.widget = W.VBox([W.HBox(list(self.controls.values()),
                                     layout=W.Layout(flex_flow="row wrap")), self.out])

    def _make_controls(self) -> dict[str, W.Widget]:
        raise NotImplementedError

    def update(self):
        raise NotImplementedError

    def _show(self):
        self.out.outputs = (_figure_output(self.fig),)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _slider_options() -> dict:
    """Keyword arguments shared by the explorers' sliders. A function, not a module constant:
    a Layout made at import would be a widget of every kernel that imports this module, and a
    notebook executed there would store its state with no output to show it."""
    return dict(continuous_update=False, style={"description_width": "initial"},
                layout=W.Layout(width="300px"))


class GradientNormExplorer(_Explorer):
    """Lesson 01: move the spectral radius and the length, watch ||dL/dh_t|| vanish or explode.

    ``explorer = GradientNormExplorer(); explorer`` shows it in a notebook. Attributes:
    ``controls`` (the sliders, by name), ``norms`` (the curve on display), ``fig``, ``out``.
    """

    def __init__(self, radius: float = 0.9, length: int = 100, input_scale: float = 0.1,
                 *, hidden: int = 32, seed: int = 0):
        self._init = (radius, length, input_scale)
        self.hidden, self.seed = hidden, seed
        self.fig, self.ax = viz.new_figure(pyplot=False)
        (self._curve,) = self.ax.plot([], [], label=r"measured $\|\partial L/\partial h_t\|$")
        (self._bound,) = self.ax.plot([], [], ls="--", lw=1, color="grey",
                                      label=r"bound radius$^k$")
        self.ax.set_yscale("log")
        self.ax.set_ylim(1e-12, 1e6)
        self.ax.axhline(1.0, color="black", lw=0.5)
        self.ax.set_xlabel("distance to the loss, k = T - t (steps)")
        self.ax.set_ylabel(r"$\|\partial L / \partial h_t\|$")
        self.ax.legend(fontsize="small", loc="lower left")
        super().__init__()
        self.update()

    def _make_controls(self):
        radius, length, input_scale = self._init
        return {
            "radius": W.FloatSlider(value=radius, min=0.2, max=2.0, step=0.05,
                                    description="spectral radius", **_slider_options()),
            "length": W.IntSlider(value=length, min=10, max=200, step=10,
                                  description="sequence length T", **_slider_options()),
            "input_scale": W.FloatSlider(value=input_scale, min=0.0, max=2.0, step=0.1,
                                         description="input scale", **_slider_options()),
        }

    def update(self):
        """Recompute the curve for the sliders' values and redraw; returns the norms."""
        r = self.controls["radius"].value
        T = self.controls["length"].value
        s = self.controls["input_scale"].value
        self.norms = rnn_gradient_norms(r, T, hidden=self.hidden, input_scale=s, seed=self.seed)
        k = np.arange(T)
        self._curve.set_data(k, np.maximum(self.norms, 1e-300))
        self._bound.set_data(k, r ** k.astype(float))
        self.ax.set_xlim(0, T - 1)
        self.ax.set_title(f"tanh RNN, radius {r:.2f}, T = {T}: "
                          f"norm {self.norms[-1]:.1e} at k = {T - 1}", fontsize="medium")
        self.fig.tight_layout()
        self._show()
        return self.norms


class GateExplorer(_Explorer):
    """Lesson 02: one LSTM unit with a write cue and a read cue; sliders set its gates.

    The sliders are the parameters of ``gate_explorer_run``: the forget-gate bias (how long
    the cell keeps what was written), the input-gate bias and its weight on the write cue
    (when the valve into the cell opens), the output-gate bias and its weight on the read cue
    (when the cell is revealed in h). Attributes: ``controls``, ``trace`` (the run on display),
    ``fig``, ``out``.
    """

    def __init__(self, *, T: int = 40, write_at: int = 5, read_at: int = 30, **values):
        self._run_kw = dict(T=T, write_at=write_at, read_at=read_at)
        self._values = values
        self.trace = gate_explorer_run(**values, **self._run_kw)
        self.fig, axes = viz.new_figure(3, 1, figsize=(6.0, 5.0), sharex=True, pyplot=False)
        lines = viz.draw_lstm_trace(axes, self.trace)
        self._lines = dict(zip(["x_write", "x_read", "i", "f", "o", "c", "h"], lines, strict=True))
        self.fig.tight_layout()
        super().__init__()
        self.update()

    def _make_controls(self):
        defaults = {"forget_bias": 4.0, "input_bias": -4.0, "write_weight": 8.0,
                    "output_bias": -4.0, "read_weight": 8.0}
        defaults.update(self._values)
        ranges = {"forget_bias": (-4, 8, "forget-gate bias"),
                  "input_bias": (-8, 4, "input-gate bias"),
                  "write_weight": (0, 12, "input gate <- write cue"),
                  "output_bias": (-8, 4, "output-gate bias"),
                  "read_weight": (0, 12, "output gate <- read cue")}
        return {name: W.FloatSlider(value=defaults[name], min=lo, max=hi, step=0.5,
                                    description=label, **_slider_options())
                for name, (lo, hi, label) in ranges.items()}

    def update(self):
        """Rerun the unit with the sliders' values and redraw; returns the trace."""
        values = {name: s.value for name, s in self.controls.items()}
        self.trace = gate_explorer_run(**values, **self._run_kw)
        for key in "ifoch":
            self._lines[key].set_ydata(self.trace[key])
        read = self._run_kw["read_at"]
        if 0 <= read < len(self.trace["h"]):
            self.fig.axes[0].set_title(f"One LSTM unit: h = {self.trace['h'][read]:.2f} at the "
                                       f"read cue, c = {self.trace['c'][read]:.2f}",
                                       fontsize="medium")
        self._show()
        return self.trace


# ================================================================== lessons 04-09 widgets


# ------------------------------------------------- lesson 07: sampling with a temperature

__all__ += ["softmax_temperature", "sample_sequence", "TemperatureSampler"]


def softmax_temperature(logits, temperature: float) -> np.ndarray:
    """Probabilities softmax(logits / temperature) over the last axis, in float64.

    temperature 1 gives the model's own distribution; below 1 sharpens it (towards the most
    likely token), above 1 flattens it (towards uniform). A temperature of 0 (or below 1e-6)
    returns the one-hot distribution of the argmax: greedy decoding.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be 0 (greedy) or positive, got {temperature}")
    z = np.asarray(logits, dtype=np.float64)
    if temperature < 1e-6:
        p = np.zeros_like(z)
        np.put_along_axis(p, np.argmax(z, axis=-1)[..., None], 1.0, axis=-1)
        return p
    z = z / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sample_sequence(step_fn, prime, n: int, *, temperature: float = 1.0, seed: int = 0) -> list[int]:
    """Generate n tokens from a next-token model, one at a time.

    step_fn(token_id, state) -> (logits (V,), new_state): the model reads one token and
    returns its scores for the next (state None at the start). The prime tokens (at least
    one) are fed first; then each sampled token is fed back. Sampling draws from
    ``softmax_temperature(logits, temperature)`` with ``numpy.random.default_rng(seed)``, so
    the same seed and temperature give the same text. Returns the n sampled ids.
    """
    prime = list(prime)
    if not prime:
        raise ValueError("prime must hold at least one token")
    rng = np.random.default_rng(seed)
    state, logits = None, None
    for tok in prime:
        logits, state = step_fn(int(tok), state)
    out: list[int] = []
    for _ in range(n):
        p = softmax_temperature(logits, temperature)
        tok = int(rng.choice(len(p), p=p))
        out.append(tok)
        logits, state = step_fn(tok, state)
    return out


class TemperatureSampler:
    """Lesson 07: a temperature slider and a seed above text sampled from a language model.

    generate(temperature, seed) -> str is called by ``update`` whenever a slider moves (for
    instance a closure over ``sample_sequence``). Attributes: ``controls`` (the sliders),
    ``text`` (the text on display), ``html`` (the widget showing it), ``widget``.
    """

    def __init__(self, generate, *, temperature: float = 1.0, seed: int = 0):
        import html as _html

        self._escape = _html.escape
        self.generate = generate
        self.controls = {
            "temperature": W.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.1,
                                         description="temperature", **_slider_options()),
            "seed": W.IntSlider(value=seed, min=0, max=20, description="random seed", **_slider_options()),
        }
        self.html = W.HTML()
        for slider in self.controls.values():
            slider.observe(lambda _change: self.update(), names="value")
        self.widget = W.VBox([W.HBox(list(self.controls.values())), self.html])
        self.update()

    def update(self) -> str:
        """Sample again with the sliders' values and show the text; returns it."""
        t = self.controls["temperature"].value
        self.text = self.generate(t, self.controls["seed"].value)
        self.html.value = (f"<b>temperature {t:.1f}</b><pre style='white-space: pre-wrap'>"
                           f"{self._escape(self.text)}</pre>")
        return self.text

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
