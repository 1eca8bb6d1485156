"""Argument checking shared by every public function.

Every message names the argument, what was expected and what was given, e.g.
``W_hh: expected shape (4*H, H) = (1024, 256), got (1024, 255)``. Wrong kinds of data raise
TypeError; wrong shapes or values raise ValueError. Checked arrays come back C-contiguous (a
copy only when needed), so the compiled kernels can rely on plain row-major memory.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import resource
except ImportError:  # not on every platform
    resource = None  # type: ignore[assignment]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# NumPy's message for a ragged nested list, e.g. "... has an inhomogeneous shape after 1
# dimensions. The detected shape was (3,) + inhomogeneous part."
_RAGGED = re.compile(r"inhomogeneous shape after \d+ dimensions?\. The detected shape was (\([^)]*\))")


def _is_torch(obj):
    # torch is optional and slow to import: recognise its objects by their type's module
    return type(obj).__module__.split(".")[0] == "torch"


def _from_torch(name, t, copied=False):
    """A torch tensor as a NumPy array (no copy for a CPU tensor), or a TypeError naming ``name``.

    A tensor with requires_grad=True is refused rather than detached: rnnkit's gradients come
    from its own backward functions, and silently cutting the tensor out of torch's graph would
    leave the user's autograd gradients quietly missing. bfloat16 (which NumPy cannot hold) is
    refused like float16: it is never computed in another precision behind the user's back.
    ``copied``: the values are only copied into rnnkit's own arrays (load_state_dict), where
    neither applies: such a tensor is detached, a bfloat16 one widened to float32 (exactly).
    """
    if copied:
        t = t.detach()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
    if t.requires_grad:
        raise TypeError(
            f"{name}: expected an array, got a torch tensor with requires_grad=True: call .detach() "
            "on it first (rnnkit's gradients come from its backward functions, not torch's autograd)"
        )
    dtype = str(t.dtype)  # "torch.float32"
    if dtype == "torch.bfloat16":
        raise TypeError(
            f"{name}: expected a float32 or float64 array, got dtype {dtype} (bfloat16 is not "
            f"supported: convert with .float())"
        )
    if t.device.type != "cpu":
        raise TypeError(
            f"{name}: expected an array in CPU memory, got a torch tensor on {t.device}: "
            "call .cpu() on it first"
        )
    try:
        return t.numpy()
    except TypeError:  # a torch dtype NumPy has no equivalent for (float8, uint16, ...)
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {dtype}") from None


def as_array(name: str, a: Any, dtype: Any = None, *, copied: bool = False) -> np.ndarray:
    """``np.asarray(a, dtype)`` for a user's argument, with errors naming ``name``.

    Torch tensors are taken as their NumPy view (see :func:`_from_torch` for those refused);
    a ragged nested list is a ValueError ("expected a rectangular array") instead of NumPy's
    message that does not name the argument. ``copied``: see :func:`_from_torch`.
    """
    if isinstance(a, np.ndarray):
        return a if dtype is None else np.asarray(a, dtype=dtype)
    if _is_torch(a) and hasattr(a, "requires_grad"):
        a = _from_torch(name, a, copied)
    try:
        return np.asarray(a, dtype=dtype)
    except ValueError as exc:
        m = _RAGGED.search(str(exc))
        if m is None:
            raise
        raise ValueError(
            f"{name}: expected a rectangular array, got a ragged nested sequence (of shape "
            f"{m.group(1)} + ragged part)"
        ) from None


def float_array(name: str, a: Any, dtype: np.dtype | None = None) -> np.ndarray:
    """Return ``a`` as a C-contiguous, native-byte-order float32/float64 array.

    ``dtype`` is the dtype of the call (set by its first array); every other array must match
    it exactly, since silently converting would hide a user's mistake and cost a copy.
    float16 is rejected rather than computed in another precision. Integer, bool, complex,
    object, string and structured arrays are rejected (TypeError). A copy is made only when
    needed (non-contiguous, negative strides, Fortran order, other byte order), and refused
    (MemoryError) when it could not fit in memory, e.g. for a huge broadcast view.
    """
    if a is None:
        raise TypeError(f"{name}: expected an array, got None")
    # Fast path, the common case: already a contiguous native float array of the call's dtype.
    if (
        type(a) is np.ndarray
        and a.flags.c_contiguous
        and (a.dtype is dtype or (dtype is None and a.dtype in FLOAT_DTYPES))
    ):
        return a
    arr = as_array(name, a)
    # float32/float64 stored in the other byte order hold the same values: accepted, made native
    native = arr.dtype.newbyteorder("=") if arr.dtype.kind == "f" else arr.dtype
    if native not in FLOAT_DTYPES:
        raise TypeError(
            f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}"
            + (" (float16 is not supported: convert to float32)" if native == np.float16 else "")
        )
    if dtype is not None and native != dtype:
        raise TypeError(
            f"{name}: expected dtype {np.dtype(dtype).name} (all arrays of one call share a dtype),"
            f" got {native.name}"
        )
    if not arr.flags.c_contiguous or native != arr.dtype:
        check_alloc(name, native, arr.size, "a C-contiguous copy")
    # (np.ascontiguousarray would turn 0-d into 1-d)
    return np.asarray(arr, dtype=native, order="C")


def optional_float_array(name: str, a: Any, dtype: np.dtype | None) -> np.ndarray | None:
    return None if a is None else float_array(name, a, dtype)


def check_shape(name: str, arr: np.ndarray, expected: tuple[Any, ...], symbolic: str) -> None:
    """Raise ValueError unless ``arr.shape == expected``; ``symbolic`` is e.g. ``"(4*H, H)"``."""
    if arr.shape != expected:
        expected = tuple(int(e) for e in expected)
        if arr.shape != expected:
            raise ValueError(f"{name}: expected shape {symbolic} = {expected}, got {arr.shape}")


def check_ndim(name: str, arr: np.ndarray, ndim: int, symbolic: str) -> None:
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions {symbolic}, got shape {arr.shape}")


def hidden_size_of(W_hh: np.ndarray, G: int) -> int:
    """H as W_hh (G*H, H) states it: from its rows when they are a multiple of G (they are shared
    with W_ih and the biases, so a wrong column count is then reported against the right H,
    e.g. ``(4*H, H) = (1024, 256), got (1024, 255)``), else from its columns."""
    rows, cols = W_hh.shape
    return rows // G if rows % G == 0 else cols


def lengths_array(lengths: Any, T: int, B: int) -> np.ndarray | None:
    """Validate sequence lengths: integers, shape (B,), each in [1, T]; returned as int64."""
    if lengths is None:
        return None
    arr = integer_array("lengths", lengths)
    check_shape("lengths", arr, (B,), "(B,)")
    if arr.size and (arr.min() < 1 or arr.max() > T):
        bad = arr[(arr < 1) | (arr > T)]
        raise ValueError(f"lengths: every length must satisfy 1 <= length <= T = {T}, got {bad.tolist()[:5]}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


PRECISIONS = ("float32", "bf16")


def precision(value: Any, dtype: np.dtype) -> str:
    """The ``precision=`` of a sequence call: "float32" (products in the arrays' own precision)
    or "bf16" (float32 arrays only: the products' inputs rounded to bfloat16, sums in float32)."""
    choice("precision", value, PRECISIONS)
    if value == "bf16" and np.dtype(dtype) != np.float32:
        raise ValueError(
            f"precision: 'bf16' is for float32 arrays (bfloat16 products summed in float32), got "
            f"{np.dtype(dtype).name} arrays: use precision='float32' or pass float32 arrays"
        )
    return str(value)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


# ----------------------------------------------------------------------------- scalars
# Every scalar argument of rnnkit is checked by one of these (sizes, probabilities, rates,
# seeds, temperatures): the same rule and the same message wherever the argument appears.


def int_arg(name: str, value: Any, minimum: int | None = 1) -> int:
    """An integer (not a bool) >= ``minimum`` (None: any): TypeError if not an integer, else
    ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def real(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    finite: bool = True,
) -> float:
    """A real number (not a bool, not nan; finite unless ``finite=False``) in the range given,
    returned as a float. TypeError for a non-number, ValueError naming the bound it breaks,
    e.g. ``lr: expected a number >= 0.0, got -1.0``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or math.isnan(value)
        or (finite and not math.isfinite(value))
    ):
        raise TypeError(f"{name}: expected a {'finite ' if finite else ''}number, got {value!r}")
    value = float(value)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(f"{name}: expected a number {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ValueError(f"{name}: expected a number {'<' if hi_open else '<='} {hi}, got {value}")
    return value


def clip(value: Any) -> float | None:
    """ONNX's cell ``clip``: None (no bound) or a finite number > 0."""
    return None if value is None else real("clip", value, 0.0, lo_open=True)


def probability(name: str, value: Any) -> float:
    """A number in [0, 1] (ValueError otherwise, bools and non-numbers included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= 1:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def temperature(value: Any) -> float:
    """A sampling temperature: a number > 0 (ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ValueError(f"temperature: expected a positive number, got {value!r}")
    return float(value)


def sampling_options(greedy: Any, temperature_: Any) -> tuple[bool, float]:
    """How a token is made from logits: ``greedy`` a bool, ``temperature`` > 0."""
    return flag("greedy", greedy), temperature(temperature_)


def dtype_arg(dtype: Any) -> np.dtype:
    """A module's dtype: float32 or float64 (TypeError otherwise). torch.float32 and
    torch.float64 are accepted as their NumPy equivalents (matched by name: torch is not
    imported)."""
    if _is_torch(dtype) and str(dtype) in ("torch.float32", "torch.float64"):
        return np.dtype(str(dtype)[len("torch.") :])
    if _is_torch(dtype):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def index_array(name: str, idx: Any, V: int) -> np.ndarray:
    """Integer indices in [0, V) (TypeError for non-integers, ValueError out of range)."""
    idx = as_array(name, idx)
    if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array of indices, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= V):
        bad = idx[(idx < 0) | (idx >= V)]
        raise ValueError(f"{name}: expected indices in [0, V) = [0, {V}), got {bad[:5].tolist()}")
    return idx


def integer_array(name: str, a: Any) -> np.ndarray:
    """An array of integers (not bools): TypeError otherwise."""
    arr = as_array(name, a)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    return arr


def seed_arg(value: Any, name: str = "seed") -> int:
    """A generator seed, an int >= 0 (ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    return int(value)


def step_index(i: Any) -> int:
    """A training step index, an int >= 0 (ValueError otherwise)."""
    if isinstance(i, bool) or not isinstance(i, numbers.Integral) or i < 0:
        raise ValueError(f"i: expected a training step index >= 0, got {i!r}")
    return int(i)


# The BLAS takes 32-bit sizes; the whole-sequence GEMMs have T*B rows.
INT32_MAX = 2**31 - 1
# The largest byte count an array (and a C++ buffer) can have: NumPy's and ptrdiff_t's limit.
INTP_MAX = int(np.iinfo(np.intp).max)


# The argument a too-large GEMM size is reported on (the one whose shape carries it).
_GEMM_ARG = {"T*B": "x", "I": "x", "G*H": "W_hh"}


def check_gemm_sizes(arg: str | None = None, **dims: int) -> None:
    """Each GEMM dimension must fit the BLAS's 32-bit integers, else ValueError.

    ``dims`` maps a symbolic size to its value; the message names ``arg`` (by default the
    sequence argument carrying that size), e.g.
    ``x: T*B = 2147483648 exceeds the BLAS's 32-bit size limit 2147483647``.
    """
    for sym, value in dims.items():
        if value > INT32_MAX:
            name = arg or _GEMM_ARG.get(sym)
            raise ValueError(
                f"{name + ': ' if name else ''}{sym} = {value} exceeds the BLAS's "
                f"32-bit size limit {INT32_MAX}"
            )


@functools.cache
def memory_limit() -> int | None:
    """Bytes this process could ever hold: physical memory plus swap; None where unknown.

    A buffer larger than this cannot be backed even with every other process gone; with
    memory overcommit the allocation itself might still succeed and the process would then be
    killed on first touch, so such sizes are refused up front with MemoryError.
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("SwapTotal:"):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return total if total > 0 else None


def _human(nbytes):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if nbytes < 1024 or unit == "EiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


def address_space_left() -> int | None:
    """Bytes the address-space limit (RLIMIT_AS, ``ulimit -v``) still leaves this process, or
    None when there is no limit (the usual case) or it cannot be read.

    Under such a limit an allocation beyond it fails, and the bundled OpenBLAS then exits the
    process (``exit(1)``) instead of reporting it: calls that would not fit are refused first.
    """
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return max(soft - int(line.split()[1]) * 1024, 0)
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_bytes(arg: str, nbytes: int, what: str, of: str = "") -> None:
    """Refuse, before allocating, ``nbytes`` bytes that cannot exist or cannot be had.

    ValueError when the count does not fit a 64-bit size (it would overflow); MemoryError when
    it exceeds :func:`memory_limit` (RAM + swap) or what the address-space limit still leaves
    (:func:`address_space_left`). ``what`` names the buffers and ``of`` the dtype (" of
    float64"), e.g. ``x: y and the gate buffer (T*B*(H + G*H) values) would take 32.0 TiB of
    float64, more than this machine's memory (23.4 GiB, RAM + swap)``.
    """
    if nbytes > INTP_MAX:
        raise ValueError(
            f"{arg}: {what} would take {nbytes} bytes{of}, more than a 64-bit size can hold ({INTP_MAX})"
        )
    if nbytes >= (1 << 30):  # below, surely within the machine; spares reading /proc on every call
        limit = memory_limit()
        if limit is not None and nbytes > limit:
            raise MemoryError(
                f"{arg}: {what} would take {_human(nbytes)}{of}, more than "
                f"this machine's memory ({_human(limit)}, RAM + swap)"
            )
    left = address_space_left()
    if left is not None and nbytes > left:
        raise MemoryError(
            f"{arg}: {what} would take {_human(nbytes)}{of} ({nbytes} bytes), more than the "
            f"address-space limit leaves ({_human(left)} of RLIMIT_AS, ulimit -v)"
        )


def check_alloc(arg: str, dtype: npt.DTypeLike, n_elements: int, what: str) -> None:
    """Refuse, before allocating, ``n_elements`` values of ``dtype`` that cannot exist or
    cannot be had (:func:`check_bytes`)."""
    dtype = np.dtype(dtype)
    check_bytes(arg, int(n_elements) * dtype.itemsize, what, f" of {dtype.name}")  # Python ints


def check_terms(arg: str, terms: Sequence[tuple[str, int, int]], what: str, dtype: npt.DTypeLike) -> None:
    """:func:`check_bytes` for a call that allocates ``terms``: (name, count, itemsize) each,
    summed in Python ints (no overflow)."""
    nbytes = sum(int(count) * int(itemsize) for _, count, itemsize in terms)
    check_bytes(arg, nbytes, what, f" of {np.dtype(dtype).name}")


def check_rnn_module_sizes(
    module, gates, input_size, hidden_size, num_layers, num_directions, proj_size, bias, dtype
):
    """Sizes of a multi-layer recurrent module (rnnkit.nn), checked before any allocation.

    ``G*hidden_size`` and ``input_size`` must fit the BLAS's 32-bit sizes (ValueError); all the
    parameters together must fit in memory (MemoryError), computed without a loop over layers.
    """
    G, H, L, D = gates, hidden_size, num_layers, num_directions
    H_out = proj_size or H
    check_gemm_sizes("hidden_size", **{f"{G}*hidden_size": G * H})
    check_gemm_sizes("input_size", input_size=input_size)
    fixed = G * H * H_out + (2 * G * H if bias else 0) + proj_size * H  # per layer, per direction
    n = D * (G * H * input_size + fixed + (L - 1) * (G * H * D * H_out + fixed))
    check_alloc(module, dtype, n, f"the parameters ({n} values)")
