"""lstmkit: the package under the LSTM course.

``import lstmkit`` is light: submodules (``reference``, ``nn``, ``data``, ``viz``, ...) load
when first used, and nothing here touches a GPU driver.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"reference", "nn", "functional", "kernels", "data", "viz", "widgets", "training",
               "grading", "cli", "bench", "devices"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"lstmkit.{name}")
    if name == "cuda_status":
        from lstmkit.devices import cuda_status

        return cuda_status
    raise AttributeError(f"module 'lstmkit' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES, "cuda_status"])
