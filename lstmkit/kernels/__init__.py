"""Fast backends with the reference's contract.

``lstmkit.kernels.cpu``: Numba @njit kernels (always available).
``lstmkit.kernels.cuda``: Numba CUDA kernels; import it only when asked for, so that
``import lstmkit`` works on a machine without a GPU driver.
"""
