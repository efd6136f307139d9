"""torch.autograd.Functions over lstmkit's backends: the one place that dispatches on ``backend``.

Each backend module (``reference``, ``kernels.cpu``, ``kernels.cuda``) has the same contract::

    lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh) -> (y, h_n, c_n, saved)
    lstm_backward(dy, dh_n, dc_n, saved) -> grads
    rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh) -> (y, h_n, saved)
    rnn_backward(dy, dh_n, saved) -> grads

``lstm_layer``/``rnn_layer`` run ONE layer in ONE direction; ``lstmkit.nn`` stacks layers and
directions with ordinary torch operations, so autograd handles the composition.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from lstmkit._checks import NonFiniteError

BACKENDS = ("auto", "numpy", "numba", "cuda", "torch")
# What a NaN that training produced calls for (said by lstmkit.nn, and by backward here).
DIVERGED = ("training has probably diverged (try a smaller learning rate, or clip the gradients "
            "with torch.nn.utils.clip_grad_norm_ before optimizer.step())")
_GRADIENT_OF = {"dy": "output", "dh_n": "final hidden state", "dc_n": "final cell state"}
_MODULES = {"numpy": "lstmkit.reference", "numba": "lstmkit.kernels.cpu", "cuda": "lstmkit.kernels.cuda"}


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    return backend


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """"auto" means cuda for CUDA tensors and numba otherwise."""
    if backend == "auto":
        return "cuda" if tensor.is_cuda else "numba"
    if backend in ("numpy", "numba") and tensor.is_cuda:
        raise ValueError(
            f"backend={backend!r} runs on the CPU but the input is on {tensor.device}; "
            "use backend='cuda' (or 'auto'), or move the module and input to the CPU"
        )
    return backend


def _module(backend: str):
    if backend == "cuda":
        from lstmkit.devices import require_cuda

        require_cuda()
    mod = _LOADED.get(backend)
    if mod is None:
        mod = _LOADED[backend] = importlib.import_module(_MODULES[backend])
    return mod


_LOADED: dict = {}


# Per-call work matters at small sizes: at batch 1, hidden 32, a whole forward pass through
# lstmkit.nn.LSTM takes ~90 us, of which the kernel ~35 us. The conversions below skip the
# calls that would return their argument unchanged (contiguous(), to(device)): ~1 us each.


def _to_array(t: torch.Tensor | None):
    """A tensor as the backend's array type, without copying where the layout allows."""
    if t is None:
        return None
    if t.is_cuda:
        from numba import cuda

        return cuda.as_cuda_array(t.detach().contiguous())  # shares memory (__cuda_array_interface__)
    t = t if t.is_contiguous() else t.contiguous()
    return t.numpy(force=True) if t.requires_grad else t.numpy()  # force: without a detach() first


def _to_tensor(a, device: torch.device) -> torch.Tensor | None:
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        t = torch.from_numpy(a)
        return t if device.type == "cpu" else t.to(device)
    return torch.as_tensor(a, device=device)  # a CUDA device array: no copy


def _layer_forward(kind, backend, x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    """One layer through a backend module: (outputs as tensors, the module, its saved state)."""
    mod = _module(backend)
    xa, h0a = _to_array(x), _to_array(h0)
    weights = [_to_array(t) for t in (W_ih, W_hh, b_ih, b_hh)]
    if kind == "lstm":  # (c0 is h0 where both are lstmkit.nn's zeros)
        y, h_n, c_n, saved = mod.lstm_forward(xa, h0a, h0a if c0 is h0 else _to_array(c0), *weights)
        outs = (y, h_n, c_n)
    else:
        y, h_n, saved = mod.rnn_forward(xa, h0a, *weights)
        outs = (y, h_n)
    device = x.device
    return tuple(_to_tensor(a, device) for a in outs), mod, saved


class _Layer(torch.autograd.Function):
    """One RNN/LSTM layer, one direction. ``kind`` is "lstm" or "rnn"; ``c0`` is None for an RNN."""

    @staticmethod
    def forward(ctx, kind, backend, x, h0, c0, W_ih, W_hh, b_ih, b_hh):
        outs, ctx.mod, ctx.saved = _layer_forward(kind, backend, x, h0, c0, W_ih, W_hh, b_ih, b_hh)
        ctx.kind, ctx.device = kind, x.device
        return outs

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n, dc_n=None):
        mod, saved = ctx.mod, ctx.saved
        dy, dh_n, dc_n = (_to_array(g) for g in (dy, dh_n, dc_n))
        try:
            if ctx.kind == "lstm":
                g = mod.lstm_backward(dy, dh_n, dc_n, saved)
            else:
                g = mod.rnn_backward(dy, dh_n, saved)
        except NonFiniteError as e:  # said in the terms of loss.backward(), where it surfaces
            raise ValueError(f"the gradient reaching this {ctx.kind.upper()} layer's "
                             f"{_GRADIENT_OF.get(e.name, e.name)} contains NaN or inf: the loss, or "
                             f"a layer after this one, overflowed; {DIVERGED}") from None
        ctx.saved = None  # free the activations as soon as they are used
        out = [_to_tensor(g.get(k), ctx.device) for k in ("x", "h0", "c0", "W_ih", "W_hh", "b_ih", "b_hh")]
        return (None, None, *out)


def _apply(kind, backend, x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    backend = resolve_backend(check_backend(backend), x)
    if backend == "torch":
        return _torch_layer(kind, x, h0, c0, W_ih, W_hh, b_ih, b_hh)
    tensors = (x, h0, c0, W_ih, W_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _Layer.apply(kind, backend, *tensors)
    # Nothing to differentiate (inference, torch.no_grad): no graph to record, so no autograd
    # Function, whose bookkeeping took ~15 us per call, a tenth of a small forward pass.
    return _layer_forward(kind, backend, *tensors)[0]


def _torch_layer(kind, x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    """The same layer through torch's own kernels (oneDNN on CPU, cuDNN on GPU)."""
    weights = [W_ih, W_hh] + ([b_ih, b_hh] if b_ih is not None else [])
    has_bias = b_ih is not None
    if kind == "lstm":
        y, h_n, c_n = torch._VF.lstm(x, (h0[None], c0[None]), weights, has_bias, 1, 0.0, False,
                                     False, False)
        return y, h_n[0], c_n[0]
    y, h_n = torch._VF.rnn_tanh(x, h0[None], weights, has_bias, 1, 0.0, False, False, False)
    return y, h_n[0]


def lstm_layer(x, h0, c0, W_ih, W_hh, b_ih=None, b_hh=None, backend="auto"):
    """One LSTM layer over a sequence, differentiable with torch autograd.

    x: (T, B, I), h0, c0: (B, H), W_ih: (4H, I), W_hh: (4H, H), b_ih, b_hh: (4H,) or None.
    Returns y: (T, B, H), h_n: (B, H), c_n: (B, H).
    """
    return _apply("lstm", backend, x, h0, c0, W_ih, W_hh, b_ih, b_hh)


def rnn_layer(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, backend="auto"):
    """One tanh RNN layer over a sequence, differentiable with torch autograd.

    x: (T, B, I), h0: (B, H), W_ih: (H, I), W_hh: (H, H), b_ih, b_hh: (H,) or None.
    Returns y: (T, B, H), h_n: (B, H).
    """
    return _apply("rnn", backend, x, h0, None, W_ih, W_hh, b_ih, b_hh)


# ----------------------------------------------------------------------------- ConvLSTM


def _convlstm_gates_torch(a, c_prev, w_peep):
    """The pointwise half of a ConvLSTM step in torch ops (autograd does the backward).

    a: (B, 4C, Hh, Ww) convolution output; c_prev: (B, C, Hh, Ww); w_peep: (3, C, 1 or Hh, 1 or Ww)
    or None. Returns h, c: (B, C, Hh, Ww).
    """
    a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
    if w_peep is not None:
        a_i = a_i + w_peep[0] * c_prev
        a_f = a_f + w_peep[1] * c_prev
    c = torch.sigmoid(a_f) * c_prev + torch.sigmoid(a_i) * torch.tanh(a_g)
    if w_peep is not None:
        a_o = a_o + w_peep[2] * c
    return torch.sigmoid(a_o) * torch.tanh(c), c


class _ConvGates(torch.autograd.Function):
    """The pointwise half of a ConvLSTM step on the CUDA kernels."""

    @staticmethod
    def forward(ctx, a, c_prev, w_peep):
        mod = _module("cuda")
        full = None if w_peep is None else w_peep.expand(3, *c_prev.shape[1:])
        h, c, saved = mod.convlstm_gates_forward(*(_to_array(t) for t in (a, c_prev, full)))
        ctx.mod, ctx.saved, ctx.device = mod, saved, a.device
        ctx.peep_shape = None if w_peep is None else w_peep.shape
        return _to_tensor(h, a.device), _to_tensor(c, a.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, dh, dc):
        g = ctx.mod.convlstm_gates_backward(_to_array(dh), _to_array(dc), ctx.saved)
        ctx.saved = None
        da, dc_prev = _to_tensor(g["a"], ctx.device), _to_tensor(g["c_prev"], ctx.device)
        dw = None
        if ctx.peep_shape is not None:
            dw = _to_tensor(g["w_peep"], ctx.device)
            # The kernel returns per-pixel peephole gradients; sum over broadcast axes.
            dims = [d for d in (2, 3) if ctx.peep_shape[d] == 1]
            if dims:
                dw = dw.sum(dim=dims, keepdim=True)
        return da, dc_prev, dw


def convlstm_gates(a, c_prev, w_peep=None, backend="auto"):
    """h, c from the convolution output ``a`` (see ``_convlstm_gates_torch`` for shapes).

    backend: "torch" (torch ops), "cuda" (lstmkit's CUDA kernel), or "auto" (cuda for CUDA
    tensors, torch otherwise).
    """
    if backend == "auto":
        backend = "cuda" if a.is_cuda else "torch"
    if backend == "cuda":
        return _ConvGates.apply(a, c_prev, w_peep)
    if backend == "torch":
        return _convlstm_gates_torch(a, c_prev, w_peep)
    raise ValueError(f"ConvLSTM backend must be 'auto', 'torch' or 'cuda', got {backend!r}")
