"""torch modules with the ``torch.nn`` signatures and a choice of backend.

``lstmkit.nn.LSTM`` *is a* ``torch.nn.LSTM``: same constructor, same parameter names
(``weight_ih_l0``, ``weight_hh_l0_reverse``, ...), same ``forward(input, hx)`` shapes. So
``m.load_state_dict(torch_lstm.state_dict())`` works both ways. The extra keyword
``backend`` picks who does the arithmetic:

* ``"numpy"``: ``lstmkit.reference``, the readable textbook code (slow, exact);
* ``"numba"``: ``lstmkit.kernels.cpu``, fused Numba kernels;
* ``"cuda"``: ``lstmkit.kernels.cuda``, Numba CUDA kernels (a GPU, or the simulator);
* ``"torch"``: torch's own implementation;
* ``"auto"`` (default): ``"cuda"`` for CUDA tensors, ``"numba"`` otherwise.

Every backend is differentiable: ``loss.backward()`` and any torch optimiser work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lstmkit import functional
from lstmkit._checks import NonFiniteError
from lstmkit.functional import check_backend, resolve_backend

__all__ = ["RNN", "LSTM", "RNNCell", "LSTMCell", "ConvLSTM"]


def _check_input(name: str, x, ndims: tuple[int, ...], layout: str, weight: torch.Tensor) -> None:
    """x: the module's input; weight: one of its parameters, whose dtype and device x must have."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() not in ndims:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    # Said here, in the module's terms: the backends would name their own arrays (x, W_hh).
    # The usual cause is a tensor made from a NumPy array, which is float64.
    if x.dtype != weight.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the module's parameters have {weight.dtype}: "
                        f"convert the input ({name}.to({weight.dtype})) or the module "
                        f"(module.to({x.dtype}))")
    if x.device != weight.device:
        raise TypeError(f"{name} is on {x.device} but the module's parameters are on {weight.device}: "
                        f"move one of them (module.to({name}.device) or {name}.to('{weight.device}'))")


def _check_state(name: str, s, expected: tuple[int, ...], like: torch.Tensor) -> None:
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(s).__name__}")
    if tuple(s.shape) != expected:
        raise ValueError(f"{name} must have shape (num_layers * num_directions, B, H) = {expected}, "
                         f"got {tuple(s.shape)}")
    _check_like(name, s, like)


def _check_like(name: str, s: torch.Tensor, like: torch.Tensor) -> None:
    """A state s must have the dtype and device of the input, `like`."""
    if s.dtype != like.dtype or s.device != like.device:
        raise TypeError(f"{name} must have the input's dtype and device ({like.dtype}, {like.device}), "
                        f"got ({s.dtype}, {s.device})")


_PARAMETER = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}


def _nonfinite(e: NonFiniteError, suffix: str = "", layer: int = 0, h0: str = "h_0") -> ValueError:
    """The backend's NonFiniteError, in the module's names (weight_hh_l0, input, h_0; the
    initial hidden state is called h0 by forward's argument, e.g. hx for an RNNCell)."""
    if e.name in _PARAMETER:
        # Parameters turn NaN when training diverges; torch's LSTM would return NaNs silently.
        return ValueError(f"{_PARAMETER[e.name]}{suffix} contains NaN or inf: {functional.DIVERGED}")
    names = {"x": "input" if layer == 0 else f"the input of layer {layer}", "h0": h0, "c0": "c_0"}
    return ValueError(f"{names.get(e.name, e.name)} contains NaN or inf")


class _ShowsBackend:
    """Adds ``backend=...`` to the module's printed form."""

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"


class _Recurrent(_ShowsBackend):
    """What RNN and LSTM share: layer/direction loop, batch_first, unbatched input, dropout."""

    _kind: str  # "lstm" or "rnn"

    def _torch_does_it(self, input) -> bool:
        """torch's own forward: when asked for, or for a PackedSequence under "auto"."""
        packed = isinstance(input, nn.utils.rnn.PackedSequence)
        return self.backend == "torch" or (self.backend == "auto" and packed)

    def _layer_params(self, layer: int, direction: int):
        """W_ih, W_hh, b_ih, b_hh of one layer and direction (None for the biases without bias).

        Read from torch's own list of the weights, in that order (``_flat_weights``, which torch
        keeps up to date when a parameter is replaced or the module moved): by name, each went
        through ``Module.__getattr__``, 0.6 us a weight, a few percent of a small forward pass."""
        n = 4 if self.bias else 2
        k = layer * (2 if self.bidirectional else 1) + direction
        weights = self._flat_weights[k * n:(k + 1) * n]
        return (*weights, None, None) if n == 2 else tuple(weights)

    def _run(self, input, hx):
        """input as given to forward; hx: None, h0 or (h0, c0). Returns output, h_n(, c_n)."""
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError(f"backend={self.backend!r} does not take a PackedSequence; pad the "
                            "batch, or use backend='torch'")
        layout = "(N, L, input_size)" if self.batch_first else "(L, N, input_size)"
        _check_input("input", input, (2, 3), f"{layout} or unbatched (L, input_size)",
                     self._flat_weights[0])
        if input.shape[-1] != self.input_size:
            raise ValueError(f"input must have {self.input_size} features (input_size) in its last "
                             f"dimension, got shape {tuple(input.shape)}")
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        B = x.shape[1]
        D = 2 if self.bidirectional else 1
        is_lstm = self._kind == "lstm"
        states = self._initial_states(hx, x, B, D, batched, is_lstm)

        backend = resolve_backend(self.backend, x)
        layer_input = x
        finals = [[], []]
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                seq = layer_input.flip(0) if d else layer_input
                init = states[k]
                try:
                    if is_lstm:
                        y, h, c = functional.lstm_layer(seq, *init, *self._layer_params(layer, d),
                                                        backend=backend)
                        finals[1].append(c)
                    else:
                        y, h = functional.rnn_layer(seq, *init, *self._layer_params(layer, d),
                                                    backend=backend)
                except NonFiniteError as e:
                    raise _nonfinite(e, f"_l{layer}" + ("_reverse" if d else ""), layer) from None
                finals[0].append(h)
                outs.append(y.flip(0) if d else y)
            layer_input = torch.cat(outs, dim=2) if D == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)

        output = layer_input
        if self.batch_first and batched:
            output = output.transpose(0, 1)
        finals = [f[0][None] if len(f) == 1 else torch.stack(f) for f in finals if f]
        if not batched:
            output, finals = output.squeeze(1), [f.squeeze(1) for f in finals]
        return output, finals

    def _zeros(self, x, B):
        """(B, hidden_size) zeros like x, kept from the last call that had the same B, dtype and
        device: no backend writes to its initial states or returns them. A new tensor per call
        took 3-11 us (as much as a tenth of a small forward pass), the caches being full of the
        last call's kernel. Kept out of Module.__setattr__'s way: it is no buffer."""
        z = self.__dict__.get("_zero_state")
        if z is None or z.shape[0] != B or z.dtype != x.dtype or z.device != x.device:
            z = self.__dict__["_zero_state"] = x.new_zeros((B, self.hidden_size))
        return z

    def _initial_states(self, hx, x, B, D, batched, is_lstm):
        """The initial states of each layer and direction k: [h0_k, c0_k] (LSTM) or [h0_k]."""
        expected = (self.num_layers * D, B, self.hidden_size)
        if hx is None:  # one tensor of zeros for all: no backend writes to its initial states
            zeros = self._zeros(x, B)
            return [[zeros] * (2 if is_lstm else 1)] * (self.num_layers * D)
        states = list(hx) if is_lstm else [hx]
        if is_lstm and len(states) != 2:
            raise ValueError("hx for an LSTM must be a tuple (h_0, c_0)")
        names = ("h_0", "c_0")
        out = []
        for name, s in zip(names, states):
            if not batched and isinstance(s, torch.Tensor) and s.dim() == 2:
                s = s.unsqueeze(1)
            _check_state(name, s, expected, x)
            out.append(s)
        return [[s[k] for s in out] for k in range(self.num_layers * D)]


class LSTM(_Recurrent, nn.LSTM):
    """Multi-layer LSTM with ``torch.nn.LSTM``'s signature plus ``backend``.

    forward(input, hx=None) -> output, (h_n, c_n)
      input: (L, N, input_size), or (N, L, input_size) with batch_first, or unbatched (L, input_size)
      hx: optional (h_0, c_0), each (num_layers * num_directions, N, hidden_size)
      output: (L, N, num_directions * hidden_size) (batch_first: (N, L, ...))
    """

    _kind = "lstm"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         dropout=dropout, bidirectional=bidirectional, device=device, dtype=dtype)
        self.backend = check_backend(backend)

    def forward(self, input, hx=None):
        if self._torch_does_it(input):
            return super().forward(input, hx)
        output, (h_n, c_n) = self._run(input, hx)
        return output, (h_n, c_n)


class RNN(_Recurrent, nn.RNN):
    """Multi-layer tanh RNN with ``torch.nn.RNN``'s signature plus ``backend``.

    forward(input, hx=None) -> output, h_n  (shapes as ``LSTM`` without the cell state)
    """

    _kind = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *, backend: str = "auto",
                 device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, num_layers, nonlinearity=nonlinearity, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         device=device, dtype=dtype)
        self.backend = check_backend(backend)
        if nonlinearity != "tanh" and backend != "torch":
            raise ValueError(f"nonlinearity={nonlinearity!r} is only available with backend='torch'; "
                             "lstmkit's own kernels implement the tanh RNN")

    def forward(self, input, hx=None):
        if self._torch_does_it(input):
            return super().forward(input, hx)
        output, (h_n,) = self._run(input, hx)
        return output, h_n


def _cell_input(cell, input):
    _check_input("input", input, (1, 2), "(N, input_size) or unbatched (input_size,)", cell.weight_ih)
    if input.shape[-1] != cell.input_size:
        raise ValueError(f"input must have {cell.input_size} features (input_size) in its last "
                         f"dimension, got shape {tuple(input.shape)}")
    return input if input.dim() == 2 else input.unsqueeze(0)


def _cell_state(name, s, x, hidden_size, batched):
    expected = (x.shape[0], hidden_size)
    if s is None:
        return x.new_zeros(expected)
    if not batched and isinstance(s, torch.Tensor) and s.dim() == 1:
        s = s.unsqueeze(0)
    if not isinstance(s, torch.Tensor) or tuple(s.shape) != expected:
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(f"{name} must have shape (N, hidden_size) = {expected}, got {got}")
    _check_like(name, s, x)
    return s


class LSTMCell(_ShowsBackend, nn.LSTMCell):
    """One LSTM step with ``torch.nn.LSTMCell``'s signature plus ``backend``.

    forward(input, hx=None) -> (h_1, c_1); input: (N, input_size) or (input_size,).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias=bias, device=device, dtype=dtype)
        self.backend = check_backend(backend)

    def forward(self, input, hx=None):
        if self.backend == "torch":
            return super().forward(input, hx)
        x = _cell_input(self, input)
        h0, c0 = (None, None) if hx is None else hx
        h0 = _cell_state("h_0", h0, x, self.hidden_size, input.dim() == 2)
        c0 = _cell_state("c_0", c0, x, self.hidden_size, input.dim() == 2)
        try:
            _, h, c = functional.lstm_layer(x[None], h0, c0, self.weight_ih, self.weight_hh,
                                            self.bias_ih, self.bias_hh,
                                            backend=resolve_backend(self.backend, x))
        except NonFiniteError as e:
            raise _nonfinite(e) from None
        return (h, c) if input.dim() == 2 else (h[0], c[0])


class RNNCell(_ShowsBackend, nn.RNNCell):
    """One tanh RNN step with ``torch.nn.RNNCell``'s signature plus ``backend``.

    forward(input, hx=None) -> h_1; input: (N, input_size) or (input_size,).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", *, backend: str = "auto", device=None,
                 dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias=bias, nonlinearity=nonlinearity,
                         device=device, dtype=dtype)
        self.backend = check_backend(backend)
        if nonlinearity != "tanh" and backend != "torch":
            raise ValueError(f"nonlinearity={nonlinearity!r} is only available with backend='torch'")

    def forward(self, input, hx=None):
        if self.backend == "torch":
            return super().forward(input, hx)
        x = _cell_input(self, input)
        h0 = _cell_state("hx", hx, x, self.hidden_size, input.dim() == 2)
        try:
            _, h = functional.rnn_layer(x[None], h0, self.weight_ih, self.weight_hh, self.bias_ih,
                                        self.bias_hh, backend=resolve_backend(self.backend, x))
        except NonFiniteError as e:
            raise _nonfinite(e, h0="hx") from None
        return h if input.dim() == 2 else h[0]


def _per_layer(name: str, value, num_layers: int) -> list[int]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * num_layers
    if len(values) != num_layers or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"{name} must be a positive int or a list of {num_layers} positive ints "
                         f"(one per layer), got {value!r}")
    return values


class ConvLSTM(nn.Module):
    """Convolutional LSTM (Shi et al. 2015): every gate's matrix product is a convolution.

    ConvLSTM(in_channels, hidden_channels, kernel_size, num_layers=1, batch_first=False,
             bias=True, peephole=False, *, backend="auto")

    hidden_channels, kernel_size: an int, or a list with one value per layer; kernel sizes
    are odd so that padding k // 2 keeps the frame size. peephole=True adds the paper's
    elementwise cell-to-gate terms, here with one weight per channel (the paper learns one
    per pixel; per channel keeps the module independent of the frame size).

    forward(input, hx=None) -> output, state
      input: (T, B, C_in, Hh, Ww), or (B, T, C_in, Hh, Ww) with batch_first
      hx: None, or a list with one (h, c) per layer, each (B, C_h, Hh, Ww): exactly the
          ``state`` a previous call returned, so a long sequence can be fed in chunks
      output: the last layer's h at every step, (T, B, C_h, Hh, Ww) (batch_first: (B, T, ...))
      state: [(h_n, c_n) for each layer]

    Parameters: ``weight_l{k}`` (4 C_h, C_in + C_h, k, k) with gate order i, f, g, o,
    ``bias_l{k}`` (4 C_h,), ``peephole_l{k}`` (3, C_h, 1, 1) for the i, f, o gates.
    backend: "auto" (lstmkit's CUDA gate kernel for CUDA tensors, torch ops otherwise),
    "torch" or "cuda" (also on CPU tensors under the CUDA simulator).
    """

    def __init__(self, in_channels: int, hidden_channels, kernel_size, num_layers: int = 1,
                 batch_first: bool = False, bias: bool = True, peephole: bool = False, *,
                 backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        self.in_channels, self.num_layers = in_channels, num_layers
        self.hidden_channels = _per_layer("hidden_channels", hidden_channels, num_layers)
        self.kernel_size = _per_layer("kernel_size", kernel_size, num_layers)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"kernel_size must be odd (padding k // 2 keeps the frame size), "
                             f"got {kernel_size!r}")
        if backend not in ("auto", "torch", "cuda"):
            raise ValueError(f"ConvLSTM backend must be 'auto', 'torch' or 'cuda', got {backend!r}")
        self.batch_first, self.bias, self.peephole, self.backend = batch_first, bias, peephole, backend
        factory = dict(device=device, dtype=dtype)
        c_in = in_channels
        for k, (ch, ks) in enumerate(zip(self.hidden_channels, self.kernel_size)):
            self.register_parameter(f"weight_l{k}", nn.Parameter(
                torch.empty(4 * ch, c_in + ch, ks, ks, **factory)))
            self.register_parameter(f"bias_l{k}", nn.Parameter(
                torch.empty(4 * ch, **factory)) if bias else None)
            self.register_parameter(f"peephole_l{k}", nn.Parameter(
                torch.empty(3, ch, 1, 1, **factory)) if peephole else None)
            c_in = ch
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) like torch's RNNs; peepholes start at 0."""
        for k in range(self.num_layers):
            w = getattr(self, f"weight_l{k}")
            bound = 1 / (w[0].numel() ** 0.5)
            nn.init.uniform_(w, -bound, bound)
            if self.bias:
                nn.init.uniform_(getattr(self, f"bias_l{k}"), -bound, bound)
            if self.peephole:
                nn.init.zeros_(getattr(self, f"peephole_l{k}"))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, "
                f"num_layers={self.num_layers}, batch_first={self.batch_first}, bias={self.bias}, "
                f"peephole={self.peephole}, backend={self.backend!r}")

    def forward(self, input, hx=None):
        layout = "(B, T, C_in, Hh, Ww)" if self.batch_first else "(T, B, C_in, Hh, Ww)"
        _check_input("input", input, (5,), layout, self.weight_l0)
        if input.shape[2] != self.in_channels:
            raise ValueError(f"input must have {self.in_channels} channels (in_channels) in "
                             f"dimension 2 of {layout}, got shape {tuple(input.shape)}")
        x = input.transpose(0, 1) if self.batch_first else input
        T, B, _, Hh, Ww = x.shape
        state = self._initial_state(hx, x, B, Hh, Ww)
        new_state = []
        for k in range(self.num_layers):
            W, b, peep = (getattr(self, f"{n}_l{k}") for n in ("weight", "bias", "peephole"))
            h, c = state[k]
            outs = []
            for t in range(T):
                a = F.conv2d(torch.cat([x[t], h], dim=1), W, b, padding=self.kernel_size[k] // 2)
                h, c = functional.convlstm_gates(a, c, peep, backend=self.backend)
                outs.append(h)
            x = torch.stack(outs) if T else x.new_zeros(0, B, self.hidden_channels[k], Hh, Ww)
            new_state.append((h, c))
        return (x.transpose(0, 1) if self.batch_first else x), new_state

    def _initial_state(self, hx, x, B, Hh, Ww):
        shapes = [(B, ch, Hh, Ww) for ch in self.hidden_channels]
        if hx is None:
            return [(x.new_zeros(s), x.new_zeros(s)) for s in shapes]
        if not isinstance(hx, (list, tuple)) or len(hx) != self.num_layers:
            raise ValueError(f"hx must be a list of {self.num_layers} (h, c) pairs, one per layer "
                             "(the state a previous call returned)")
        for k, (pair, s) in enumerate(zip(hx, shapes)):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"hx[{k}] must be a pair (h, c)")
            for name, t in zip("hc", pair):
                if not isinstance(t, torch.Tensor) or tuple(t.shape) != s:
                    got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                    raise ValueError(f"hx[{k}] {name} must have shape (B, C_h, Hh, Ww) = {s}, got {got}")
                _check_like(f"hx[{k}] {name}", t, x)
        return [tuple(pair) for pair in hx]
