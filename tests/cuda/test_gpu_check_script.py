"""scripts/gpu_check.py, what a GPU machine runs to check the kernels and time them against
cuDNN (lesson 09 quotes its table), runs end to end at its tiny sizes: under the simulator in
CI, so the script cannot fall behind the kernels it calls unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def test_gpu_check_passes_at_tiny_sizes():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny"], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ALL CHECKS PASSED" in proc.stdout
    for section in ("1. kernels against lstmkit.reference", "3. timing", "4. launch cost"):
        assert section in proc.stdout, section
