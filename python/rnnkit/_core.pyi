"""rnnkit's compiled kernels (private: use the rnnkit package).

Typed stubs of the pybind11 module built from cpp/bindings.cpp and cpp/attention_bindings.cpp.
Every array function exists for float32 and float64 (two overloads in C++, one constrained
TypeVar here): all float arrays of one call share a dtype and the results have it too. Arrays
must be C-contiguous; the Python layer (rnnkit.ops) validates every argument first, and the
bindings re-check only the sizes they rely on (ValueError on a mismatch).

Shape letters: T time steps, B batch, I input size, H hidden size, G gate blocks (1 for the
vanilla RNN, 4 for the LSTM, 3 for the GRU), S the state width (H, or P when an LSTM projects
with W_hr (P, H)). Attention: B batch, T queries, S keys, A attention size, H query/key size,
Hv value size. Softmax: N rows, C classes.
"""

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

_F = TypeVar("_F", np.float32, np.float64)

# ----------------------------------------------------------------------------- recurrent kernels

class SavedSequence:
    """What a training-mode sequence forward saved for its backward (cpp/workspace.hpp). Made
    only by the ``*_forward`` kernels; every field is read-only and the saved arrays are not
    writeable. Inputs are held by reference and fingerprinted: backward raises ValueError if x,
    h0 or a weight changed in place since the forward."""

    @property
    def cell(self) -> str:
        """The family that made it: "rnn", "lstm" or "gru"."""
    @property
    def reverse(self) -> bool: ...
    @property
    def input_forget(self) -> bool:
        """Whether the forward was an LSTM's with coupled gates (f = 1 - i)."""
    @property
    def clip(self) -> float | None:
        """The forward's clip bound, or None."""
    @property
    def W_peep(self) -> npt.NDArray[Any] | None:
        """An LSTM forward's peephole weights (3, H), or None."""
    @property
    def has_b_ih(self) -> bool: ...
    @property
    def has_b_hh(self) -> bool: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def precision(self) -> str:
        """The forward's precision, "float32" or "bf16"; its backward computes in the same."""
    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the forward wrote (the inputs are references)."""
    @property
    def x(self) -> npt.NDArray[Any]:
        """The forward's x (T, B, I)."""
    @property
    def W_ih(self) -> npt.NDArray[Any]:
        """(G*H, I)"""
    @property
    def W_hh(self) -> npt.NDArray[Any]:
        """(G*H, S)"""
    @property
    def W_hr(self) -> npt.NDArray[Any] | None:
        """(P, H) with an LSTM projection, else None."""
    @property
    def h0(self) -> npt.NDArray[Any] | None:
        """(B, S) where backward rebuilds h_{t-1} from it (a vanilla RNN without lengths)."""
    @property
    def lengths(self) -> npt.NDArray[np.int64] | None:
        """A copy of the forward's lengths (B,), or None."""
    @property
    def hprev(self) -> npt.NDArray[Any] | None:
        """h_{t-1} per step (T, B, S), or None where backward does without it."""
    @property
    def cprev(self) -> npt.NDArray[Any] | None:
        """c_{t-1} per step (T, B, H) (LSTM), else None."""
    @property
    def gates(self) -> npt.NDArray[Any]:
        """The activated gates (T, B, G*H)."""
    @property
    def extra(self) -> npt.NDArray[Any] | None:
        """The cell-specific (T, B, H) row (LSTM: c_t; GRU: its n-gate term), else None."""
    @property
    def m(self) -> npt.NDArray[Any] | None:
        """The unprojected LSTM output (T, B, H) with a projection, else None."""
    def saved_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """{name: array} of the arrays the forward wrote (read-only)."""

_Grads = tuple[
    npt.NDArray[Any],
    npt.NDArray[Any],
    npt.NDArray[Any] | None,
    npt.NDArray[Any],
    npt.NDArray[Any],
    npt.NDArray[Any] | None,
    npt.NDArray[Any] | None,
    npt.NDArray[Any] | None,
    npt.NDArray[Any] | None,
]
_LSTMGrads = tuple[
    npt.NDArray[Any],
    npt.NDArray[Any],
    npt.NDArray[Any],
    npt.NDArray[Any],
    npt.NDArray[Any],
    npt.NDArray[Any] | None,
    npt.NDArray[Any] | None,
    npt.NDArray[Any] | None,
    npt.NDArray[Any] | None,
]

def rnn_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F] | None,
    W_ih: npt.NDArray[_F],
    W_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None,
    b_hh: npt.NDArray[_F] | None,
    lengths: npt.NDArray[np.int64] | None,
    nonlinearity: str,
    reverse: bool,
    training: bool,
    precision: str = "float32",
    clip: float | None = None,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], None, SavedSequence | None]:
    """Vanilla RNN (G = 1) over a sequence: x (T, B, I), h0 (B, H) or None (zeros), W_ih (H, I),
    W_hh (H, H), b_ih and b_hh (H,) or None, lengths (B,) int64 in [1, T] or None, nonlinearity
    "tanh" or "relu", reverse runs t = T-1 .. 0, precision "float32" (the products in the
    arrays' precision) or "bf16" (float32 arrays: the products' inputs rounded to bfloat16, sums
    in float32, on the kernel _get_bf16_kernel names; ValueError where the CPU has none), clip
    None or a bound > 0 (ONNX's: every activation's input clamped to [-clip, clip]; the same in
    lstm_forward and gru_forward). Returns ``(y (T, B, H), h_T (B, H), None, workspace)``; the
    workspace is a SavedSequence (training=True only, else None).
    """

def rnn_backward(
    dy: npt.NDArray[Any] | None, dh_T: npt.NDArray[Any] | None, workspace: SavedSequence
) -> _Grads:
    """Backprop through time of :func:`rnn_forward`: dy (T, B, H) and dh_T (B, H), each None
    (zero) or a C-contiguous array of the workspace's dtype. Returns ``(dx (T, B, I), dh0 (B, H),
    None, dW_ih (H, I), dW_hh (H, H), db_ih (H,) or None, db_hh (H,) or None, None, None)``.
    """

def lstm_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F] | None,
    c0: npt.NDArray[_F] | None,
    W_ih: npt.NDArray[_F],
    W_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None,
    b_hh: npt.NDArray[_F] | None,
    W_hr: npt.NDArray[_F] | None,
    lengths: npt.NDArray[np.int64] | None,
    reverse: bool,
    training: bool,
    precision: str = "float32",
    clip: float | None = None,
    input_forget: bool = False,
    W_peep: npt.NDArray[_F] | None = None,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], npt.NDArray[_F], SavedSequence | None]:
    """LSTM (G = 4, gates i, f, g, o) over a sequence: x (T, B, I), h0 (B, S) and c0 (B, H) or
    None, W_ih (4*H, I), W_hh (4*H, S), b_ih and b_hh (4*H,) or None, W_hr (P, H) or None (S = P
    with it, else S = H), lengths (B,) int64 or None, reverse, input_forget (f = 1 - i), W_peep
    (3, H) peepholes (rows i, f, o) or None.
    Returns ``(y (T, B, S), h_T (B, S), c_T (B, H), workspace)``; the workspace is a
    SavedSequence (training=True only).
    """

class LayerStream:
    """One layer's streaming inference (cpp/stream.hpp; the classes are LayerStream_float32 and
    LayerStream_float64): weights packed once by *_stream, then ``run(x)`` per chunk, x (T, B, I)
    C-contiguous, T >= 1, returns y (T, B, S) and advances the state ``h`` (B, S) and ``c``
    (B, H; LSTM, else None), arrays that the caller may read and write in place."""

    h: npt.NDArray[Any]
    c: npt.NDArray[Any] | None
    def run(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]: ...

def rnn_stream(
    W_ih: npt.NDArray[_F],
    W_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None,
    b_hh: npt.NDArray[_F] | None,
    nonlinearity: str,
    batch: int,
    clip: float | None = None,
) -> LayerStream:
    """A vanilla RNN layer's stream of ``batch`` rows (weights as rnn_forward's, copied)."""

def lstm_stream(
    W_ih: npt.NDArray[_F],
    W_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None,
    b_hh: npt.NDArray[_F] | None,
    W_hr: npt.NDArray[_F] | None,
    batch: int,
    clip: float | None = None,
    input_forget: bool = False,
) -> LayerStream:
    """An LSTM layer's stream of ``batch`` rows (weights as lstm_forward's, copied)."""

def gru_stream(
    W_ih: npt.NDArray[_F],
    W_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None,
    b_hh: npt.NDArray[_F] | None,
    reset_after: bool,
    batch: int,
    clip: float | None = None,
) -> LayerStream:
    """A GRU layer's stream of ``batch`` rows (weights as gru_forward's, copied)."""

def lstm_backward(
    dy: npt.NDArray[Any] | None,
    dh_T: npt.NDArray[Any] | None,
    dc_T: npt.NDArray[Any] | None,
    workspace: SavedSequence,
) -> _LSTMGrads:
    """Backprop through time of :func:`lstm_forward`: dy (T, B, S), dh_T (B, S), dc_T (B, H),
    each None (zero) or of the workspace's dtype. Returns ``(dx (T, B, I), dh0 (B, S), dc0
    (B, H), dW_ih (4*H, I), dW_hh (4*H, S), db_ih (4*H,) or None, db_hh (4*H,) or None, dW_hr
    (P, H) or None, dW_peep (3, H) or None)``.
    """

def gru_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F] | None,
    W_ih: npt.NDArray[_F],
    W_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None,
    b_hh: npt.NDArray[_F] | None,
    lengths: npt.NDArray[np.int64] | None,
    reset_after: bool,
    reverse: bool,
    training: bool,
    precision: str = "float32",
    clip: float | None = None,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], None, SavedSequence | None]:
    """GRU (G = 3, gates r, z, n) over a sequence: x (T, B, I), h0 (B, H) or None, W_ih (3*H, I),
    W_hh (3*H, H), b_ih and b_hh (3*H,) or None, lengths (B,) int64 or None, reset_after
    (PyTorch's form; False: the textbook reset-before form), reverse. Returns ``(y (T, B, H),
    h_T (B, H), None, workspace)``; the workspace is a SavedSequence (training=True only).
    """

def gru_backward(
    dy: npt.NDArray[Any] | None, dh_T: npt.NDArray[Any] | None, workspace: SavedSequence
) -> _Grads:
    """Backprop through time of :func:`gru_forward`: dy (T, B, H) and dh_T (B, H), each None or
    of the workspace's dtype. Returns ``(dx (T, B, I), dh0 (B, H), None, dW_ih (3*H, I), dW_hh
    (3*H, H), db_ih (3*H,) or None, db_hh (3*H,) or None, None, None)``.
    """

# ----------------------------------------------------------------------------- losses

def softmax(logits: npt.NDArray[_F]) -> npt.NDArray[_F]:
    """Row-wise softmax of logits (N, C), computed stably (the row maximum subtracted first).
    Returns the probabilities (N, C).
    """

def softmax_cross_entropy(
    logits: npt.NDArray[_F], targets: npt.NDArray[np.int64], ignore_index: int, scale: float
) -> tuple[npt.NDArray[_F], npt.NDArray[_F]]:
    """Softmax cross-entropy of logits (N, C) against targets (N,) int64 class indices in
    [0, C) or ``ignore_index`` (such rows contribute zero loss and zero gradient). Returns
    ``(row_loss (N,), dlogits (N, C))``: each row's loss, unreduced, and the gradient of
    ``scale * sum(row_loss)`` w.r.t. the logits.
    """

# ----------------------------------------------------------------------------- attention

def attention_additive_forward(
    qp: npt.NDArray[_F],
    kp: npt.NDArray[_F],
    v: npt.NDArray[_F],
    values: npt.NDArray[_F],
    mask: npt.NDArray[np.uint8] | None,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F]]:
    """Additive (Bahdanau) attention from projected queries qp (B, T, A) and keys kp (B, S, A):
    scores ``v . tanh(qp_t + kp_s)`` with v (A,), masked where mask (B, S) uint8 is 0 (None:
    every key), softmax over S, weights applied to values (B, S, Hv). Returns ``(context
    (B, T, Hv), weights (B, T, S))``.
    """

def attention_additive_backward(
    dctx: npt.NDArray[_F] | None,
    dw: npt.NDArray[_F] | None,
    qp: npt.NDArray[_F],
    kp: npt.NDArray[_F],
    v: npt.NDArray[_F],
    values: npt.NDArray[_F],
    w: npt.NDArray[_F],
    mask: npt.NDArray[np.uint8] | None,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], npt.NDArray[_F], npt.NDArray[_F]]:
    """Backward of :func:`attention_additive_forward`: dctx (B, T, Hv) and dw (B, T, S) the
    gradients w.r.t. its two outputs, each or None (zero), its inputs qp (B, T, A), kp (B, S, A),
    v (A,), values (B, S, Hv), its weights w (B, T, S) and mask (B, S) or None. Returns
    ``(dqp (B, T, A), dkp (B, S, A), dv (A,), dvalues (B, S, Hv))``.
    """

def attention_dot_forward(
    q: npt.NDArray[_F],
    k: npt.NDArray[_F],
    values: npt.NDArray[_F],
    mask: npt.NDArray[np.uint8] | None,
    scale: float,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F]]:
    """Dot-product attention: scores ``scale * q_t . k_s`` of queries q (B, T, H) and keys
    k (B, S, H), masked where mask (B, S) uint8 is 0 (None: every key), softmax over S, weights
    applied to values (B, S, Hv). Returns ``(context (B, T, Hv), weights (B, T, S))``.
    """

def attention_dot_backward(
    dctx: npt.NDArray[_F] | None,
    dw: npt.NDArray[_F] | None,
    q: npt.NDArray[_F],
    k: npt.NDArray[_F],
    values: npt.NDArray[_F],
    w: npt.NDArray[_F],
    mask: npt.NDArray[np.uint8] | None,
    scale: float,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], npt.NDArray[_F]]:
    """Backward of :func:`attention_dot_forward`: dctx (B, T, Hv) and dw (B, T, S), each or None
    (zero), its inputs q (B, T, H), k (B, S, H), values (B, S, Hv), its weights w (B, T, S),
    mask (B, S) or None and scale. Returns ``(dq (B, T, H), dk (B, S, H), dvalues
    (B, S, Hv))``.
    """

# ----------------------------------------------------------------------------- threads, FP mode

def set_num_threads(n: int) -> None:
    """Set the number of threads of rnnkit's team and of its BLAS pool (one number for both;
    threadpoolctl sees and limits it too). The public rnnkit.set_num_threads checks ``n``.
    """

def get_num_threads() -> int:
    """The number of threads rnnkit's kernels use (by default from OPENBLAS_NUM_THREADS /
    OMP_NUM_THREADS, else the usable cores).
    """

def set_flush_denormal(enabled: bool) -> bool:
    """Flush subnormal floats to zero inside kernel calls (or stop). Returns whether the setting
    is now ``enabled`` (False when asking for flushing on an architecture without the control
    bits).
    """

def get_flush_denormal() -> bool:
    """Whether kernel calls flush subnormal floats to zero."""

# ----------------------------------------------------------------------------- private helpers

def _fp_control() -> int:
    """The calling thread's floating-point control register without its sticky exception flags
    (tests check that a kernel call leaves it as it was).
    """

def _fp_control_flush_bits() -> int:
    """The bits of the control register that flush subnormals (0 on an architecture without
    them).
    """

def _set_small_batch_limit(n: int) -> None:
    """Set the batch size up to which per-step products skip the BLAS (tests use it to cover
    both paths on the same shapes).
    """

def _get_small_batch_limit() -> int:
    """The batch size up to which per-step products skip the BLAS."""

def _set_team_min_work(n: int) -> None:
    """Set the per-step work (multiply-adds) from which the team splits a step across its
    threads (0: every call on all threads).
    """

def _get_team_min_work() -> int:
    """The per-step work (multiply-adds) from which the team splits a step."""

def _set_kernel_choice(tile_rows: int, panel_major: int) -> None:
    """Force the packed per-step kernel's walk: tile_rows 0 (from the CPU), 4 or 8; panel_major
    -1 (from the CPU and the size), 0 or 1. ValueError for any other value.
    """

def _get_kernel_choice() -> tuple[int, int]:
    """The forced walk as ``(tile_rows, panel_major)`` (``(0, -1)``: chosen from the CPU)."""

def _set_vector_bytes(bytes: int) -> None:
    """Force the width of the vectors the explicit-SIMD kernels use: 0 (the CPU's widest), or
    16, 32 or 64 bytes up to the CPU's. ValueError for any other value.
    """

def _get_vector_bytes() -> int:
    """The vector width (bytes) the explicit-SIMD kernels use now."""

def _set_bf16_kernel(name: str) -> None:
    """Force the kernel of precision="bf16" products: "" (the CPU's best), "avx512_bf16" or
    "amx" where the CPU runs it. ValueError for any other value.
    """

def _get_bf16_kernel() -> str:
    """The kernel precision="bf16" products run on now: "amx", "avx512_bf16" or "none"."""

def _step_kernel(batch: int, K: int, N: int, float64: bool) -> str:
    """How a per-step product of ``batch`` rows with this thread's K x N packed weights is
    walked, e.g. ``"4x2 row-major"`` (tile rows x vectors, panel order), or ``"BLAS"`` above
    the small-batch limit.
    """

def _cpu_info() -> dict[str, Any]:
    """The processor as the kernels see it: a dict of "vendor", "model_name" (str), "family",
    "model", "l1d_bytes", "l2_bytes", "l3_bytes" (int), "avx2", "fma", "avx512f",
    "avx512_bf16", "amx_bf16" (bool), "vector_bytes" (int, the widest vectors the kernels
    use here: 64 AVX-512, 32 AVX2 + FMA, 16 otherwise), "tile_rows" (int, the default walk) and
    "panel_major_above_bytes" (int).
    """

def _fma_peak_gflops(float64: bool, seconds: float = 0.5) -> float:
    """One thread's measured fused multiply-add throughput in GFLOP/s over about ``seconds``
    (the benchmark's ceiling line).
    """

# ----------------------------------------------------------------------------- memory

def _sequence_terms(
    cell: str,
    reset_after: bool,
    backward: bool,
    float64: bool,
    T: int,
    B: int,
    I: int,
    H: int,
    S: int,
    training: bool,
    lengths: bool,
    project: bool,
    dy: bool,
    b_ih: bool,
    b_hh: bool,
    bf16: bool = False,
    clip: bool = False,
) -> list[tuple[str, int, int]]:
    """What one sequence forward (or backward) of ``cell`` ("rnn", "lstm", "gru") allocates, as
    (name, count, itemsize) terms (cpp/footprint.hpp), for the size check before the call;
    ``bf16``: with precision="bf16"."""

_blas_buffer_bytes: int
"""Bytes budgeted for the bundled OpenBLAS's per-thread GEMM buffer."""

def _memory_stats() -> dict[str, int]:
    """{"cached_bytes", "scratch_bytes", "cache_limit", "scratch_limit"}: memory kept between
    calls by the block cache (memory.hpp) and the scratch pool (pooled_buffer.hpp)."""

def _empty_cache() -> None:
    """Free the block cache and the scratch pool (and trim the heap)."""

def _set_cache_limit(nbytes: int) -> None:
    """The most bytes the block cache keeps."""

def _team_run_throwing(nthreads: int, thrower: int) -> None:
    """Tests: a team run in which thread ``thrower`` throws std::bad_alloc (MemoryError)."""

def _set_interrupt_polling(enabled: bool) -> None:
    """Whether long calls poll for Ctrl-C (on by default)."""

def _get_interrupt_polling() -> bool: ...
