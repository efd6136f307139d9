"""`lstmkit bench` runs and reports every field (timings are printed, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lstmkit.bench import lstm_flops

FIELDS = {"backend", "mode", "batch", "hidden", "input", "seq_len", "median_ms", "gflops", "torch_ms",
          "speedup_vs_torch", "frac_of_sgemm_peak"}


def test_quick_bench_json_has_every_field():
    proc = subprocess.run([sys.executable, "-m", "lstmkit", "bench", "--quick", "--json", "-"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["machine"]["sgemm_peak_gflops"] > 0
    assert result["machine"]["device"] == "cpu" and result["machine"]["gpu"] is None
    rows = result["rows"]
    assert {(r["backend"], r["mode"], r["batch"], r["hidden"]) for r in rows} == {
        (b, m, B, H) for b in ("numba", "torch") for m in ("forward", "train")
        for B in (1, 16) for H in (32, 128)}
    for r in rows:
        assert set(r) == FIELDS
        assert r["median_ms"] > 0 and r["gflops"] > 0
        expected = lstm_flops(r["seq_len"], r["batch"], r["input"], r["hidden"], r["mode"])
        assert abs(r["gflops"] - expected / r["median_ms"] / 1e6) <= 0.01 * r["gflops"]


def test_flop_formula():
    assert lstm_flops(10, 2, 3, 4, "forward") == 10 * 2 * 2 * 16 * 7
    assert lstm_flops(10, 2, 3, 4, "train") == 3 * lstm_flops(10, 2, 3, 4, "forward")


def test_training_memory_is_measured_in_a_fresh_process():
    from lstmkit.bench import training_memory_mb

    small = training_memory_mb("numba", T=20, B=4, H=16)
    large = training_memory_mb("numba", T=2000, B=16, H=64)
    assert small >= 0 and large > small  # activations for 2000 steps show up in the peak


def test_sizes_below_one_are_refused_by_name(capsys):
    import argparse

    import pytest

    from lstmkit.bench import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args(["--batch", "1", "16", "--seq-len", "5"]).batch == [1, 16]
    for argv in (["--batch", "0"], ["--hidden", "-4"], ["--seq-len", "x"], ["--reps", "0"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)
        assert f"argument {argv[0]}: must be a whole number of at least 1, got '{argv[1]}'" in (
            capsys.readouterr().err)


def test_batch1_profile_script_reports_every_part():
    """scripts/batch1_profile.py runs (at tiny sizes) and prints each part of the time of a
    batch-1 forward pass for each hidden size."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "batch1_profile.py"
    args = ["--hidden", "32", "128", "--steps", "8", "--reps", "1"]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for H in (32, 128):
        part = proc.stdout.split(f"hidden {H}, input {H}, T = 8, batch 1")[1].split("\nhidden")[0]
        for label in ("torch.nn.LSTM", "lstmkit.nn.LSTM (numba)", "input projection", "time loop",
                      "fixed cost", "cache floor of the time loop", "2x torch's speed needs"):
            assert label in part, (H, label, part)
    bad = subprocess.run([sys.executable, str(script), "--steps", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "must be a whole number of at least 1, got '0'" in bad.stderr


def test_cuda_runs_are_timed_without_tf32(monkeypatch):
    """With the cuda backend, cuDNN and cuBLAS are timed in true float32 (TF32 would round the
    products' inputs to 10 bits, and lstmkit's kernels do not), and the flags come back after."""
    import torch

    from lstmkit import bench

    seen = []
    monkeypatch.setattr(bench, "_check_devices", lambda backends: None)  # no GPU needed here
    monkeypatch.setattr(bench, "_run", lambda *a: seen.append(
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)))
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        bench.run(backends=("cuda",))
        bench.run(backends=("numba",))
        restored = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    finally:  # torch's cuBLAS flags are no plain attributes: monkeypatch cannot restore them
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert seen == [(False, False), (True, True)]
    assert restored == (True, True)


def test_cuda_is_not_mixed_with_cpu_backends_in_one_run():
    import pytest

    from lstmkit import bench

    with pytest.raises(ValueError, match=r"numba, numpy against torch on the CPU: measure them in two "
                                         r"runs \(--backend cuda, then --backend numba --backend numpy\)"):
        bench.run(backends=("numba", "cuda", "numpy"))


def test_cuda_backend_without_a_gpu_is_refused_by_the_command():
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the command would measure it")
    proc = subprocess.run([sys.executable, "-m", "lstmkit", "bench", "--backend", "cuda", "--quick"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("lstmkit bench: error: backend 'cuda' needs a CUDA GPU that both "
                                  "numba and torch can use: numba reports 'CUDA: ")
