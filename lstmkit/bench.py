"""``lstmkit bench``: lstmkit's LSTM backends against ``torch.nn.LSTM``, measured side by side.

All backends run in one process, interleaved (one sample of each in turn, repeated), so
machine noise hits every side alike; each row reports the median. A sample is enough calls in
a row to take about SAMPLE_SECONDS, so that fast calls are not timed one by one.

FLOP count of one LSTM layer over a sequence (multiply-adds counted as 2 FLOPs; the
elementwise gate math, O(T B H), is left out)::

    forward   = T * 2 * B * 4H * (I + H)      the input and recurrent products
    training  = 3 * forward                   forward, plus dX/dH and dW products of the same size

The SGEMM peak is measured by the command itself: on the CPU with the BLAS the Numba kernels
call (SciPy's), as the best of a few square float32 products at n = 1024; with the cuda backend,
on the GPU through torch (cuBLAS, TF32 off), at n = 4096.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from lstmkit.devices import cuda_status, true_float32

DEFAULT_BATCHES = (1, 16, 64)
DEFAULT_HIDDEN = (32, 128, 512)
QUICK_BATCHES = (1, 16)
QUICK_HIDDEN = (32, 128)


@dataclass
class Row:
    backend: str
    mode: str  # "forward" (inference, no grad) or "train" (forward + backward)
    batch: int
    hidden: int
    input: int
    seq_len: int
    median_ms: float
    gflops: float
    torch_ms: float
    speedup_vs_torch: float  # torch_ms / median_ms: above 1 means faster than torch
    frac_of_sgemm_peak: float


def lstm_flops(T: int, B: int, I: int, H: int, mode: str) -> float:
    """FLOPs of one LSTM layer over a sequence (see the module docstring)."""
    forward = T * 2.0 * B * 4 * H * (I + H)
    return forward if mode == "forward" else 3 * forward


def sgemm_peak_gflops(n: int = 1024, reps: int = 5) -> float:
    """Best float32 matrix-multiply rate of SciPy's BLAS (the one Numba calls), in GFLOP/s."""
    from scipy.linalg.blas import sgemm

    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    sgemm(1.0, a, b)
    best = min(_timed(lambda: sgemm(1.0, a, b)) for _ in range(reps))
    return 2.0 * n**3 / best / 1e9


def cuda_sgemm_peak_gflops(n: int = 4096, reps: int = 5) -> float:
    """Best float32 matrix-multiply rate of the GPU through torch (cuBLAS, TF32 off), in GFLOP/s."""
    import torch

    a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")

    def product():
        a @ b
        torch.cuda.synchronize()

    with true_float32():
        product()
        best = min(_timed(product) for _ in range(reps))
    return 2.0 * n**3 / best / 1e9


def _timed(fn, calls: int = 1) -> float:
    """Seconds per call, over `calls` calls in a row."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


SAMPLE_SECONDS = 0.02


def _calls_per_sample(fn) -> int:
    """Runs fn twice (a warm-up, then a timing) and returns how many calls fill SAMPLE_SECONDS."""
    fn()
    return max(1, min(1000, round(SAMPLE_SECONDS / max(_timed(fn), 1e-6))))


def _step_functions(backend: str, T: int, B: int, H: int, device: str):
    """(forward, train) closures for one backend at one shape, sharing torch's weights."""
    import torch

    import lstmkit.nn as lnn

    torch.manual_seed(0)
    ref = torch.nn.LSTM(H, H).to(device)
    x = torch.randn(T, B, H, device=device)
    if backend == "torch":
        model = ref
    else:
        model = lnn.LSTM(H, H, backend=backend).to(device)
        model.load_state_dict(ref.state_dict())
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            model(x)
        sync()

    xg = x.clone().requires_grad_()

    def train():
        y, _ = model(xg)
        y.sum().backward()
        sync()

    return forward, train


def run(backends=("numba", "torch"), batches=DEFAULT_BATCHES, hiddens=DEFAULT_HIDDEN,
        seq_len: int = 100, modes=("forward", "train"), reps: int = 7, numpy_max_hidden: int = 128,
        progress: bool = True) -> dict:
    """Measure every (mode, batch, hidden) point for every backend; return a JSON-able dict.

    The "numpy" reference backend is slow by design; it is timed only up to
    ``numpy_max_hidden`` and with fewer repetitions.
    """
    import numba
    import torch

    _check_devices(backends)
    threads = torch.get_num_threads()
    numba_threads = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # the same cores for both
    try:
        with true_float32() if "cuda" in backends else contextlib.nullcontext():
            return _run(backends, batches, hiddens, seq_len, modes, reps, numpy_max_hidden, progress)
    finally:
        numba.set_num_threads(numba_threads)


def _check_devices(backends) -> None:
    """One device per run: each backend is compared with torch on its own device."""
    if "cuda" not in backends:
        return
    on_cpu = sorted(set(backends) - {"cuda", "torch"})
    if on_cpu:
        raise ValueError(f"backend 'cuda' is timed against torch on the GPU, and {', '.join(on_cpu)} "
                         "against torch on the CPU: measure them in two runs (--backend cuda, then "
                         f"{' '.join('--backend ' + b for b in on_cpu)})")
    import torch

    status, torch_cuda = cuda_status(), torch.cuda.is_available()
    if status.mode != "gpu" or not torch_cuda:
        raise ValueError(f"backend 'cuda' needs a CUDA GPU that both numba and torch can use: numba "
                         f"reports '{status}', torch.cuda.is_available() is {torch_cuda}")


def _run(backends, batches, hiddens, seq_len, modes, reps, numpy_max_hidden, progress) -> dict:
    import numba
    import torch

    from lstmkit.progress import bar as progress_bar

    threads = torch.get_num_threads()
    device = "cuda" if "cuda" in backends else "cpu"
    if "torch" not in backends:
        backends = (*backends, "torch")
    peak = cuda_sgemm_peak_gflops() if device == "cuda" else sgemm_peak_gflops()
    points = [(m, b, h) for m in modes for b in batches for h in hiddens]
    rows: list[Row] = []
    bar = progress_bar(points, "lstmkit bench", disable=not progress)
    for mode, B, H in bar:
        bar.set_postfix_str(f"{mode} B={B} H={H}")
        active = [b for b in backends if b != "numpy" or H <= numpy_max_hidden]
        fns = {b: _step_functions(b, seq_len, B, H, device)[mode == "train"] for b in active}
        # Warm-up (compiles, oneDNN primitive creation, caches), then calls per sample: a
        # sample of a fraction of a millisecond is at the mercy of the scheduler.
        calls = {b: _calls_per_sample(fn) for b, fn in fns.items()}
        times: dict[str, list[float]] = {b: [] for b in active}
        for r in range(reps):
            for b, fn in fns.items():
                if b == "numpy" and r >= 2:
                    continue
                times[b].append(_timed(fn, calls[b]))
        torch_ms = statistics.median(times["torch"]) * 1e3
        flops = lstm_flops(seq_len, B, H, H, mode)
        for b in active:
            ms = statistics.median(times[b]) * 1e3
            gflops = flops / (ms / 1e3) / 1e9
            rows.append(Row(b, mode, B, H, H, seq_len, float(f"{ms:.4g}"), float(f"{gflops:.4g}"),
                            float(f"{torch_ms:.4g}"), round(torch_ms / ms, 3), float(f"{gflops / peak:.3g}")))
    return {"machine": {"cpu_count": os.cpu_count(), "torch_threads": threads,
                        "numba_threads": numba.get_num_threads(),
                        "sgemm_peak_gflops": round(peak, 1), "python": sys.version.split()[0],
                        "torch": torch.__version__,
                        "device": device,
                        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
                        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")},
            "rows": [asdict(r) for r in rows]}


_MEMORY_SCRIPT = """
import os, sys, threading, time, torch
import lstmkit.nn as lnn
backend, T, B, H = sys.argv[1], *map(int, sys.argv[2:5])
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
torch.manual_seed(0)
m = torch.nn.LSTM(H, H) if backend == "torch" else lnn.LSTM(H, H, backend=backend)
m(torch.randn(2, B, H, requires_grad=True))[0].sum().backward()  # compile, create primitives
x = torch.randn(T, B, H, requires_grad=True)
base, peak, done = rss(), [0], threading.Event()
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.0005)
threading.Thread(target=watch, daemon=True).start()
time.sleep(0.01)
m(x)[0].sum().backward()
done.set()
peak[0] = max(peak[0], rss())
print((peak[0] - base) / 2**20)
"""


def training_memory_mb(backend: str, T: int = 1000, B: int = 16, H: int = 128) -> float:
    """Growth of resident memory (MiB) during one training step, in a fresh process.

    A thread samples the process's resident set every half millisecond while the step runs;
    the baseline is taken after imports and a warm-up step (so compilation, whose own peak can
    be larger than the step's, does not count). What remains is the step's activations and
    gradients: what a backend stores for backward. Linux only (/proc).
    """
    import subprocess

    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, backend, str(T), str(B), str(H)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


_COMPILE_SCRIPT = """
import time
start = time.perf_counter()
from lstmkit.kernels import cpu
cpu.compile_all()
print(time.perf_counter() - start)
"""


def compile_seconds() -> dict[str, float]:
    """Import plus ``cpu.compile_all()`` (every CPU kernel: LSTM/RNN, forward/backward,
    float32/64): once with an empty Numba cache (a new environment), once more from the cache
    it left."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        run_once = lambda: float(subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env,
                                                capture_output=True, text=True, check=True).stdout)
        return {"cold_s": round(run_once(), 2), "cached_s": round(run_once(), 2)}


def format_table(result: dict) -> str:
    m = result["machine"]
    device = f"{m['device']} ({m['gpu']})" if m.get("gpu") else m["device"]
    note = (f"; note: OPENBLAS_CORETYPE={m['openblas_coretype']} may hold BLAS back (unset it for "
            "this command to measure the machine)" if m.get("openblas_coretype") else "")
    lines = [f"SGEMM peak {m['sgemm_peak_gflops']} GFLOP/s; torch threads {m['torch_threads']}, "
             f"numba threads {m['numba_threads']}; device {device}{note}",
             f"{'mode':<8}{'batch':>6}{'hidden':>7}  {'backend':<7}{'ms':>10}{'GFLOP/s':>9}"
             f"{'torch ms':>10}{'torch/ours':>11}{'of peak':>9}"]
    for r in result["rows"]:
        lines.append(f"{r['mode']:<8}{r['batch']:>6}{r['hidden']:>7}  {r['backend']:<7}"
                     f"{r['median_ms']:>10.3f}{r['gflops']:>9.1f}{r['torch_ms']:>10.3f}"
                     f"{r['speedup_vs_torch']:>11.2f}{r['frac_of_sgemm_peak']:>9.2f}")
    if "memory_mb" in result:
        mem = result["memory_mb"]
        per_backend = ", ".join(f"{b} {v:.1f} MiB" for b, v in mem["backends"].items())
        lines.append(f"training-step memory (T={mem['seq_len']}, B={mem['batch']}, H={mem['hidden']}), "
                     f"growth of resident memory: {per_backend}")
    if "compile" in result:
        c = result["compile"]
        lines.append(f"CPU kernels, import + first call: {c['cold_s']:.1f} s with an empty Numba cache, "
                     f"{c['cached_s']:.2f} s from the cache")
    return "\n".join(lines)


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (a size or a count: 0 would time or run nothing)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def add_arguments(p) -> None:
    p.add_argument("--backend", action="append", choices=["numba", "numpy", "cuda"],
                   help="backend(s) to compare with torch (default: numba); cuda, against torch "
                        "on the GPU, in a run of its own")
    p.add_argument("--quick", action="store_true", help="a small grid: batch {1, 16} x hidden {32, 128}")
    p.add_argument("--batch", type=positive_int, nargs="+", help="batch sizes (default 1 16 64)")
    p.add_argument("--hidden", type=positive_int, nargs="+",
                   help="hidden sizes, input size = hidden (default 32 128 512)")
    p.add_argument("--seq-len", type=positive_int, default=100, help="sequence length T (default 100)")
    p.add_argument("--mode", choices=["forward", "train"], action="append",
                   help="forward (inference) and/or train (forward + backward); default both")
    p.add_argument("--reps", type=positive_int, default=7,
                   help="timed repetitions per point, the median reported (default 7)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' for stdout)")
    p.add_argument("--no-extras", action="store_true",
                   help="skip the memory (T=1000) and CPU compile-time measurements (skipped with --quick "
                        "and --backend cuda too)")


def main(args) -> int:
    batches = args.batch or (QUICK_BATCHES if args.quick else DEFAULT_BATCHES)
    hiddens = args.hidden or (QUICK_HIDDEN if args.quick else DEFAULT_HIDDEN)
    backends = tuple(args.backend or ["numba"])
    try:
        result = run(backends=backends, batches=batches, hiddens=hiddens, seq_len=args.seq_len,
                     modes=tuple(args.mode or ["forward", "train"]), reps=3 if args.quick else args.reps,
                     progress=sys.stderr.isatty())
    except ValueError as e:
        print(f"lstmkit bench: error: {e}", file=sys.stderr)
        return 2
    if not (args.quick or args.no_extras or "cuda" in backends):  # the extras measure the CPU
        result["memory_mb"] = {"seq_len": 1000, "batch": 16, "hidden": 128, "backends": {
            b: round(training_memory_mb(b), 1) for b in [*backends, "torch"]}}
        result["compile"] = compile_seconds()
    if args.json == "-":
        print(json.dumps(result, indent=1))
    else:
        print(format_table(result))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
    return 0
