"""Check lstmkit's CUDA kernels on a real GPU, then time them against torch.nn.LSTM (cuDNN).

    python scripts/gpu_check.py                                  # on the GPU machine, < 3 minutes
    NUMBA_ENABLE_CUDASIM=1 python scripts/gpu_check.py --tiny    # tiny sizes on the CPU simulator

1. correctness: every kernel (tiled, teaching and persistent; LSTM and RNN; forward and
   backward; the ConvLSTM gates with and without peepholes) against lstmkit.reference in
   float64 on the CPU (ConvLSTM backward: torch autograd in float64), at realistic sizes;
2. the torch zero-copy path: CUDA tensors in, numba device arrays out, no copies;
3. timing: forward and forward+backward of every kernel family and of
   torch.nn.LSTM on cuDNN with the same weights, T = 100, I = H, float32, median of --reps
   runs after warm-up, with the device synchronised around every run.

Needs numpy, numba-cuda and torch (with CUDA for the comparison); no network. Exit code 1 if
any check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lstmkit  # noqa: E402
from lstmkit import reference as R  # noqa: E402
from lstmkit.functional import convlstm_gates  # noqa: E402

TOL = 1e-4  # max |ours - reference| relative to max(1, max |reference|), for every array
FAILURES: list[str] = []
TORCH_NAMES = {"W_ih": "weight_ih_l0", "W_hh": "weight_hh_l0", "b_ih": "bias_ih_l0", "b_hh": "bias_hh_l0"}


def report(name: str, errors: dict[str, float]) -> None:
    worst = max(errors, key=errors.get)
    ok = errors[worst] <= TOL
    if not ok:
        FAILURES.append(name)
    print(f"  {'ok  ' if ok else 'FAIL'} {name:<44} worst {worst:<6} {errors[worst]:.1e}", flush=True)


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max(initial=0.0) / max(1.0, np.abs(ref).max(initial=0.0)))


def layer(kind: str, T: int, B: int, I: int, H: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    r = lambda *s, k=0.5: (rng.standard_normal(s) * k).astype(np.float32)
    G, w = (4 if kind == "lstm" else 1), 1.0 / np.sqrt(max(H, I))
    args = {"x": r(T, B, I), "h0": r(B, H)} | ({"c0": r(B, H)} if kind == "lstm" else {})
    args |= {"W_ih": r(G * H, I, k=w), "W_hh": r(G * H, H, k=w), "b_ih": r(G * H), "b_hh": r(G * H)}
    upstream = [r(T, B, H, k=1.0), r(B, H, k=1.0)] + ([r(B, H, k=1.0)] if kind == "lstm" else [])
    return args, upstream


def check_sequences(K, sizes) -> None:
    print("\n1. kernels against lstmkit.reference (float64 on the CPU)", flush=True)
    for kind in ("lstm", "rnn"):
        fwd, bwd = (K.lstm_forward, K.lstm_backward) if kind == "lstm" else (K.rnn_forward, K.rnn_backward)
        rfwd, rbwd = (R.lstm_forward, R.lstm_backward) if kind == "lstm" else (R.rnn_forward, R.rnn_backward)
        for T, B, I, H in sizes:
            args, up = layer(kind, T, B, I, H, seed=T + B + H)
            ref = rfwd(**{k: v.astype(np.float64) for k, v in args.items()})
            ref_g = rbwd(*[u.astype(np.float64) for u in up], ref[-1])
            for kernel in K.KERNELS:
                out = fwd(**args, kernel=kernel)
                grads = bwd(*up, out[-1])
                errs = {n: rel_err(o, r) for n, o, r in zip(["y", "h_n", "c_n"], out[:-1], ref[:-1])}
                errs |= {f"d{n}": rel_err(g, ref_g[n]) for n, g in grads.items()}
                report(f"{kind} {kernel:<8} T={T} B={B} I={I} H={H}", errs)


def check_convlstm(K, B: int, C: int, S: int) -> None:
    rng = np.random.default_rng(2)
    for peep in (False, True):
        a = (rng.standard_normal((B, 4 * C, S, S)) * 1.5).astype(np.float32)
        c_prev = rng.standard_normal((B, C, S, S)).astype(np.float32)
        w = (rng.standard_normal((3, C, S, S)) * 0.5).astype(np.float32) if peep else None
        dh, dc = (rng.standard_normal((B, C, S, S)).astype(np.float32) for _ in range(2))
        h, c, saved = K.convlstm_gates_forward(a, c_prev, w)
        grads = K.convlstm_gates_backward(dh, dc, saved)
        leaves = [None if v is None else torch.tensor(v, dtype=torch.float64, requires_grad=True)
                  for v in (a, c_prev, w)]
        h_t, c_t = convlstm_gates(*leaves, backend="torch")
        ((h_t * torch.from_numpy(dh)).sum() + (c_t * torch.from_numpy(dc)).sum()).backward()
        errs = {"h": rel_err(h, h_t.detach()), "c": rel_err(c, c_t.detach())}
        errs |= {f"d{n}": rel_err(grads[n], leaf.grad) for n, leaf in zip(["a", "c_prev", "w_peep"], leaves)
                 if leaf is not None}
        report(f"convlstm gates peephole={peep} B={B} C={C} {S}x{S}", errs)


def check_zero_copy(K, cuda) -> None:
    print("\n2. torch CUDA tensors: zero-copy in and out", flush=True)
    if not torch.cuda.is_available() or lstmkit.cuda_status().mode != "gpu":
        print("  skipped: needs torch with CUDA on a real GPU")
        return
    args, up = layer("lstm", 20, 8, 32, 48, seed=9)
    host = K.lstm_forward(**args)
    host_g = K.lstm_backward(*up, host[-1])
    t = {k: torch.from_numpy(v).cuda() for k, v in args.items()}
    out = K.lstm_forward(**t)
    grads = K.lstm_backward(*[torch.from_numpy(u).cuda() for u in up], out[-1])
    ptr = lambda d: d.__cuda_array_interface__["data"][0]
    checks = {
        "input read in place (saved x is the tensor's memory)": ptr(out[-1].x) == t["x"].data_ptr(),
        "outputs are numba device arrays": all(cuda.is_cuda_array(o) for o in out[:-1]),
        "torch.as_tensor(y) wraps without copying": torch.as_tensor(out[0], device="cuda").data_ptr()
        == ptr(out[0]),
        "same numbers as the NumPy path": all(
            np.array_equal(torch.as_tensor(o, device="cuda").cpu().numpy(), h)
            for o, h in zip(out[:-1], host[:-1])
        ) and all(np.array_equal(grads[n].copy_to_host(), host_g[n]) for n in host_g),
    }
    for name, ok in checks.items():
        if not ok:
            FAILURES.append(name)
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")


def median_ms(fn, sync, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def time_config(K, B: int, H: int, T: int, dev: str, sync, reps: int, warmup: int) -> dict:
    """Median ms of (forward, forward+backward) for torch and each of our kernels at one size."""
    args, up = layer("lstm", T, B, H, H, seed=B + H)
    t = {k: torch.from_numpy(v).to(dev) for k, v in args.items()}
    dy = torch.from_numpy(up[0]).to(dev)
    # Our kernels get the torch tensors themselves (zero-copy) on a GPU, NumPy on the simulator.
    on_gpu = dev == "cuda" and lstmkit.cuda_status().mode == "gpu"
    ours, dy_ours = (t, dy) if on_gpu else (args, up[0])
    lstm = torch.nn.LSTM(H, H).to(dev)
    with torch.no_grad():  # the same weights: torch's layout and gate order are lstmkit's
        for ours_name, torch_name in TORCH_NAMES.items():
            getattr(lstm, torch_name).copy_(t[ours_name])
    x, state = t["x"].clone().requires_grad_(), (t["h0"][None], t["c0"][None])

    def torch_fwd():
        with torch.no_grad():
            lstm(x, state)

    def torch_fb():
        y, _ = lstm(x, state)
        y.backward(dy)

    row = {"torch": (median_ms(torch_fwd, sync, reps, warmup), median_ms(torch_fb, sync, reps, warmup))}
    for kernel in K.KERNELS:
        def fwd(kernel=kernel):
            return K.lstm_forward(**ours, kernel=kernel)

        def fb(kernel=kernel):
            K.lstm_backward(dy_ours, None, None, fwd(kernel)[-1])

        row[kernel] = (median_ms(fwd, sync, reps, warmup), median_ms(fb, sync, reps, warmup))
    return row


def benchmark(K, cuda, configs, T: int, reps: int, warmup: int, deadline: float) -> None:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"\n3. timing, T={T}, I=H, float32, median of {reps} after {warmup} warm-up "
          f"(torch on {dev}: {'cuDNN' if dev == 'cuda' else 'CPU, for --tiny only'})", flush=True)

    def sync():
        cuda.synchronize()
        if dev == "cuda":
            torch.cuda.synchronize()

    rows = []
    for B, H in configs:
        if time.perf_counter() > deadline:
            reps, warmup = min(reps, 3), 1  # stay inside the time budget
        rows.append(((B, H), time_config(K, B, H, T, dev, sync, reps, warmup)))
        print(f"  done B={B} H={H}", flush=True)

    names = ("torch",) + K.KERNELS
    head = " ".join(f"{n[:8]:>8}" for n in names)
    print(f"\n   B     H | forward ms {head} | fwd+bwd ms {head} | torch/ours, fwd and f+b: "
          + "  ".join(f"{n[:11]:>11}" for n in K.KERNELS))
    for (B, H), r in rows:
        tf, tb = r["torch"]
        fwd = " ".join(f"{r[n][0]:8.2f}" for n in names)
        fb = " ".join(f"{r[n][1]:8.2f}" for n in names)
        ratios = "  ".join(f"{tf / r[n][0]:5.2f} {tb / r[n][1]:5.2f}" for n in K.KERNELS)
        print(f"  {B:3d} {H:5d} |            {fwd} |            {fb} |                          {ratios}")
    print("  (ratio torch/ours > 1 means ours is faster; torch forward runs under no_grad; TF32 off)")


def launch_overhead(K, cuda, reps: int, H: int) -> None:
    """Host cost of kernel launches: at small sizes the tiled forward is bound by it."""
    B = 1
    hs, cs = (cuda.to_device(np.zeros((reps + 1, B, H), np.float32)) for _ in range(2))
    xp, gates = (cuda.to_device(np.zeros((reps * B, 4 * H), np.float32)) for _ in range(2))
    W_hh, row = cuda.to_device(np.zeros((4 * H, H), np.float32)), cuda.to_device(np.zeros(H, np.float32))
    kernels = {
        "tiled LSTM step (5 arrays)": (K._launcher(K._lstm_step_tiled, *K._grid2(H, B)),
                                       lambda t: (t, xp, W_hh, hs, cs, gates)),
        "fill (1 array)": (K._launcher(K._fill_kernel, *K._grid1(H)), lambda t: (row, K.ZERO)),
    }
    print(f"\n4. launch cost, {reps} launches at B={B} H={H}", flush=True)
    for name, (launch, args) in kernels.items():
        launch(*args(0))
        cuda.synchronize()
        start = time.perf_counter()
        for t in range(reps):
            launch(*args(t))
        launched = time.perf_counter() - start
        cuda.synchronize()
        total = time.perf_counter() - start
        print(f"  {name:<28} {launched / reps * 1e6:7.1f} us on the host, "
              f"{total / reps * 1e6:7.1f} us until the GPU finished", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny sizes and 1 rep (to run under the simulator)")
    p.add_argument("--reps", type=int, default=10)
    opts = p.parse_args(argv)
    start = time.perf_counter()
    status = lstmkit.cuda_status()
    print(f"lstmkit {lstmkit.__version__}; {status}; torch {torch.__version__} "
          f"(CUDA {'available' if torch.cuda.is_available() else 'not available'})", flush=True)
    if status.mode == "none" or (status.mode == "simulator" and not opts.tiny):
        print("needs a CUDA GPU (or --tiny with NUMBA_ENABLE_CUDASIM=1 for a dry run)")
        return 2
    from numba import cuda

    from lstmkit.kernels import cuda as K

    # Time and compare float32 against float32: cuDNN's RNNs may otherwise use TF32.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    print(f"TILE = {K.TILE}", flush=True)
    if opts.tiny:
        sizes, conv, configs, T, reps, warmup = [(3, 2, 5, 9)], (2, 2, 3), [(1, 4), (2, 9)], 3, 1, 1
    else:
        sizes = [(50, 16, 128, 128), (50, 64, 256, 256), (20, 5, 33, 130)]
        conv, configs = (8, 32, 32), [(1, 32), (1, 128), (1, 512), (16, 128), (64, 256), (64, 512)]
        T, reps, warmup = 100, opts.reps, 2
    check_sequences(K, sizes)
    check_convlstm(K, *conv)
    check_zero_copy(K, cuda)
    benchmark(K, cuda, configs, T, reps, warmup, deadline=start + 120)
    launch_overhead(K, cuda, *((2, 4) if opts.tiny else (500, 128)))
    print(f"\ntotal {time.perf_counter() - start:.0f} s;",
          "ALL CHECKS PASSED" if not FAILURES else f"FAILED: {', '.join(FAILURES)}", flush=True)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
