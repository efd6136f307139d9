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
from lstmkit.functional import check_backend, resolve_backend

__all__ = ["RNN", "LSTM", "RNNCell", "LSTMCell"]


def _check_input(name: str, x, ndims: tuple[int, ...], layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() not in ndims:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_state(name: str, s, expected: tuple[int, ...], like: torch.Tensor) -> None:
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(s).__name__}")
    if tuple(s.shape) != expected:
        raise ValueError(f"{name} must have shape (num_layers * num_directions, B, H) = {expected}, "
                         f"got {tuple(s.shape)}")
    if s.dtype != like.dtype or s.device != like.device:
        raise TypeError(f"{name} must have the input's dtype and device ({like.dtype}, {like.device}), "
                        f"got ({s.dtype}, {s.device})")


class _Recurrent:
    """What RNN and LSTM share: layer/direction loop, batch_first, unbatched input, dropout."""

    _kind: str  # "lstm" or "rnn"

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"

    def _torch_does_it(self, input) -> bool:
        """torch's own forward: when asked for, or for a PackedSequence under "auto"."""
        packed = isinstance(input, nn.utils.rnn.PackedSequence)
        return self.backend == "torch" or (self.backend == "auto" and packed)

    def _layer_params(self, layer: int, direction: int):
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        get = lambda n: getattr(self, n + sfx) if self.bias or n.startswith("weight") else None
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _run(self, input, hx):
        """input as given to forward; hx: None, h0 or (h0, c0). Returns output, h_n(, c_n)."""
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError(f"backend={self.backend!r} does not take a PackedSequence; pad the "
                            "batch, or use backend='torch'")
        layout = "(N, L, input_size)" if self.batch_first else "(L, N, input_size)"
        _check_input("input", input, (2, 3), f"{layout} or unbatched (L, input_size)")
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
                init = [s[k] for s in states]
                if is_lstm:
                    y, h, c = functional.lstm_layer(seq, *init, *self._layer_params(layer, d),
                                                    backend=backend)
                    finals[1].append(c)
                else:
                    y, h = functional.rnn_layer(seq, *init, *self._layer_params(layer, d),
                                                backend=backend)
                finals[0].append(h)
                outs.append(y.flip(0) if d else y)
            layer_input = torch.cat(outs, dim=2) if D == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)

        output = layer_input
        if self.batch_first and batched:
            output = output.transpose(0, 1)
        finals = [torch.stack(f) for f in finals if f]
        if not batched:
            output, finals = output.squeeze(1), [f.squeeze(1) for f in finals]
        return output, finals

    def _initial_states(self, hx, x, B, D, batched, is_lstm):
        expected = (self.num_layers * D, B, self.hidden_size)
        if hx is None:
            zeros = x.new_zeros(expected)
            return [zeros, zeros] if is_lstm else [zeros]
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
        return out


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
    _check_input("input", input, (1, 2), "(N, input_size) or unbatched (input_size,)")
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
    return s


class LSTMCell(nn.LSTMCell):
    """One LSTM step with ``torch.nn.LSTMCell``'s signature plus ``backend``.

    forward(input, hx=None) -> (h_1, c_1); input: (N, input_size) or (input_size,).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 backend: str = "auto", device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias=bias, device=device, dtype=dtype)
        self.backend = check_backend(backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"

    def forward(self, input, hx=None):
        if self.backend == "torch":
            return super().forward(input, hx)
        x = _cell_input(self, input)
        h0, c0 = (None, None) if hx is None else hx
        h0 = _cell_state("h_0", h0, x, self.hidden_size, input.dim() == 2)
        c0 = _cell_state("c_0", c0, x, self.hidden_size, input.dim() == 2)
        _, h, c = functional.lstm_layer(x[None], h0, c0, self.weight_ih, self.weight_hh,
                                        self.bias_ih, self.bias_hh,
                                        backend=resolve_backend(self.backend, x))
        return (h, c) if input.dim() == 2 else (h[0], c[0])


class RNNCell(nn.RNNCell):
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

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"

    def forward(self, input, hx=None):
        if self.backend == "torch":
            return super().forward(input, hx)
        x = _cell_input(self, input)
        h0 = _cell_state("hx", hx, x, self.hidden_size, input.dim() == 2)
        _, h = functional.rnn_layer(x[None], h0, self.weight_ih, self.weight_hh, self.bias_ih,
                                    self.bias_hh, backend=resolve_backend(self.backend, x))
        return h if input.dim() == 2 else h[0]
