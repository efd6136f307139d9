"""Where the time of an LSTM forward pass at batch 1 goes, and how fast it could be here.

    python scripts/batch1_profile.py                      # hidden 128 and 512, T = 100 (~10 s)
    python scripts/batch1_profile.py --hidden 256 --reps 50

At batch 1 each step's recurrent product is a matrix-vector product: every weight of W_hh
(4H x H) is read once per step for one multiply-add, so the time loop runs at the speed at
which the cores read W_hh from their caches, not at the speed of their arithmetic. This script
measures, interleaved as ``lstmkit bench`` does (medians of --reps samples):

- torch: ``torch.nn.LSTM`` forward under ``no_grad``, and lstmkit's module (``backend="numba"``),
  which is what ``lstmkit bench`` compares;
- the kernel alone, ``kernels.cpu.lstm_forward`` on NumPy arrays, at input size H, and at input
  size 1 over T and 2T steps: the difference of the last two is the time loop per step, and
  what remains at T steps is the fixed cost (packing W_hh, checks, allocation);
- the cache floor: the same threads reading their share of W_hh, in the tiles the kernel
  reads, once per step for T steps, multiplying them by a vector, without the gate math and
  without waiting for each other. No time loop that reads W_hh at every step can beat it.

It ends with the time that 2x torch's speed allows and the best ratio that a time loop at the
floor would give, all else unchanged.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from numba import njit, prange  # noqa: E402

from lstmkit import bench  # noqa: E402
from lstmkit import nn as lnn  # noqa: E402
from lstmkit.kernels import cpu  # noqa: E402
from lstmkit.kernels.simd import TILE, add_tile  # noqa: E402


@njit(fastmath=True, nogil=True)
def _read_tiles(W, h, y, steps):
    """`steps` passes over W's tiles (rows of TILE floats, h.size of them per tile), each
    tile times h into y; every other pass backwards, as the kernel reads them."""
    H, tiles = h.size, y.size // TILE
    for s in range(steps):
        for k in range(tiles):
            p = tiles - 1 - k if s % 2 else k
            add_tile(y, p * TILE, W, p * TILE * H, TILE, h)


@njit(parallel=True, fastmath=True)
def _cache_floor(Ws, h, ys, steps):
    """Thread p reads its own W, Ws[p]: (tiles * TILE * H,) float32."""
    for p in prange(Ws.shape[0]):
        _read_tiles(Ws[p], h, ys[p], steps)


def _median_ms(fns: dict, reps: int, before: dict) -> dict:
    """Median milliseconds per call of each function, sampled in turn as ``lstmkit bench``
    does: a sample is as many calls in a row as fill bench.SAMPLE_SECONDS. Each sample follows
    a call of before[name], the other side's forward pass, as in the bench, where torch's
    samples and lstmkit's alternate: that call leaves its data in the caches and its threads
    spinning, which slows the next call (measured here: by up to a tenth), so every part of
    the time is measured in that state. The order of the samples changes from round to round."""
    calls = {name: bench._calls_per_sample(fn) for name, fn in fns.items()}
    samples: dict = {name: [] for name in fns}
    order, rng = list(fns), random.Random(0)
    for _ in range(reps):
        rng.shuffle(order)  # in a fixed order, where a sample fell in the round moved it by ~0.3 ms
        for name in order:
            before[name]()
            samples[name].append(bench._timed(fns[name], calls[name]))
    return {name: 1e3 * statistics.median(s) for name, s in samples.items()}


def profile(H: int, T: int, reps: int) -> dict:
    """The measurements above for one hidden size (input size H), in ms."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    ref = torch.nn.LSTM(H, H)
    ours = lnn.LSTM(H, H, backend="numba")
    ours.load_state_dict(ref.state_dict())
    # the module's own weights: torch's, just read by torch's forward, are warmer in the caches
    W_ih, W_hh, b_ih, b_hh = (getattr(ours, f"{name}_l0").detach().numpy()
                              for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    W_1 = rng.uniform(-0.1, 0.1, (4 * H, 1)).astype(np.float32)  # input size 1
    x = torch.randn(T, 1, H)
    x_1, x_2 = (rng.standard_normal((steps, 1, 1), dtype=np.float32) for steps in (T, 2 * T))
    zeros = np.zeros((1, H), np.float32)

    def module(model):
        def run():
            with torch.no_grad():
                model(x)
        return run

    def kernel(xx, W):
        return lambda: cpu.lstm_forward(xx, zeros, zeros, W, W_hh, b_ih, b_hh)

    threads, width, _ = cpu._plan(1, H)
    blocks = -(-H // width)
    rows = 4 * width * -(-blocks // threads)  # the gate rows of a thread's share of the blocks
    rows = -(-rows // TILE) * TILE
    Ws = rng.uniform(-0.1, 0.1, (threads, rows * H)).astype(np.float32)
    ys, h = np.zeros((threads, rows), np.float32), rng.uniform(-1, 1, H).astype(np.float32)
    saved = numba.get_num_threads()
    numba.set_num_threads(threads)
    fns = {"torch": module(ref), "lstmkit": module(ours), "kernel": kernel(x.numpy(), W_ih),
           "kernel, I=1": kernel(x_1, W_1), "kernel, I=1, 2T": kernel(x_2, W_1),
           "floor": lambda: _cache_floor(Ws, h, ys, T)}
    before = {name: fns["lstmkit" if name == "torch" else "torch"] for name in fns}
    try:
        ms = _median_ms(fns, reps, before)
    finally:
        numba.set_num_threads(saved)
    step = (ms["kernel, I=1, 2T"] - ms["kernel, I=1"]) / T
    ms.update(threads=threads, kib_per_thread=rows * H * 4 / 1024, step=step, loop=step * T,
              fixed=ms["kernel, I=1"] - step * T, projection=ms["kernel"] - ms["kernel, I=1"],
              python=ms["lstmkit"] - ms["kernel"])
    return ms


def report(H: int, T: int, m: dict) -> None:
    us = 1e3 / T
    print(f"\nhidden {H}, input {H}, T = {T}, batch 1: {m['threads']} thread(s), "
          f"each reading {m['kib_per_thread']:.0f} KiB of W_hh per step")
    print(f"  torch.nn.LSTM                      {m['torch']:8.3f} ms")
    print(f"  lstmkit.nn.LSTM (numba)            {m['lstmkit']:8.3f} ms   "
          f"torch/lstmkit {m['torch'] / m['lstmkit']:.2f}")
    print(f"    module and torch around kernel   {m['python']:8.3f} ms")
    print(f"    input projection (I = H vs 1)    {m['projection']:8.3f} ms")
    print(f"    time loop                        {m['loop']:8.3f} ms   {m['step'] * 1e3:6.2f} us per step")
    print(f"    fixed cost of the kernel call    {m['fixed']:8.3f} ms")
    print(f"  cache floor of the time loop       {m['floor']:8.3f} ms   {m['floor'] * us:6.2f} us per step")
    best = m["lstmkit"] - m["loop"] + m["floor"]
    print(f"  2x torch's speed needs             {m['torch'] / 2:8.3f} ms")
    print(f"  with the time loop at its floor    {best:8.3f} ms   torch/lstmkit {m['torch'] / best:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=bench.positive_int, nargs="+", default=[128, 512],
                        help="hidden sizes (default 128 512)")
    parser.add_argument("--steps", type=bench.positive_int, default=100,
                        help="sequence length T (default 100)")
    parser.add_argument("--reps", type=bench.positive_int, default=30,
                        help="samples per measurement (default 30)")
    args = parser.parse_args(argv)
    cpu.compile_all()
    print(f"torch threads {torch.get_num_threads()}, numba threads {numba.get_num_threads()}")
    for H in args.hidden:
        report(H, args.steps, profile(H, args.steps, args.reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
