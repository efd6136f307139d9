"""Which CUDA backend this process can use: a real GPU, Numba's CPU simulator, or none.

``import lstmkit`` never touches a GPU driver; ``cuda_status()`` imports ``numba.cuda`` only
when called, and never raises: a laptop without a driver gets ``mode="none"`` and a reason.
A GPU counts only once a test kernel has compiled and run on it: a driver and a device are
not enough where the CUDA libraries that Numba compiles with are missing.

Numba reads ``NUMBA_ENABLE_CUDASIM`` once, when it is first imported, so the simulator must
be switched on in the environment before Python starts (or before anything imports numba)::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda

A notebook that should fall back to the simulator decides in its first cell, with
``gpu_usable()``, which asks a fresh Python process.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

__all__ = ["CudaStatus", "cuda_status", "gpu_usable", "require_cuda", "true_float32"]

SIMULATOR_HINT = (
    "set NUMBA_ENABLE_CUDASIM=1 before importing numba/lstmkit to run the CUDA kernels "
    "on the CPU simulator"
)


@dataclass(frozen=True)
class CudaStatus:
    """What ``lstmkit.kernels.cuda`` will run on.

    mode: "gpu" (a real device), "simulator" (Numba's CUDA simulator: every GPU thread is a
    Python thread on the CPU, slow but exact) or "none"; reason: a human-readable sentence;
    device_name: the GPU's name in "gpu" mode, else None.
    """

    mode: str
    reason: str
    device_name: str | None = None

    def __str__(self) -> str:
        return f"CUDA: {self.mode} ({self.reason})"


@functools.lru_cache(maxsize=1)
def cuda_status() -> CudaStatus:
    """Report whether the CUDA kernels can run here, and on what. Never raises.

    Computed once per process: numba decides between driver and simulator at import time,
    so the answer cannot change afterwards.
    """
    try:
        return _probe()
    except Exception as exc:  # a broken driver install must not break `lstmkit doctor`
        return CudaStatus("none", f"probing CUDA failed: {type(exc).__name__}: {_first_line(exc)}")


def gpu_usable(timeout: float = 120.0) -> tuple[bool, str]:
    """(whether the CUDA kernels can run on a GPU here, why), for a process that has not yet
    imported numba: a notebook's first cell calls it to choose between the GPU and the
    simulator. Without ``nvidia-smi`` on the PATH (no NVIDIA driver) the answer is no, at once;
    otherwise a fresh Python process runs ``cuda_status()``, which compiles and runs a test
    kernel (a few seconds). Never raises."""
    if shutil.which("nvidia-smi") is None:
        return False, "no NVIDIA driver here (nvidia-smi is not on the PATH)"
    mode, reason = _status_in_fresh_process(timeout=timeout)
    return mode == "gpu", reason


def _status_in_fresh_process(simulator: bool = False, timeout: float = 120.0) -> tuple[str, str]:
    """(mode, reason) of ``cuda_status()`` in a new Python process, with the simulator on or
    off whatever this process's environment says."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    code = "from lstmkit.devices import cuda_status as s; print(s().mode); print(s().reason)"
    try:
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return "none", f"checking the GPU took over {timeout:g} s"
    except OSError as exc:
        return "none", f"checking the GPU failed: {exc}"
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or len(lines) < 2:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return "none", f"checking the GPU failed: {last}"
    return lines[-2], lines[-1]


def require_cuda() -> None:
    """Raise RuntimeError, saying how to use the simulator, when no CUDA backend is available."""
    status = cuda_status()
    if status.mode == "none":
        raise RuntimeError(f"the CUDA kernels cannot run here: {status.reason}; {SIMULATOR_HINT}")


@contextlib.contextmanager
def true_float32():
    """TF32 off in torch's cuBLAS and cuDNN inside the block, restored after it. On a GPU they
    may otherwise round the inputs of their products to a 10-bit mantissa (cuDNN's RNNs do by
    default), which is off from float32 by ~1e-4, while lstmkit's kernels compute in float32:
    compare and time against torch inside this block."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _simulated() -> bool:
    """Whether numba.cuda runs on the simulator (numba-cuda moved its config module in 0.21)."""
    try:
        from numba.cuda.core import config
    except ImportError:
        from numba.core import config
    return bool(config.ENABLE_CUDASIM)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def _probe() -> CudaStatus:
    if importlib.util.find_spec("numba") is None:
        return CudaStatus("none", "numba is not installed (pip install numba numba-cuda)")
    if importlib.util.find_spec("numba_cuda") is None:
        return CudaStatus("none", "numba-cuda is not installed (pip install numba-cuda)")
    try:
        from numba import cuda
    except ImportError as exc:  # e.g. the cuda-bindings package is missing
        return CudaStatus("none", f"numba.cuda cannot be imported: {_first_line(exc)}")

    if _simulated():
        return CudaStatus("simulator", "NUMBA_ENABLE_CUDASIM=1: kernels run on the CPU simulator")
    try:
        devices = list(cuda.list_devices())
    except Exception as exc:  # CudaSupportError: no driver library, or driver init failed
        return CudaStatus("none", f"no usable CUDA driver: {_first_line(exc)}")
    if not devices or not cuda.is_available():
        return CudaStatus("none", "a CUDA driver was found but no CUDA device")
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    major, minor = device.compute_capability
    try:
        _run_a_kernel()
    except Exception as exc:  # e.g. NVVM or libdevice not found: the CUDA libraries are missing
        return CudaStatus("none", f"{name} is here, but Numba cannot run a kernel on it: "
                                  f"{_first_line(exc)} (install the CUDA libraries, "
                                  f"pip install 'numba-cuda[cu12]' or [cu13] to match the driver; "
                                  f"see docs/instructor_guide.md)")
    return CudaStatus("gpu", f"{name}, compute capability {major}.{minor}", name)


def _run_a_kernel() -> None:
    """Compile and launch a one-line kernel and check what it wrote; raises where Numba cannot."""
    from lstmkit.kernels import cuda_probe

    cuda_probe.run()
