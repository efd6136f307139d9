"""The CUDA kernel tests run on a real GPU or on Numba's CUDA simulator, never silently on neither.

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda -m "not torch_cuda"   # CI, no GPU
    python -m pytest tests/cuda                                              # on a GPU machine

Numba reads NUMBA_ENABLE_CUDASIM once, when first imported, so it must be set in the
environment of the pytest process. Without a GPU and without the simulator, these tests
stop the whole run with a message instead of skipping: a green run must mean the kernels ran.
"""

from __future__ import annotations

import pytest

from lstmkit.devices import SIMULATOR_HINT, cuda_status, true_float32

STATUS = cuda_status()


def pytest_configure(config):
    if STATUS.mode == "none":
        pytest.exit(
            f"tests/cuda cannot run: {STATUS.reason.rstrip('.')}.\n"
            f"Use a machine with a CUDA GPU, or {SIMULATOR_HINT}:\n"
            '    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda -m "not torch_cuda"',
            returncode=3,
        )


def pytest_report_header(config):
    return f"lstmkit {STATUS}"


@pytest.fixture(autouse=True, scope="session")
def _torch_in_true_float32():
    """Compare with torch in real float32: on a GPU, cuDNN's RNNs and cuBLAS may otherwise use
    TF32 (a 10-bit mantissa), which is off from float32 by ~1e-4 and fails these tolerances."""
    with true_float32():
        yield
