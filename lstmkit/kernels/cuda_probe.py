"""The test kernel of ``lstmkit.devices``: a GPU counts only once this has compiled and run on it.

A module of its own, imported only by that test: Numba's simulator swaps the ``cuda`` that a
kernel finds among its module's globals, not one it would find in an enclosing function.
"""

from __future__ import annotations

import numpy as np
from numba import cuda


@cuda.jit
def _add_one(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] += 1


def run() -> None:
    """Compile and launch the kernel and check what it wrote; raises where Numba cannot."""
    a = cuda.to_device(np.arange(32, dtype=np.float32))
    _add_one[1, 32](a)
    if not np.array_equal(a.copy_to_host(), np.arange(1, 33, dtype=np.float32)):
        raise RuntimeError("a test kernel wrote wrong values")
