"""Argument checking shared by every public function.

Every message names the argument, what was expected and what was given, e.g.
``W_hh: expected shape (4*H, H) = (1024, 256), got (1024, 255)``. Wrong kinds of data raise
TypeError; wrong shapes or values raise ValueError. Checked arrays come back C-contiguous (a
copy only when needed), so the compiled kernels can rely on plain row-major memory.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(name, a, dtype=None):
    """Return ``a`` as a C-contiguous float32/float64 array.

    ``dtype`` is the dtype of the call (set by its first array); every other array must match
    it exactly, since silently converting would hide a user's mistake and cost a copy.
    float16 is rejected rather than computed in another precision.
    """
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    arr = np.asarray(a)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}"
            + (" (float16 is not supported: convert to float32)" if arr.dtype == np.float16 else "")
        )
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {np.dtype(dtype).name} (all arrays of one call share a dtype),"
            f" got {arr.dtype.name}"
        )
    return np.asarray(arr, order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)


def optional_float_array(name, a, dtype):
    return None if a is None else float_array(name, a, dtype)


def check_shape(name, arr, expected, symbolic):
    """Raise ValueError unless ``arr.shape == expected``; ``symbolic`` is e.g. ``"(4*H, H)"``."""
    expected = tuple(int(e) for e in expected)
    if arr.shape != expected:
        raise ValueError(f"{name}: expected shape {symbolic} = {expected}, got {arr.shape}")


def check_ndim(name, arr, ndim, symbolic):
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions {symbolic}, got shape {arr.shape}")


def lengths_array(lengths, T, B):
    """Validate sequence lengths: integers, shape (B,), each in [1, T]; returned as int64."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"lengths: expected an integer array, got dtype {arr.dtype}")
    check_shape("lengths", arr, (B,), "(B,)")
    if arr.size and (arr.min() < 1 or arr.max() > T):
        bad = arr[(arr < 1) | (arr > T)]
        raise ValueError(f"lengths: every length must satisfy 1 <= length <= T = {T}, got {bad.tolist()[:5]}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


# The BLAS takes 32-bit sizes; the whole-sequence GEMMs have T*B rows.
INT32_MAX = 2**31 - 1


def check_gemm_sizes(**dims):
    for name, value in dims.items():
        if value > INT32_MAX:
            raise ValueError(f"{name} = {value} exceeds the BLAS limit of {INT32_MAX}")
