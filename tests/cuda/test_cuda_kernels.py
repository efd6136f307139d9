"""The CUDA kernels (teaching, tiled and persistent) agree with lstmkit.reference, forward and backward.

Inputs are float32; the reference runs in float64 on the same numbers cast up; results must
agree to rtol 1e-4, atol 1e-5. Shapes are tiny (the simulator runs every GPU thread as a
Python thread) but placed on the edges: B = 1, H = 1, sizes one past a multiple of TILE,
two tiles along a reduced axis, T = 1, and empty sequences or batches.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from numba import cuda

import lstmkit.devices as D
from lstmkit import reference as R
from lstmkit.functional import convlstm_gates
from lstmkit.kernels import cuda as K

TILE = K.TILE
RTOL, ATOL = 1e-4, 1e-5
SIMULATOR = D.cuda_status().mode == "simulator"
FUNCS = {"lstm": (R.lstm_forward, R.lstm_backward, K.lstm_forward, K.lstm_backward),
         "rnn": (R.rnn_forward, R.rnn_backward, K.rnn_forward, K.rnn_backward)}
requires_torch_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or SIMULATOR,
    reason="needs torch CUDA tensors and a real GPU (the simulator cannot read GPU memory)",
)


def make(kind: str, T: int, B: int, I: int, H: int, *, bias: bool = True, seed: int = 0):
    """float32 inputs, parameters (scaled like torch's initialisation) and upstream gradients."""
    rng = np.random.default_rng(seed)
    r = lambda *s, k=0.5: (rng.standard_normal(s) * k).astype(np.float32)
    G, w = (4 if kind == "lstm" else 1), 1.0 / np.sqrt(max(H, I))
    args = {"x": r(T, B, I), "h0": r(B, H)} | ({"c0": r(B, H)} if kind == "lstm" else {})
    args |= {"W_ih": r(G * H, I, k=w), "W_hh": r(G * H, H, k=w),
             "b_ih": r(G * H) if bias else None, "b_hh": r(G * H) if bias else None}
    upstream = [r(T, B, H, k=1.0), r(B, H, k=1.0)] + ([r(B, H, k=1.0)] if kind == "lstm" else [])
    return args, upstream


def as64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def close(actual, expected, name: str) -> None:
    assert isinstance(actual, np.ndarray) and actual.dtype == np.float32, f"{name}: {actual!r:.80}"
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=name)


def check_against_reference(kind: str, kernel: str, args: dict, upstream: list) -> None:
    ref_fwd, ref_bwd, fwd, bwd = FUNCS[kind]
    ref = ref_fwd(**{k: as64(v) for k, v in args.items()})
    ours = fwd(**args, kernel=kernel)
    for name, o, r in zip(["y", "h_n", "c_n"], ours[:-1], ref[:-1]):
        close(o, r, name)
    ref_grads = ref_bwd(*[as64(u) for u in upstream], ref[-1])
    grads = bwd(*upstream, ours[-1])
    assert set(grads) == set(ref_grads) - {"dh_norms"}
    for name, g in grads.items():
        close(g, ref_grads[name], f"d{name}")


# ------------------------------------------------------------------------ LSTM and RNN


CASES = [  # T, B, I, H, bias
    (3, 2, 5, TILE + 1, True),  # H one past a tile: two blocks per step, two tiles along k
    (1, 1, 1, 1, False),  # the smallest layer, without biases
    (2, TILE + 1, TILE + 2, 3, True),  # B and I past a tile: two tiles along the input product's k
]


@pytest.mark.parametrize("T,B,I,H,bias", CASES)
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("kernel", K.KERNELS)
def test_forward_and_backward_match_reference(kernel, kind, T, B, I, H, bias):
    args, upstream = make(kind, T, B, I, H, bias=bias, seed=100 * T + 10 * B + H)
    check_against_reference(kind, kernel, args, upstream)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_persistent_kernel_with_more_rows_than_threads(kind):
    # G*H gate rows over PERSISTENT_THREADS threads: each thread runs several rows (and, in
    # the simulator, several units) of every step, in both phases of forward and backward.
    H = min(K.PERSISTENT_MAX_H, K.PERSISTENT_THREADS + 3)
    args, upstream = make(kind, 2, 1, 3, H, seed=11)
    check_against_reference(kind, "persistent", args, upstream)


def test_persistent_kernels_split_dot_products_over_idle_threads():
    # One thread per dot product while they fill a block; with fewer, each dot product is cut
    # into slices of at least SPLIT_MIN_TERMS terms. In the simulator the cases above split
    # (LSTM backward at H = 3: 3 dot products of 12 terms; forward: 12 of 3), unevenly too.
    assert K._persistent(K._seq_forward_persistent, 1, K.PERSISTENT_THREADS, 64)[1] == 1
    _, splits = K._persistent(K._seq_backward_persistent, 1, 3, 12)
    assert splits == max(1, min(K.PERSISTENT_THREADS // 3, 12 // K.SPLIT_MIN_TERMS))
    if SIMULATOR:
        assert splits == 10 and K._persistent(K._seq_forward_persistent, 1, 12, 3)[1] == 2


def test_auto_picks_persistent_up_to_its_measured_limit_then_tiled():
    assert K._pick_kernel("auto", 1) == K._pick_kernel("auto", K.PERSISTENT_AUTO_UP_TO) == "persistent"
    assert K._pick_kernel("auto", K.PERSISTENT_AUTO_UP_TO + 1) == "tiled"
    assert K._pick_kernel("tiled", 3) == "tiled"  # an explicit choice stands
    args, upstream = make("lstm", 2, 2, 3, 5, seed=4)
    assert K.lstm_forward(**args)[-1].kernel == "persistent"
    check_against_reference("lstm", "auto", args, upstream)


def test_persistent_kernel_names_its_limit_on_hidden_size():
    args, _ = make("rnn", 1, 1, 1, K.PERSISTENT_MAX_H + 1)
    with pytest.raises(ValueError, match=f"H <= {K.PERSISTENT_MAX_H}, got H = {K.PERSISTENT_MAX_H + 1}"):
        K.rnn_forward(**args, kernel="persistent")


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_missing_upstream_gradients_mean_zero(kind):
    args, (dy, dh_n, *rest) = make(kind, 2, 3, 2, 4, seed=7)
    # LSTM: no dy and no dc_n (only the final h is used); RNN: no dh_n (only the outputs).
    upstream = [None, dh_n, None] if kind == "lstm" else [dy, None]
    check_against_reference(kind, "tiled", args, upstream)


@pytest.mark.parametrize("T,B", [(0, 3), (2, 0), (0, 0)])
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("kernel", K.KERNELS)
def test_empty_sequence_or_batch(kernel, kind, T, B):
    I, H = 3, 5
    args, upstream = make(kind, T, B, I, H)
    _, _, fwd, bwd = FUNCS[kind]
    out = fwd(**args, kernel=kernel)
    assert out[0].shape == (T, B, H) and out[0].dtype == np.float32
    if T == 0:  # nothing happened: the initial states come back
        np.testing.assert_array_equal(out[1], args["h0"])
        if kind == "lstm":
            np.testing.assert_array_equal(out[2], args["c0"])
    grads = bwd(*upstream, out[-1])
    assert grads["x"].shape == (T, B, I)
    if T == 0:
        np.testing.assert_array_equal(grads["h0"], upstream[1])
        if kind == "lstm":
            np.testing.assert_array_equal(grads["c0"], upstream[2])
    for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
        assert grads[name].shape == args[name].shape
        assert not grads[name].any(), f"d{name} must be zero without any step or batch row"


def test_device_arrays_stay_on_the_device():
    args, upstream = make("lstm", 2, 3, 4, 5, seed=3)
    host = K.lstm_forward(**args)
    dev = K.lstm_forward(**{k: None if v is None else cuda.to_device(v) for k, v in args.items()})
    for name, h, d in zip(["y", "h_n", "c_n"], host[:-1], dev[:-1]):
        assert not isinstance(d, np.ndarray), f"{name} should be a device array"
        np.testing.assert_array_equal(d.copy_to_host(), h, err_msg=name)
    host_grads = K.lstm_backward(*upstream, host[-1])
    dev_grads = K.lstm_backward(*[cuda.to_device(u) for u in upstream], dev[-1])
    assert set(dev_grads) == set(host_grads)
    for name, g in dev_grads.items():
        assert not isinstance(g, np.ndarray), f"d{name} should be a device array"
        np.testing.assert_array_equal(g.copy_to_host(), host_grads[name], err_msg=name)


@pytest.mark.parametrize("kernel", K.KERNELS)
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_outputs_and_upstream_gradients_share_no_memory_with_saved(kind, kernel):
    """Writing into the outputs between forward and backward changes no gradient, and
    backward leaves the caller's upstream gradients as they were (it copies the state
    gradients that its time loop overwrites). T*B*H is over one grid of the copy kernels
    (on the simulator)."""
    args, upstream = make(kind, 3, 2, 3, 5, seed=4)
    assert 3 * 2 * 5 > K.STRIDE_BLOCKS * K.STRIDE_THREADS or not SIMULATOR
    dev = {k: None if v is None else cuda.to_device(v) for k, v in args.items()}
    fwd, bwd = FUNCS[kind][2:]
    expected = bwd(*upstream, fwd(**args, kernel=kernel)[-1])
    *outs, saved = fwd(**dev, kernel=kernel)
    for o in outs:
        o.copy_to_device(np.full(o.shape, np.nan, np.float32))
    up = [cuda.to_device(u) for u in upstream]
    grads = bwd(*up, saved)
    for name, g in grads.items():
        np.testing.assert_array_equal(g.copy_to_host(), expected[name], err_msg=name)
    for u, d in zip(upstream, up):
        np.testing.assert_array_equal(d.copy_to_host(), u)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_float64_input_is_a_type_error_saying_float32(kind):
    args, _ = make(kind, 2, 2, 3, 4)
    fwd = FUNCS[kind][2]
    with pytest.raises(TypeError, match="float32"):
        fwd(**{k: as64(v) for k, v in args.items()})
    with pytest.raises(TypeError, match="^W_hh .*float32"):  # one float64 argument is enough
        fwd(**(args | {"W_hh": as64(args["W_hh"])}))
    with pytest.raises(TypeError, match="^x .*float32"):  # on the device too
        fwd(**(args | {"x": cuda.to_device(as64(args["x"]))}))


BAD_SHAPES = [("x", (2, 3)), ("h0", (2, 5)), ("c0", (3, 4)), ("W_hh", (16, 5)), ("W_ih", (16, 4)),
              ("b_ih", (15,)), ("b_hh", (16, 1))]


@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("name,shape", BAD_SHAPES)
def test_wrong_shape_is_a_value_error_naming_the_argument(name, shape, on_device):
    args, _ = make("lstm", 2, 2, 3, 4)
    args[name] = np.zeros(shape, np.float32)
    if on_device:
        args = {k: cuda.to_device(v) for k, v in args.items()}
    with pytest.raises(ValueError, match=f"^{name} "):
        K.lstm_forward(**args)


def test_other_bad_input():
    args, (dy, dh_n, dc_n) = make("lstm", 2, 2, 3, 4)
    with pytest.raises(ValueError, match="kernel must be .auto. or one of"):
        K.lstm_forward(**args, kernel="fast")
    with pytest.raises(ValueError, match="b_ih and b_hh"):
        K.lstm_forward(**(args | {"b_hh": None}))
    nan = args["x"].copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="^x contains NaN"):
        K.lstm_forward(**(args | {"x": nan}))
    with pytest.raises(TypeError, match="^h0 must be a NumPy array"):
        K.lstm_forward(**(args | {"h0": args["h0"].tolist()}))
    strided = cuda.to_device(np.zeros((2, 2, 6), np.float32))[:, :, ::2]
    with pytest.raises(ValueError, match="^x must be C-contiguous"):
        K.lstm_forward(**(args | {"x": strided}))
    saved = K.lstm_forward(**args)[-1]
    with pytest.raises(ValueError, match="^dy "):
        K.lstm_backward(dy[:1], dh_n, dc_n, saved)
    with pytest.raises(ValueError, match="^dc_n "):
        K.lstm_backward(dy, dh_n, cuda.to_device(dc_n[:1]), saved)
    with pytest.raises(TypeError, match="^dh_n .*float32"):
        K.lstm_backward(dy, as64(dh_n), dc_n, saved)


# ------------------------------------------------------------------------- ConvLSTM gates


def conv_inputs(B: int, C: int, Hh: int, Ww: int, peep: bool, seed: int):
    """A ConvLSTM step's pieces: x, h_prev, W, b (float64, for the reference) and the gates'
    inputs a (the convolution, by torch, rounded to float32), c_prev and w_peep (float32)."""
    rng = np.random.default_rng(seed)
    Cin, k = 2, 3
    x, h = rng.standard_normal((B, Cin, Hh, Ww)), rng.standard_normal((B, C, Hh, Ww))
    W = rng.standard_normal((4 * C, Cin + C, k, k)) * 0.3
    b = rng.standard_normal(4 * C) * 0.3
    a = torch.nn.functional.conv2d(torch.from_numpy(np.concatenate([x, h], axis=1)),
                                   torch.from_numpy(W), torch.from_numpy(b), padding=k // 2)
    c_prev = rng.standard_normal((B, C, Hh, Ww)).astype(np.float32)
    w_peep = (rng.standard_normal((3, C, Hh, Ww)) * 0.5).astype(np.float32) if peep else None
    return x, h, W, b, a.numpy().astype(np.float32), c_prev, w_peep


@pytest.mark.parametrize("B,C,Hh,Ww", [(2, 3, 4, 5), (1, 1, 1, 1), (3, 2, 5, 7)])
@pytest.mark.parametrize("peep", [False, True])
def test_convlstm_gates_forward_matches_reference(peep, B, C, Hh, Ww):
    x, h_prev, W, b, a, c_prev, w_peep = conv_inputs(B, C, Hh, Ww, peep, seed=B + C + Ww)
    h, c, _ = K.convlstm_gates_forward(a, c_prev, w_peep)
    h_ref, c_ref = R.convlstm_step_forward(x, h_prev, as64(c_prev), W, b, as64(w_peep))
    close(h, h_ref, "h")
    close(c, c_ref, "c")


@pytest.mark.parametrize("upstream", ["dh and dc", "dh only", "dc only"])
@pytest.mark.parametrize("peep", [False, True])
def test_convlstm_gates_backward_matches_torch_autograd(peep, upstream):
    B, C, Hh, Ww = 2, 3, 4, 5
    rng = np.random.default_rng(11)
    a = (rng.standard_normal((B, 4 * C, Hh, Ww)) * 1.5).astype(np.float32)
    c_prev = rng.standard_normal((B, C, Hh, Ww)).astype(np.float32)
    w_peep = (rng.standard_normal((3, C, Hh, Ww)) * 0.5).astype(np.float32) if peep else None
    dh, dc = (rng.standard_normal((B, C, Hh, Ww)).astype(np.float32) for _ in range(2))
    dh, dc = (None if name not in upstream else g for name, g in (("dh", dh), ("dc", dc)))

    h, c, saved = K.convlstm_gates_forward(a, c_prev, w_peep)
    grads = K.convlstm_gates_backward(dh, dc, saved)

    leaves = [None if v is None else torch.tensor(v, dtype=torch.float64, requires_grad=True)
              for v in (a, c_prev, w_peep)]
    h_t, c_t = convlstm_gates(*leaves, backend="torch")  # torch ops: autograd's gradients
    loss = sum((out * torch.from_numpy(as64(g))).sum() for out, g in ((h_t, dh), (c_t, dc)) if g is not None)
    loss.backward()
    close(h, h_t.detach().numpy(), "h")
    close(c, c_t.detach().numpy(), "c")
    assert set(grads) == {"a", "c_prev"} | ({"w_peep"} if peep else set())
    for name, leaf in zip(["a", "c_prev", "w_peep"], leaves):
        if leaf is not None:
            close(grads[name], leaf.grad.numpy(), f"d{name}")


def test_convlstm_gates_empty_batch():
    C, Hh, Ww = 2, 3, 3
    a, c_prev = np.zeros((0, 4 * C, Hh, Ww), np.float32), np.zeros((0, C, Hh, Ww), np.float32)
    w_peep = np.ones((3, C, Hh, Ww), np.float32)
    h, c, saved = K.convlstm_gates_forward(a, c_prev, w_peep)
    assert h.shape == c.shape == (0, C, Hh, Ww)
    grads = K.convlstm_gates_backward(None, None, saved)
    assert grads["a"].shape == a.shape and grads["c_prev"].shape == c_prev.shape
    np.testing.assert_array_equal(grads["w_peep"], np.zeros_like(w_peep))


def test_convlstm_gates_bad_input():
    a, c_prev = np.zeros((2, 8, 3, 3), np.float32), np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(TypeError, match="^a .*float32"):
        K.convlstm_gates_forward(as64(a), c_prev)
    with pytest.raises(ValueError, match="^a "):
        K.convlstm_gates_forward(a[:, :7], c_prev)
    with pytest.raises(ValueError, match="^c_prev "):
        K.convlstm_gates_forward(a, c_prev[:, :, :2])
    with pytest.raises(ValueError, match="^w_peep "):
        K.convlstm_gates_forward(a, c_prev, np.zeros((2, 2, 3, 3), np.float32))
    saved = K.convlstm_gates_forward(a, c_prev)[-1]
    with pytest.raises(ValueError, match="^dh "):
        K.convlstm_gates_backward(np.zeros((2, 2, 3, 4), np.float32), None, saved)


# ------------------------------------------------------------------------------ devices


def test_cuda_status_says_how_the_kernels_run():
    status = D.cuda_status()
    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    assert status.mode == ("simulator" if simulated else "gpu")
    assert status.mode in str(status) and "\n" not in str(status)
    assert (status.device_name is not None) == (status.mode == "gpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.mode = "none"


def test_require_cuda_explains_the_simulator(monkeypatch):
    monkeypatch.setattr(D, "cuda_status", lambda: D.CudaStatus("none", "no CUDA driver"))
    with pytest.raises(RuntimeError, match="NUMBA_ENABLE_CUDASIM=1"):
        D.require_cuda()
    args, _ = make("rnn", 1, 1, 1, 1)
    with pytest.raises(RuntimeError, match="NUMBA_ENABLE_CUDASIM=1"):  # checked before anything else
        K.rnn_forward(**args)


def test_import_is_lazy_and_status_never_raises_without_the_simulator():
    code = (
        "import sys, lstmkit\n"
        "assert 'numba.cuda' not in sys.modules, 'import lstmkit loaded numba.cuda'\n"
        "status = lstmkit.cuda_status()\n"
        "print(status.mode)\n"
        "try:\n"
        "    lstmkit.devices.require_cuda()\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    mode, *message = out.stdout.splitlines()
    assert mode in ("gpu", "none")
    if mode == "none":  # this machine has no GPU: require_cuda must say what to do
        assert "NUMBA_ENABLE_CUDASIM=1" in "\n".join(message)


def test_a_gpu_counts_only_once_a_kernel_ran_on_it(monkeypatch):
    """A driver and a device are not enough: without the CUDA libraries Numba cannot compile,
    and the status must say so (and how to fix it) instead of "gpu"."""
    D._run_a_kernel()  # the test kernel itself, on whatever this run has (simulator or GPU)
    from numba import cuda

    class Device:
        name, compute_capability = b"Some GPU", (9, 0)

    monkeypatch.setattr(D, "_simulated", lambda: False)
    monkeypatch.setattr(cuda, "list_devices", lambda: [Device()], raising=False)
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "get_current_device", lambda: Device())
    assert D._probe() == D.CudaStatus("gpu", "Some GPU, compute capability 9.0", "Some GPU")

    def no_nvvm():
        raise RuntimeError("libNVVM cannot be found. Do `conda install cudatoolkit`:\nmore")

    monkeypatch.setattr(D, "_run_a_kernel", no_nvvm)
    status = D._probe()
    assert status.mode == "none" and status.device_name is None
    assert status.reason.startswith("Some GPU is here, but Numba cannot run a kernel on it: libNVVM")
    assert "numba-cuda[cu12]" in status.reason and "\n" not in status.reason


def test_gpu_usable_decides_before_numba_is_imported(monkeypatch, tmp_path):
    """Lesson 09's first cell: no driver, no GPU at once; with one, a fresh process decides."""
    path = os.environ.get("PATH", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert D.gpu_usable() == (False, "no NVIDIA driver here (nvidia-smi is not on the PATH)")
    fake = tmp_path / "nvidia-smi"  # a driver's tool on the PATH: the fresh process is asked
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{path}")
    mode, reason = D._status_in_fresh_process()
    assert mode in ("gpu", "none") and reason
    assert D.gpu_usable() == (mode == "gpu", reason)
    assert D._status_in_fresh_process(simulator=True)[0] == "simulator"


# ------------------------------------------------------------- torch CUDA tensors (real GPU)


@pytest.mark.torch_cuda
@requires_torch_cuda
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_torch_cuda_tensors_zero_copy(kind):
    args, upstream = make(kind, 3, 4, 5, 6, seed=5)
    _, _, fwd, bwd = FUNCS[kind]
    host = fwd(**args)
    host_grads = bwd(*upstream, host[-1])
    t = {k: None if v is None else torch.from_numpy(v).cuda() for k, v in args.items()}
    out = fwd(**t)
    # In: the kernels read the tensors' own memory (saved.x is x, reshaped, not a copy).
    assert out[-1].x.__cuda_array_interface__["data"][0] == t["x"].data_ptr()
    for name, d, h in zip(["y", "h_n", "c_n"], out[:-1], host[:-1]):
        assert cuda.is_cuda_array(d) and not isinstance(d, np.ndarray), name
        back = torch.as_tensor(d, device="cuda")  # out: torch wraps the device array in place
        assert back.data_ptr() == d.__cuda_array_interface__["data"][0], name
        np.testing.assert_allclose(back.cpu().numpy(), h, rtol=RTOL, atol=ATOL, err_msg=name)
    grads = bwd(*[torch.from_numpy(u).cuda() for u in upstream], out[-1])
    for name, g in grads.items():
        got = torch.as_tensor(g, device="cuda").cpu().numpy()
        np.testing.assert_allclose(got, host_grads[name], rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.torch_cuda
@requires_torch_cuda
def test_torch_cuda_bad_tensors():
    args, _ = make("lstm", 2, 2, 3, 4)
    t = {k: torch.from_numpy(v).cuda() for k, v in args.items()}
    with pytest.raises(TypeError, match="^x .*float32"):
        K.lstm_forward(**(t | {"x": t["x"].double()}))
    with pytest.raises(ValueError, match="^h0 must be C-contiguous"):
        K.lstm_forward(**(t | {"h0": t["h0"].t().contiguous().t()}))
    with pytest.raises(ValueError, match="^c0 "):
        K.lstm_forward(**(t | {"c0": t["c0"][:1]}))
