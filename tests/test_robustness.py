"""Robustness: every bad input gets a clear error; nothing crashes, leaks or races.

* ``BAD_INPUTS``: the bad inputs tried and the exception and message each must give. The same
  list renders ``docs/errors.md`` from real runs: ``python tests/test_robustness.py > docs/errors.md``.
* Inputs that must be accepted (layouts, byte order, lists, read-only) give the same bits as
  plain C-contiguous arrays; outputs never alias inputs; inputs are never written.
* Degenerate sizes (T, B, I, H or P equal to 0, ones), NaN/Inf propagation, allocation limits
  (overflowing sizes -> ValueError, unallocatable -> MemoryError, never touching memory).
* The private module's own re-checks (a misuse of ``rnnkit._core`` raises, never crashes).
* Threads: concurrent calls give the bits of serial calls; results are reproducible.
* Resident memory does not grow over many forward+backward calls (and error paths).
* Numerical safety: pre-activations up to |a| = 1e4 and logits up to 1e4.

The sanitizer run (tools/sanitize.sh) runs this file too; it sets RNNKIT_SANITIZED=1, which
skips the resident-memory test (ASan's quarantine grows the RSS by design).
"""

import collections
import dataclasses
import os
import re
import sys
import threading
import warnings

import numpy as np
import pytest

import rnnkit
from rnnkit import _core, _validate, nn
from rnnkit import reference as ref

sys.path.insert(0, os.path.dirname(__file__))
from conftest import (  # noqa: E402
    CELLS,
    arrays_in,
    assert_close,
    assert_no_aliasing,
    cell_backward,
    cell_forward,
    make_params,
    negative_strides,
    read_only,
    seq_backward,
    seq_forward,
    strided,
)

SANITIZED = bool(os.environ.get("RNNKIT_SANITIZED"))

DTYPES = [np.float32, np.float64]
T, B, I, H = 3, 2, 4, 5  # the base sizes of the bad-input table


def family(cell):
    """"lstm" for "lstm", "rnn" for "rnn_relu", ...; a family name is its own family."""
    return CELLS[cell][0] if cell in CELLS else cell


def n_states(cell):
    return 2 if family(cell) == "lstm" else 1


def make_case(cell, T, B, I, H, dtype, rng, lengths=None, scale=1.0):
    """Random inputs, initial states and cotangents of one sequence call."""
    def normal(*shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(dtype)
    k = n_states(cell)
    if lengths == "random" and T > 0:
        lengths = rng.integers(1, T + 1, size=B)
    elif lengths == "random":
        lengths = None
    if H > 0:
        W_ih, W_hh, b_ih, b_hh = make_params(cell, I, H, dtype, rng)
    else:  # (make_params scales by 1/sqrt(H))
        W_ih, W_hh, b_ih, b_hh = (np.zeros(s, dtype) for s in ((0, I), (0, 0), (0,), (0,)))
    if scale != 1.0:
        W_ih = (W_ih * scale).astype(dtype)
    return {"x": normal(T, B, I), "states": tuple(normal(B, H, s=0.5) for _ in range(k)),
            "params": (W_ih, W_hh, b_ih, b_hh), "lengths": lengths,
            "dy": normal(T, B, H), "d_finals": tuple(normal(B, H) for _ in range(k))}


def run(mod, cell, case, reverse=False):
    """Forward and backward -> flat list of every result array (None kept)."""
    y, finals, ws = seq_forward(mod, cell, case["x"], case["states"], case["params"],
                                reverse=reverse, lengths=case["lengths"])
    g = seq_backward(mod, cell, case["dy"], case["d_finals"], ws)
    return [y, *finals, *g]


def assert_bitwise(actual, expected, what=""):
    assert len(actual) == len(expected)
    for k, (a, e) in enumerate(zip(actual, expected)):
        if e is None:
            assert a is None, f"{what} result {k}"
            continue
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what} result {k}"
        np.testing.assert_array_equal(a, e, err_msg=f"{what} result {k}")


# ============================================================================= the table
# Base arguments of the table's calls: LSTM, float64, T=3, B=2, I=4, H=5.

def _base(dtype=np.float64, cell="lstm", T=T, B=B):
    rng = np.random.default_rng(0)
    W_ih, W_hh, b_ih, b_hh = make_params(cell, I, H, dtype, rng)
    args = {"x": rng.standard_normal((T, B, I)).astype(dtype)}
    for name in ("h0", "c0")[:n_states(cell)]:
        args[name] = rng.standard_normal((B, H)).astype(dtype)
    args.update(W_ih=W_ih, W_hh=W_hh, b_ih=b_ih, b_hh=b_hh)
    return args


def _lstm(**changes):
    return rnnkit.lstm_forward(**dict(_base(), **changes))


def _lstm_f32(**changes):
    return rnnkit.lstm_forward(**dict(_base(np.float32), **changes))


def _lstm_proj(P=3, **changes):
    rng = np.random.default_rng(1)
    args = _base()
    args.update(h0=rng.standard_normal((B, P)), W_hh=rng.standard_normal((4 * H, P)),
                W_hr=rng.standard_normal((P, H)))
    return rnnkit.lstm_forward(**dict(args, **changes))


def _lstm_ws(dtype=np.float64):
    return rnnkit.lstm_forward(**_base(dtype))[2]


_OWN = object()


def _lstm_backward(dy=None, dh_T=None, dc_T=None, ws=_OWN):
    return rnnkit.lstm_backward(dy, dh_T, dc_T, _lstm_ws() if ws is _OWN else ws)


def _lstm_cell(**changes):
    a = _base()
    args = dict(x=a["x"][0], h=a["h0"], c=a["c0"], W_ih=a["W_ih"], W_hh=a["W_hh"],
                b_ih=a["b_ih"], b_hh=a["b_hh"])
    return rnnkit.lstm_cell_forward(**dict(args, **changes))


def _rnn(**changes):
    a = _base(cell="rnn")
    return rnnkit.rnn_forward(**dict(a, **changes))


def _gru(**changes):
    a = _base(cell="gru")
    return rnnkit.gru_forward(**dict(a, **changes))


def _ce(logits=None, targets=None, **kw):
    logits = np.zeros((4, 3)) if logits is None else logits
    targets = np.array([0, 1, 2, -100]) if targets is None else targets
    return rnnkit.softmax_cross_entropy(logits, targets, **kw)


def _huge_lstm_projection(H_big, T_big=2**26 - 1, B_big=32, dtype=np.float64, private=False):
    """An LSTM whose every array is empty (I = 0, P = 0) but whose gate buffer is
    T*B*4*H values: sizes that are valid for the BLAS yet cannot be allocated or even counted."""
    x = np.empty((T_big, B_big, 0), dtype)
    W_ih = np.empty((4 * H_big, 0), dtype)
    W_hh = np.empty((4 * H_big, 0), dtype)
    W_hr = np.empty((0, H_big), dtype)
    if private:
        return _core.lstm_forward(x, None, None, W_ih, W_hh, None, None, W_hr, None, False, True)
    return rnnkit.lstm_forward(x, None, None, W_ih, W_hh, None, None, W_hr=W_hr)


def _module(**kw):
    return nn.LSTM(I, H, seed=0, dtype=np.float64, **kw)


def _module_backward(dout):
    m = _module()
    m(_base()["x"])
    return m.backward(dout)


def _tampered_workspace():
    ws = _lstm_ws()
    return dataclasses.replace(ws, saved=dict(ws.saved, gates=ws.saved["gates"].astype(np.float32)))


def _eval_module_backward():
    m = nn.LSTM(I, H, seed=0, dtype=np.float64).eval()
    m(_base()["x"])
    return m.backward(None)


Case = collections.namedtuple("Case", "group what call exc message")
# ``message``: the exact start of the exception's message.
BAD_INPUTS = [
    # --- shapes: rank and every dimension against the others
    Case("shape", "`lstm_forward`: W_hh one column short (H = 256)",
         lambda: rnnkit.lstm_forward(np.zeros((1, 1, 4)), None, None, np.zeros((1024, 4)),
                                     np.zeros((1024, 255)), None, None),
         ValueError, "W_hh: expected shape (4*H, H) = (1024, 256), got (1024, 255)"),
    Case("shape", "`lstm_forward`: x with 2 dimensions", lambda: _lstm(x=np.zeros((T, I))),
         ValueError, "x: expected 3 dimensions (T, B, I), got shape (3, 4)"),
    Case("shape", "`lstm_forward`: W_hh with 3 dimensions",
         lambda: _lstm(W_hh=np.zeros((1, 4 * H, H))),
         ValueError, "W_hh: expected 2 dimensions (4*H, H), got shape (1, 20, 5)"),
    Case("shape", "`lstm_forward`: W_hh rows not 4*H", lambda: _lstm(W_hh=np.zeros((4 * H + 1, H))),
         ValueError, "W_hh: expected shape (4*H, H) = (20, 5), got (21, 5)"),
    Case("shape", "`lstm_forward`: x's input size differs from W_ih's",
         lambda: _lstm(x=np.zeros((T, B, I + 1))),
         ValueError, "W_ih: expected shape (4*H, I) = (20, 5), got (20, 4)"),
    Case("shape", "`lstm_forward`: b_ih of length 4*H + 1", lambda: _lstm(b_ih=np.zeros(4 * H + 1)),
         ValueError, "b_ih: expected shape (4*H,) = (20,), got (21,)"),
    Case("shape", "`lstm_forward`: b_hh as a (1, 4*H) row", lambda: _lstm(b_hh=np.zeros((1, 4 * H))),
         ValueError, "b_hh: expected shape (4*H,) = (20,), got (1, 20)"),
    Case("shape", "`lstm_forward`: h0 of another batch size", lambda: _lstm(h0=np.zeros((B + 1, H))),
         ValueError, "h0: expected shape (B, H) = (2, 5), got (3, 5)"),
    Case("shape", "`lstm_forward`: c0 with a time axis", lambda: _lstm(c0=np.zeros((1, B, H))),
         ValueError, "c0: expected shape (B, H) = (2, 5), got (1, 2, 5)"),
    Case("shape", "`lstm_forward(W_hr=...)`: W_hh not (4*H, P)",
         lambda: _lstm_proj(W_hh=np.zeros((4 * H, H))),
         ValueError, "W_hh: expected shape (4*H, P) = (20, 3), got (20, 5)"),
    Case("shape", "`lstm_forward(W_hr=...)`: h0 (B, H) instead of (B, P)",
         lambda: _lstm_proj(h0=np.zeros((B, H))),
         ValueError, "h0: expected shape (B, P) = (2, 3), got (2, 5)"),
    Case("shape", "`lstm_forward`: lengths of another batch size",
         lambda: _lstm(lengths=np.ones(B + 1, int)),
         ValueError, "lengths: expected shape (B,) = (2,), got (3,)"),
    Case("shape", "`lstm_backward`: dy one step short", lambda: _lstm_backward(dy=np.zeros((T - 1, B, H))),
         ValueError, "dy: expected shape (T, B, H) = (3, 2, 5), got (2, 2, 5)"),
    Case("shape", "`lstm_backward`: dc_T transposed", lambda: _lstm_backward(dc_T=np.zeros((H, B))),
         ValueError, "dc_T: expected shape (B, H) = (2, 5), got (5, 2)"),
    Case("shape", "`lstm_cell_forward`: a sequence x (T, B, I)", lambda: _lstm_cell(x=np.zeros((T, B, I))),
         ValueError, "x: expected 2 dimensions (B, I), got shape (3, 2, 4)"),
    Case("shape", "`lstm_cell_forward`: c of another size", lambda: _lstm_cell(c=np.zeros((B, H + 1))),
         ValueError, "c: expected shape (B, H) = (2, 5), got (2, 6)"),
    Case("shape", "`rnn_forward`: W_hh (H, H+1)", lambda: _rnn(W_hh=np.zeros((H, H + 1))),
         ValueError, "W_hh: expected shape (H, H) = (5, 5), got (5, 6)"),
    Case("shape", "`gru_forward`: W_ih (4*H, I) (an LSTM's)", lambda: _gru(W_ih=np.zeros((4 * H, I))),
         ValueError, "W_ih: expected shape (3*H, I) = (15, 4), got (20, 4)"),
    Case("shape", "`softmax_cross_entropy`: 1-D logits", lambda: _ce(logits=np.zeros(3)),
         ValueError, "logits: expected 2 dimensions (N, C), got shape (3,)"),
    Case("shape", "`softmax_cross_entropy`: targets (N-1,)", lambda: _ce(targets=np.array([0, 1, 2])),
         ValueError, "targets: expected shape (N,) = (4,), got (3,)"),
    Case("shape", "`softmax`: a 0-d array", lambda: rnnkit.softmax(np.array(1.0)),
         ValueError, "logits: expected at least 1 dimension (..., C), got a scalar"),
    Case("shape", "`nn.LSTM(4, 5)`: x with input size 5", lambda: _module()(np.zeros((T, B, I + 1))),
         ValueError, "x: expected input size I = 4 (last dimension), got shape (3, 2, 5)"),
    Case("shape", "`nn.LSTM(4, 5)`: x with 4 dimensions", lambda: _module()(np.zeros((1, T, B, I))),
         ValueError, "x: expected 3 dimensions (T, B, I) or 2 (T, I) (unbatched), got shape "
                     "(1, 3, 2, 4)"),
    Case("shape", "`nn.LSTM(4, 5, num_layers=2, bidirectional=True)`: h0 for one layer",
         lambda: _module(num_layers=2, bidirectional=True)(_base()["x"], (np.zeros((2, B, H)), None)),
         ValueError, "h0: expected shape (num_layers*D, B, H) = (4, 2, 5), got (2, 2, 5)"),
    Case("shape", "`nn.LSTM.backward`: dout of the wrong width", lambda: _module_backward(np.zeros((T, B, H + 1))),
         ValueError, "dout: expected shape (T, B, D*H_out) = (3, 2, 5), got (3, 2, 6)"),
    Case("shape", "`nn.LSTM`: unbatched x (T, I) with lengths",
         lambda: _module()(np.zeros((T, I)), lengths=[1]),
         ValueError, "lengths: not supported with unbatched input x (T, I)"),
    Case("shape", "`nn.LSTM`: hx a single array, not a pair",
         lambda: _module()(_base()["x"], np.zeros((1, B, H))),
         TypeError, "hx: expected a pair (h, c) (either may be None) or None, got ndarray"),
    # --- dtypes
    Case("dtype", "`lstm_forward`: x int64", lambda: _lstm(x=np.zeros((T, B, I), np.int64)),
         TypeError, "x: expected a float32 or float64 array, got dtype int64"),
    Case("dtype", "`lstm_forward`: x bool", lambda: _lstm(x=np.zeros((T, B, I), bool)),
         TypeError, "x: expected a float32 or float64 array, got dtype bool"),
    Case("dtype", "`lstm_forward`: W_ih complex128", lambda: _lstm(W_ih=np.zeros((4 * H, I), complex)),
         TypeError, "W_ih: expected a float32 or float64 array, got dtype complex128"),
    Case("dtype", "`lstm_forward`: h0 object array", lambda: _lstm(h0=np.zeros((B, H), object)),
         TypeError, "h0: expected a float32 or float64 array, got dtype object"),
    Case("dtype", "`lstm_forward`: x float16", lambda: _lstm(x=np.zeros((T, B, I), np.float16)),
         TypeError, "x: expected a float32 or float64 array, got dtype float16 (float16 is not "
                    "supported: convert to float32)"),
    Case("dtype", "`lstm_forward`: x long double", lambda: _lstm(x=np.zeros((T, B, I), np.longdouble)),
         TypeError, f"x: expected a float32 or float64 array, got dtype {np.dtype(np.longdouble)}"),
    Case("dtype", "`lstm_forward`: x a string", lambda: _lstm(x="abc"),
         TypeError, "x: expected a float32 or float64 array, got dtype <U3"),
    Case("dtype", "`lstm_forward`: x None", lambda: _lstm(x=None),
         TypeError, "x: expected an array, got None"),
    Case("dtype", "`lstm_forward`: W_hh None", lambda: _lstm(W_hh=None),
         TypeError, "W_hh: expected an array, got None"),
    Case("dtype", "`lstm_forward`: float64 x, float32 W_hh",
         lambda: _lstm(W_hh=_base()["W_hh"].astype(np.float32)),
         TypeError, "W_hh: expected dtype float64 (all arrays of one call share a dtype), got float32"),
    Case("dtype", "`lstm_forward`: float32 x, float64 b_hh", lambda: _lstm_f32(b_hh=np.zeros(4 * H)),
         TypeError, "b_hh: expected dtype float32 (all arrays of one call share a dtype), got float64"),
    Case("dtype", "`lstm_backward`: float32 dy, float64 workspace",
         lambda: _lstm_backward(dy=np.zeros((T, B, H), np.float32)),
         TypeError, "dy: expected dtype float64 (all arrays of one call share a dtype), got float32"),
    Case("dtype", "`gru_cell_backward`: float32 dh_next, float64 cache",
         lambda: rnnkit.gru_cell_backward(np.zeros((B, H), np.float32), rnnkit.gru_cell_forward(
             _base()["x"][0], None, *make_params("gru", I, H, np.float64, np.random.default_rng(0)))[1]),
         TypeError, "dh_next: expected dtype float64 (all arrays of one call share a dtype), got float32"),
    Case("dtype", "`lstm_forward`: float lengths", lambda: _lstm(lengths=np.array([1.0, 2.0])),
         TypeError, "lengths: expected an integer array, got dtype float64"),
    Case("dtype", "`lstm_forward`: bool lengths", lambda: _lstm(lengths=np.array([True, True])),
         TypeError, "lengths: expected an integer array, got dtype bool"),
    Case("dtype", "`softmax_cross_entropy`: float targets",
         lambda: _ce(targets=np.array([0.0, 1.0, 2.0, 0.0])),
         TypeError, "targets: expected an integer array, got dtype float64"),
    Case("dtype", "`softmax`: int logits", lambda: rnnkit.softmax(np.zeros((2, 3), int)),
         TypeError, "logits: expected a float32 or float64 array, got dtype int64"),
    Case("dtype", "`nn.LSTM` (float32): float64 x", lambda: nn.LSTM(I, H, seed=0)(np.zeros((T, B, I))),
         TypeError, "x: expected dtype float32 (the module's dtype), got float64"),
    Case("dtype", "`nn.LSTM(dtype=float16)`", lambda: nn.LSTM(I, H, dtype=np.float16),
         TypeError, "dtype: expected float32 or float64, got float16"),
    # --- values and options
    Case("value", "`lstm_forward`: a length of 0", lambda: _lstm(lengths=np.array([0, 1])),
         ValueError, "lengths: every length must satisfy 1 <= length <= T = 3, got [0]"),
    Case("value", "`lstm_forward`: a length > T", lambda: _lstm(lengths=[T + 1, 1]),
         ValueError, "lengths: every length must satisfy 1 <= length <= T = 3, got [4]"),
    Case("value", "`lstm_forward`: a negative length", lambda: _lstm(lengths=[-1, 1]),
         ValueError, "lengths: every length must satisfy 1 <= length <= T = 3, got [-1]"),
    Case("value", "`lstm_forward`: lengths 2**63 (uint64)",
         lambda: _lstm(lengths=np.array([2**63, 1], np.uint64)),
         ValueError, "lengths: every length must satisfy 1 <= length <= T = 3, got [9223372036854775808]"),
    Case("value", "`lstm_forward`: lengths with T = 0", lambda: _lstm(x=np.zeros((0, B, I)), lengths=[1, 1]),
         ValueError, "lengths: every length must satisfy 1 <= length <= T = 0, got [1, 1]"),
    Case("value", "`rnn_forward`: nonlinearity='sigmoid'", lambda: _rnn(nonlinearity="sigmoid"),
         ValueError, "nonlinearity: expected one of 'tanh', 'relu', got 'sigmoid'"),
    Case("value", "`lstm_forward`: reverse=1", lambda: _lstm(reverse=1),
         TypeError, "reverse: expected True or False, got 1"),
    Case("value", "`gru_forward`: reset_after='yes'", lambda: _gru(reset_after="yes"),
         TypeError, "reset_after: expected True or False, got 'yes'"),
    Case("value", "`softmax_cross_entropy`: target = C", lambda: _ce(targets=np.array([0, 1, 3, 0])),
         ValueError, "targets: expected class indices in [0, C) = [0, 3) or ignore_index=-100, got [3]"),
    Case("value", "`softmax_cross_entropy`: reduction='avg'", lambda: _ce(reduction="avg"),
         ValueError, "reduction: expected one of 'mean', 'sum', 'none', got 'avg'"),
    Case("value", "`set_num_threads(0)`", lambda: rnnkit.set_num_threads(0),
         ValueError, "n: expected at least 1, got 0"),
    Case("value", "`set_num_threads(2.0)`", lambda: rnnkit.set_num_threads(2.0),
         TypeError, "n: expected an int, got 2.0"),
    Case("value", "`nn.LSTM(4, 5, proj_size=5)`", lambda: nn.LSTM(I, H, proj_size=H),
         ValueError, "proj_size: expected 0 (no projection) or less than hidden_size = 5, got 5"),
    Case("value", "`nn.GRU(4, 0)`", lambda: nn.GRU(I, 0),
         ValueError, "hidden_size: expected an int >= 1, got 0"),
    Case("value", "`nn.RNN(4, 5, num_layers=2.0)`", lambda: nn.RNN(I, H, num_layers=2.0),
         TypeError, "num_layers: expected an int, got 2.0"),
    Case("value", "`nn.RNN(4, 5, dropout=1.5)`", lambda: nn.RNN(I, H, dropout=1.5),
         ValueError, "dropout: expected a probability in [0, 1], got 1.5"),
    # --- workspaces
    Case("workspace", "`lstm_backward`: workspace of a `training=False` forward (None)",
         lambda: _lstm_backward(ws=_lstm(training=False)[2]),
         ValueError, "workspace: got None; lstm_backward needs the workspace of a forward run with "
                     "training=True"),
    Case("workspace", "`gru_backward`: an LSTM workspace",
         lambda: rnnkit.gru_backward(None, None, _lstm_ws()),
         ValueError, "workspace: it comes from a lstm forward, but gru_backward needs one from a "
                     "gru forward"),
    Case("workspace", "`lstm_backward`: the cache of `lstm_cell_forward`",
         lambda: _lstm_backward(ws=_lstm_cell()[1]),
         ValueError, "workspace: it comes from lstm_cell_forward and cannot be used by lstm_backward"),
    Case("workspace", "`lstm_backward`: a dict", lambda: rnnkit.lstm_backward(None, None, None, {}),
         TypeError, "workspace: expected the Workspace returned by lstm_forward, got dict"),
    Case("workspace", "`lstm_backward`: a workspace whose saved arrays were replaced (float32)",
         lambda: _lstm_backward(ws=_tampered_workspace()),
         TypeError, "workspace: its saved 'gates' is dtype float32, but a workspace must come "
                    "unmodified from its forward (x is float64)"),
    Case("workspace", "`nn.LSTM.backward` after an eval-mode forward", _eval_module_backward,
         RuntimeError, "LSTM.backward: the module is in eval mode, which keeps no workspace"),
    Case("workspace", "`nn.GRU.backward` before any forward", lambda: nn.GRU(I, H).backward(None),
         RuntimeError, "GRU.backward: no forward to differentiate"),
    # --- sizes: overflow and allocation
    Case("size", "`rnn_forward`: T*B = 2**31 rows (x (65536, 32768, 0))",
         lambda: rnnkit.rnn_forward(np.empty((2**16, 2**15, 0)), None, np.empty((H, 0)),
                                    np.zeros((H, H)), None, None),
         ValueError, "x: T*B = 2147483648 exceeds the BLAS's 32-bit size limit 2147483647"),
    Case("size", "`lstm_forward(W_hr=...)`: T*B*4*H = 2**62 values (all arrays empty: I = P = 0)",
         lambda: _huge_lstm_projection(2**29 - 1),
         ValueError, "x: y and the gate buffer (T*B*(H + G*H) values) would take "),
    Case("size", "`lstm_forward(W_hr=...)`: a 4 PiB gate buffer (all arrays empty: I = P = 0)",
         lambda: _huge_lstm_projection(2**16),
         MemoryError, "x: y and the gate buffer (T*B*(H + G*H) values) would take 4.0 PiB of float64, "
                      "more than this machine's memory"),
    Case("size", "`rnn_forward`: y + gates of 64 TiB (T*B = 2**31 - 2**16, H = 2048, float64)",
         lambda: rnnkit.rnn_forward(np.empty((2**16, 2**15 - 1, 0)), None, np.empty((2048, 0)),
                                    np.zeros((2048, 2048)), None, None),
         MemoryError, "x: y and the gate buffer (T*B*(H + G*H) values) would take 64.0 TiB of "
                      "float64, more than this machine's memory"),
    Case("size", "`rnn_forward`: x a broadcast view of 256 TiB",
         lambda: rnnkit.rnn_forward(np.broadcast_to(np.float32(1), (2**20, 2**20, 64)), None,
                                    np.zeros((H, 64), np.float32), np.zeros((H, H), np.float32),
                                    None, None),
         MemoryError, "x: a C-contiguous copy would take 256.0 TiB of float32, more than this "
                      "machine's memory"),
    Case("size", "`nn.LSTM(10, 2**31)`", lambda: nn.LSTM(10, 2**31),
         ValueError, "hidden_size: 4*hidden_size = 8589934592 exceeds the BLAS's 32-bit size "
                     "limit 2147483647"),
    Case("size", "`nn.GRU(10, 64, num_layers=10**9)`", lambda: nn.GRU(10, 64, num_layers=10**9),
         MemoryError, "GRU: the parameters (24959999989632 values) would take 90.8 TiB of float32, "
                      "more than this machine's memory"),
]


def _case_id(case):
    return re.sub(r"[^A-Za-z0-9=*.]+", "_", case.what).strip("_")[:70]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[_case_id(c) for c in BAD_INPUTS])
def test_bad_input(case):
    if case.exc is MemoryError and _validate.memory_limit() is None:
        pytest.skip("the machine's memory size is unknown here")
    threads = rnnkit.get_num_threads()
    try:
        with pytest.raises(case.exc) as info:
            case.call()
    finally:
        rnnkit.set_num_threads(threads)
    message = str(info.value)
    assert message.startswith(case.message), f"\n  got:      {message}\n  expected: {case.message}"
    assert type(info.value) is case.exc  # not a subclass (e.g. numpy's own errors)


def test_docs_table_lists_every_case():
    path = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "errors.md")
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    missing = [c.what for c in BAD_INPUTS if _md(c.what) not in doc]
    assert not missing, ("docs/errors.md is out of date; regenerate it with "
                         f"`python tests/test_robustness.py > docs/errors.md`: missing {missing}")


# ============================================================================= shapes, all arguments

def _seq_args(cell, dtype=np.float64, proj=False):
    args = _base(dtype, cell)
    if proj:
        P = 3
        args.update(h0=np.zeros((B, P), dtype), W_hh=np.zeros((4 * H, P), dtype),
                    W_hr=np.zeros((P, H), dtype))
    return args


def _forward_kw(cell):
    return CELLS[cell][1]


@pytest.mark.parametrize("cell, proj", [(c, False) for c in CELLS] + [("lstm", True)],
                         ids=list(CELLS) + ["lstm_proj"])
def test_every_shape_error_names_argument_expected_and_actual(cell, proj):
    args = _seq_args(cell, proj=proj)
    fn = getattr(rnnkit, f"{family(cell)}_forward")
    fn(**args, **_forward_kw(cell))  # the valid baseline
    for name, a in args.items():
        bads = [a[None], a.reshape(-1)[:1].reshape(()) if a.ndim == 1 else a[0]]
        bads += [np.zeros(tuple(s + (k == i) for k, s in enumerate(a.shape)), a.dtype)
                 for i in range(a.ndim) if not (name == "x" and i != 1)]
        for bad in bads:
            with pytest.raises(ValueError) as info:
                fn(**dict(args, **{name: bad}), **_forward_kw(cell))
            msg = str(info.value)
            # x's batch / time sizes are the reference others are checked against, and an
            # x with the wrong rank is reported on x; otherwise the changed argument is named
            named = msg.split(":")[0]
            if name == "x" and bad.ndim == 3:
                assert named in ("h0", "c0"), msg
                continue
            if name == "W_hr" and named == "W_hh":  # W_hr sets P and H, W_hh is checked by them
                continue
            assert named == name, msg
            assert "expected" in msg and str(tuple(bad.shape)) in msg, msg


# ============================================================================= accepted inputs

def _byteswapped(a):
    return a.astype(a.dtype.newbyteorder("S")) if a.dtype.kind == "f" else a


LAYOUTS = {"strided": lambda a: strided(a, np.nan), "negative": negative_strides,
           "fortran": np.asfortranarray, "readonly": read_only, "byteswapped": _byteswapped, "list": lambda a: a.tolist()}


def _map(obj, fn):
    if obj is None:
        return None
    if isinstance(obj, tuple):
        return tuple(_map(o, fn) for o in obj)
    return fn(obj)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell", CELLS)
def test_layouts_give_identical_bits(cell, layout, rng):
    """Every array argument (cotangents too) in an odd layout: same bits as C-contiguous."""
    fn = LAYOUTS[layout]
    for dtype in DTYPES:
        if layout == "list" and dtype == np.float32:
            continue  # Python floats are float64
        case = make_case(cell, 4, 3, 5, 6, dtype, rng, lengths="random")
        odd = {k: (_map(v, fn) if k != "lengths" else v) for k, v in case.items()}
        for reverse in (False, True):
            assert_bitwise(run(rnnkit, cell, odd, reverse), run(rnnkit, cell, case, reverse), layout)
        # single steps: x, states and the cotangents of the step
        x = case["x"][0]
        res = []
        for c, xx in ((case, x), (odd, fn(x))):
            nxt, cache = cell_forward(rnnkit, cell, xx, c["states"], c["params"])
            res.append([*nxt, *cell_backward(rnnkit, cell, c["d_finals"], cache)])
        assert_bitwise(res[1], res[0], layout + " cell")


def test_zero_stride_broadcast_inputs(rng):
    """Broadcast views (stride 0) are copied, not read out of bounds."""
    case = make_case("lstm", 4, 3, 5, 6, np.float64, rng)
    x = np.broadcast_to(case["x"][:1], case["x"].shape)
    b = np.broadcast_to(np.float64(0.1), case["params"][2].shape)
    h0 = np.broadcast_to(case["states"][0][:1], case["states"][0].shape)
    params = (case["params"][0], case["params"][1], b, case["params"][3])
    got = rnnkit.lstm_forward(x, h0, None, *params)
    want = rnnkit.lstm_forward(x.copy(), h0.copy(), None, *(p.copy() for p in params))
    assert_bitwise([got[0], *got[1]], [want[0], *want[1]])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_loss_layouts_give_identical_bits(layout, rng):
    fn = LAYOUTS[layout]
    for dtype in DTYPES:
        if layout == "list" and dtype == np.float32:
            continue  # Python floats are float64
        logits = (3 * rng.standard_normal((7, 5))).astype(dtype)
        t = rng.integers(0, 5, size=7)
        t[2] = -100
        want_p = rnnkit.softmax(logits)
        np.testing.assert_array_equal(rnnkit.softmax(fn(logits)), want_p)
        for reduction in ("mean", "sum", "none"):
            want = rnnkit.softmax_cross_entropy(logits, t, reduction=reduction)
            t_odd = t.tolist() if layout == "list" else negative_strides(t) if layout == "negative" else t
            got = rnnkit.softmax_cross_entropy(fn(logits), t_odd, reduction=reduction)
            np.testing.assert_array_equal(got.loss, want.loss)
            np.testing.assert_array_equal(got.dlogits, want.dlogits)


def test_byteswapped_arrays_mix_with_native_ones(rng):
    """float64 in either byte order is one dtype; the results are native float64."""
    case = make_case("gru", 3, 2, 4, 5, np.float64, rng)
    x = case["x"].astype(">f8")
    y, h, _ = rnnkit.gru_forward(x, case["states"][0], *case["params"])
    y2, h2, _ = rnnkit.gru_forward(case["x"], case["states"][0], *case["params"])
    assert y.dtype == np.float64 and y.dtype.isnative
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(TypeError, match=r"^W_hh: expected dtype float64"):
        rnnkit.gru_forward(x, None, case["params"][0], case["params"][1].astype(">f4"), None, None)


# ============================================================================= outputs vs inputs

def _snapshot(obj):
    return [a.copy() for a in arrays_in(obj)]


@pytest.mark.parametrize("cell", CELLS)
def test_outputs_fresh_inputs_untouched_at_edges(cell, rng):
    """T = 0 (final state == initial state), T = 1, B = 0 and padded rows: outputs never share
    memory with inputs or with each other, and no input is written."""
    for (T_, B_), lengths in [((0, 3), None), ((1, 3), None), ((3, 0), None), ((4, 3), "random"),
                              ((1, 1), "random")]:
        case = make_case(cell, T_, B_, 3, 5, np.float64, rng, lengths=lengths)
        inputs = [case["x"], case["states"], case["params"], case["dy"], case["d_finals"]]
        before = _snapshot(inputs)
        y, finals, ws = seq_forward(rnnkit, cell, case["x"], case["states"], case["params"],
                                    lengths=case["lengths"])
        g = seq_backward(rnnkit, cell, case["dy"], case["d_finals"], ws)
        assert_no_aliasing((y, finals, tuple(g)), inputs)
        assert_no_aliasing((y, finals, tuple(g)), ws.saved)
        for a, b in zip(arrays_in(inputs), before):
            np.testing.assert_array_equal(a, b)
        if T_ == 0:  # no step ran: the final states equal the initial ones, in fresh arrays
            for f, s in zip(finals, case["states"]):
                np.testing.assert_array_equal(f, s)


def test_loss_outputs_fresh(rng):
    logits = rng.standard_normal((4, 3))
    t = np.array([0, 1, 2, -100])
    before = logits.copy()
    for out in (rnnkit.softmax(logits), rnnkit.softmax(logits[0]),
                *rnnkit.softmax_cross_entropy(logits, t, reduction="none"),
                rnnkit.softmax_cross_entropy(logits, t).dlogits):
        assert not np.shares_memory(out, logits)
        assert not np.shares_memory(out, t)
    np.testing.assert_array_equal(logits, before)


# ============================================================================= degenerate sizes

@pytest.mark.parametrize("cell", CELLS)
def test_degenerate_sizes_match_oracle(cell, rng):
    """I = 0 (no input features), H = 0, ones, B = 1 and T = 1 run and match the oracle."""
    with np.errstate(all="ignore"):
        for shape in [(3, 2, 0, 4), (3, 2, 4, 0), (1, 1, 1, 1), (5, 1, 1, 3), (2, 3, 0, 0)]:
            for dtype in DTYPES:
                case = make_case(cell, *shape, dtype, rng, lengths="random")
                for reverse in (False, True):
                    got = run(rnnkit, cell, case, reverse)
                    want = run(ref, cell, case, reverse)
                    for k, (a, e) in enumerate(zip(got, want)):
                        assert_close(a, e, dtype, f"{shape} result {k}")


def test_lstm_projection_size_zero():
    """P = 0: h and y are empty, the cell state still runs; nothing crashes."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 3))
    W_ih, W_hh, W_hr = rng.standard_normal((12, 3)), np.zeros((12, 0)), np.zeros((0, 3))
    for limit in (0, 64):  # BLAS and register-blocked per-step products
        old = _core._get_small_batch_limit()
        _core._set_small_batch_limit(limit)
        try:
            y, (h, c), ws = rnnkit.lstm_forward(x, None, None, W_ih, W_hh, None, None, W_hr=W_hr)
            g = rnnkit.lstm_backward(None, None, np.ones_like(c), ws)
        finally:
            _core._set_small_batch_limit(old)
        assert y.shape == (4, 2, 0) and h.shape == (2, 0) and c.shape == (2, 3)
        # with no recurrent input, c evolves from x alone: compare with the plain LSTM, W_hh = 0
        y2, (h2, c2), ws2 = rnnkit.lstm_forward(x, None, None, W_ih, np.zeros((12, 3)), None, None)
        np.testing.assert_allclose(c, c2, rtol=1e-12)
        g2 = rnnkit.lstm_backward(None, None, np.ones_like(c2), ws2)
        np.testing.assert_allclose(g.dx, g2.dx, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(g.dW_ih, g2.dW_ih, rtol=1e-12, atol=1e-15)
        assert g.dW_hr.shape == (0, 3) and g.dh0.shape == (2, 0)


def test_empty_softmax_and_loss_shapes():
    for shape in [(0, 3), (3, 0), (0, 0), (2, 0, 4), (0,)]:
        p = rnnkit.softmax(np.zeros(shape, np.float32))
        assert p.shape == shape and p.dtype == np.float32


# ============================================================================= workspaces

def test_workspace_checks():
    ws = _lstm_ws()
    for saved, what in ((dict(ws.saved, hprev=ws.saved["hprev"].tolist()), "a list"),
                        (dict(ws.saved, hprev=np.asfortranarray(ws.saved["hprev"])), None),
                        (dict(ws.saved, cprev=ws.saved["cprev"][:, :1]), None)):
        bad = dataclasses.replace(ws, saved=saved)
        with pytest.raises((TypeError, ValueError), match=r"^workspace"):
            rnnkit.lstm_backward(None, None, None, bad)
    bad = dataclasses.replace(ws, x=ws.x.astype(np.float32))
    with pytest.raises(TypeError, match=r"^workspace: its W_ih is dtype float64"):
        rnnkit.lstm_backward(None, None, None, bad)
    # a float32 workspace with float64 cotangents, and the reverse
    ws32 = _lstm_ws(np.float32)
    with pytest.raises(TypeError, match=r"^dh_T: expected dtype float32"):
        rnnkit.lstm_backward(None, np.zeros((B, H)), None, ws32)
    with pytest.raises(TypeError, match=r"^dc_T: expected dtype float64"):
        rnnkit.lstm_backward(None, None, np.zeros((B, H), np.float32), ws)
    # the same workspace serves any number of backward calls, with identical results
    g1 = rnnkit.lstm_backward(np.ones((T, B, H)), None, None, ws)
    g2 = rnnkit.lstm_backward(np.ones((T, B, H)), None, None, ws)
    assert_bitwise(list(g1), list(g2))


def test_module_workspace_is_dropped_by_eval():
    m = nn.GRU(I, H, seed=0, dtype=np.float64)
    out, _ = m(_base(cell="gru")["x"])
    m.eval()
    with pytest.raises(RuntimeError, match=r"^GRU.backward: the module is in eval mode"):
        m.backward(np.ones_like(out))
    m.train()
    with pytest.raises(RuntimeError, match=r"^GRU.backward: no forward"):
        m.backward(np.ones_like(out))


# ============================================================================= NaN and Inf

@pytest.mark.parametrize("cell", CELLS)
def test_nan_inf_propagate_like_the_oracle(cell, rng):
    """NaN/Inf anywhere (x, a state, a weight, a bias, a cotangent) give, position by position,
    the oracle's NaN/Inf and the oracle's finite values: IEEE arithmetic, never a crash."""
    k = n_states(cell)
    where = ["x", "state", "W_ih", "W_hh", "b_hh", "dy", "d_final"]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for target in where:
            for value in (np.nan, np.inf, -np.inf):
                case = make_case(cell, 4, 3, 3, 4, np.float64, rng)
                if target == "x":
                    case["x"][1, 0, 1] = value
                elif target == "state":
                    case["states"][k - 1][1, 2] = value
                elif target in ("W_ih", "W_hh", "b_hh"):
                    i = ("W_ih", "W_hh", None, "b_hh").index(target)
                    case["params"][i].reshape(-1)[3] = value
                elif target == "dy":
                    case["dy"][2, 1, 0] = value
                else:
                    case["d_finals"][0][0, 1] = value
                got, want = run(rnnkit, cell, case), run(ref, cell, case)
                for n, (a, e) in enumerate(zip(got, want)):
                    if e is None:
                        continue
                    msg = f"{target}={value}, result {n}"
                    if cell == "rnn_relu" and n >= 2:
                        # relu's gradient is a select, as in PyTorch: a unit with a <= 0 (or
                        # NaN) passes exactly 0, even for a NaN/Inf incoming gradient; the
                        # oracle multiplies by the 0/1 mask (NaN * 0 = NaN). Where the oracle
                        # is not NaN the two agree exactly.
                        keep = ~np.isnan(e)
                        a, e = a[keep], e[keep]
                    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=msg)
                    np.testing.assert_array_equal(np.isposinf(a), np.isposinf(e), err_msg=msg)
                    np.testing.assert_array_equal(np.isneginf(a), np.isneginf(e), err_msg=msg)
                    fin = np.isfinite(e)
                    np.testing.assert_allclose(a[fin], e[fin], rtol=1e-10, atol=1e-10, err_msg=msg)


def test_nan_inf_in_losses():
    logits = np.array([[0.0, 1.0, 2.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0],
                       [0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.nan, 0.0, 0.0]])
    t = np.array([0, 1, 0, 2, 1, 2])
    with np.errstate(all="ignore"):
        want_p = ref.softmax(logits)
        want = ref.softmax_cross_entropy(logits, t, reduction="none")
    got_p = rnnkit.softmax(logits)
    got = rnnkit.softmax_cross_entropy(logits, t, reduction="none")
    for a, e in ((got_p, want_p), (got.loss, want.loss), (got.dlogits, want.dlogits)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(e))
        fin = np.isfinite(e)
        np.testing.assert_allclose(a[fin], e[fin], rtol=1e-12, atol=1e-15)
    assert got.loss[2] == np.inf  # -inf logit at the target: infinite loss, not NaN
    assert np.isfinite(got.dlogits[2]).all()


# ============================================================================= allocation limits

def test_bad_alloc_in_the_compiled_module_is_memory_error():
    """Bypassing the Python checks, the compiled module's own allocation failure (4 PiB: beyond
    any address space, so nothing is ever touched) surfaces as MemoryError."""
    with pytest.raises(MemoryError):
        _huge_lstm_projection(2**16, private=True)


def test_size_checks_come_before_allocation():
    """The 64-bit overflow case is rejected by arithmetic on Python ints: a float32 and a
    float64 call both fail the same way, and fast."""
    for dtype in DTYPES:
        with pytest.raises(ValueError, match=r"more than a 64-bit size can hold"):
            _huge_lstm_projection(2**29 - 1, dtype=dtype)
    with pytest.raises(ValueError, match=r"^x: T\*B = 2147483648"):
        rnnkit.gru_forward(np.empty((2**31, 1, 0), np.float32), None, np.empty((3, 0), np.float32),
                           np.zeros((3, 1), np.float32), None, None)


def test_nn_module_size_checks():
    with pytest.raises(ValueError, match=r"^input_size: input_size = 4294967296 exceeds"):
        nn.RNN(2**32, 3)
    with pytest.raises(MemoryError, match=r"^LSTM: the parameters"):
        nn.LSTM(2**20, 2**20)


# ============================================================================= the private module

def test_private_module_rechecks_instead_of_crashing():
    """rnnkit._core trusts nothing: every size it relies on is re-checked (ValueError)."""
    d = np.float64
    x, W_ih, W_hh = np.zeros((3, 2, 4)), np.zeros((20, 4)), np.zeros((20, 5))
    h, z3 = np.zeros((2, 5)), np.zeros((3, 2, 5))
    g4 = np.zeros((3, 2, 20))
    fwd = _core.lstm_forward
    bad_forward = [
        (np.zeros((3, 2)), None, None, W_ih, W_hh, None, None, None, None),
        (x, None, None, W_ih, np.zeros(20), None, None, None, None),
        (x, None, None, np.zeros((20, 3)), W_hh, None, None, None, None),
        (x, None, None, W_ih, np.zeros((21, 5)), None, None, None, None),
        (x, np.zeros((2, 4)), None, W_ih, W_hh, None, None, None, None),
        (x, None, np.zeros((3, 5)), W_ih, W_hh, None, None, None, None),
        (x, None, None, W_ih, W_hh, np.zeros(19), None, None, None),
        (x, None, None, W_ih, W_hh, None, np.zeros(21), None, None),
        (x, None, None, W_ih, W_hh, None, None, np.zeros((3,)), None),
        (x, None, None, W_ih, W_hh, None, None, None, np.array([1, 2, 3])),
        (x, None, None, W_ih, W_hh, None, None, None, np.array([0, 1])),
        (x, None, None, W_ih, W_hh, None, None, None, np.array([4, 1])),
    ]
    for args in bad_forward:
        with pytest.raises(ValueError):
            fwd(*args, False, True)
    bwd = _core.lstm_backward
    ok = dict(dy=None, dh_T=None, dc_T=None, x=x, W_ih=W_ih, W_hh=W_hh, W_hr=None, hprev=z3,
              cprev=z3, gates=g4, extra=z3, m=None, lengths=None, has_b_ih=True, has_b_hh=True,
              reverse=False)
    bwd(**ok)
    for change in [dict(dy=np.zeros((2, 2, 5))), dict(dh_T=np.zeros((2, 4))),
                   dict(dc_T=np.zeros((1, 5))), dict(hprev=np.zeros((3, 2, 4))),
                   dict(cprev=np.zeros((2, 2, 5))), dict(gates=np.zeros((3, 2, 19))),
                   dict(extra=np.zeros((3, 1, 5))), dict(W_hr=np.zeros((5, 5))),
                   dict(lengths=np.array([9, 1]))]:
        with pytest.raises(ValueError):
            bwd(**dict(ok, **change))
    with pytest.raises(ValueError):
        _core.rnn_forward(x, None, np.zeros((5, 4)), h, None, None, None, "gelu", False, True)
    with pytest.raises(ValueError):
        _core.gru_backward(None, None, x, np.zeros((15, 4)), np.zeros((15, 5)), z3,
                           np.zeros((3, 2, 15)), np.zeros((3, 2, 4)), None, True, True, True, False)
    with pytest.raises(ValueError):
        _core.softmax(np.zeros(3, d))
    with pytest.raises(ValueError):
        _core.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]), -100, 1.0)
    with pytest.raises(ValueError):
        _core.softmax_cross_entropy(np.zeros((2, 3)), np.array([0]), -100, 1.0)


# ============================================================================= threads

def _thread_cases(rng):
    """One job per cell and batch size: the register-blocked (B = 2) and the BLAS (B = 40)
    per-step products, with lengths, both directions; plus the loss."""
    jobs = []
    for n, cell in enumerate(CELLS):
        for B_ in (2, 40):
            dtype = DTYPES[(n + B_) % 2]
            case = make_case(cell, 9, B_, 24, 32, dtype, rng, lengths="random")
            jobs.append(lambda cell=cell, case=case, rev=bool(n % 2): run(rnnkit, cell, case, rev))
    logits = rng.standard_normal((300, 50)).astype(np.float32)
    t = rng.integers(0, 50, size=300)
    jobs.append(lambda: list(rnnkit.softmax_cross_entropy(logits, t)) + [rnnkit.softmax(logits)])
    return jobs


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_concurrent_calls_match_serial_calls_bitwise(blas_threads, rng):
    jobs = _thread_cases(rng)
    old = rnnkit.get_num_threads()
    rnnkit.set_num_threads(blas_threads)
    try:
        serial = [job() for job in jobs]
        n_threads, rounds = 4, 3
        results = [[None] * len(jobs) for _ in range(n_threads)]
        errors = []
        barrier = threading.Barrier(n_threads)

        def worker(w):
            try:
                barrier.wait()
                for r in range(rounds):
                    # each thread walks the jobs in its own order, so different calls overlap
                    for j in np.random.default_rng(w * 10 + r).permutation(len(jobs)):
                        out = jobs[j]()
                        if results[w][j] is None:
                            results[w][j] = out
                        else:
                            assert_bitwise(out, results[w][j], f"thread {w} job {j} round {r}")
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        rnnkit.set_num_threads(old)
    assert not errors, errors[0]
    for w in range(n_threads):
        for j, want in enumerate(serial):
            assert_bitwise(results[w][j], want, f"thread {w} job {j}")


def test_results_are_bitwise_reproducible(rng):
    jobs = _thread_cases(rng)
    old = rnnkit.get_num_threads()
    try:
        for n in (1, 2):
            rnnkit.set_num_threads(n)
            first = [job() for job in jobs]
            rnnkit.set_num_threads(3 - n)  # run at the other count in between
            [job() for job in jobs[:3]]
            rnnkit.set_num_threads(n)
            for _ in range(2):
                for j, job in enumerate(jobs):
                    assert_bitwise(job(), first[j], f"{n} threads, job {j}")
    finally:
        rnnkit.set_num_threads(old)


def test_concurrent_modules():
    """Separate module instances in separate threads: same as serial."""
    x = np.random.default_rng(5).standard_normal((6, 3, 4)).astype(np.float32)

    def job(seed):
        m = nn.LSTM(4, 8, num_layers=2, bidirectional=True, seed=seed)
        out, (h, c) = m(x, lengths=np.array([6, 2, 4]))
        dx, _ = m.backward(np.ones_like(out))
        return [out, h, c, dx] + [p.grad for p in m.parameters()]

    serial = [job(s) for s in range(8)]
    results = [None] * 8
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, job(s))) for s in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for s in range(8):
        assert_bitwise(results[s], serial[s], f"module {s}")


# ============================================================================= resident memory

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
@pytest.mark.skipif(SANITIZED, reason="ASan's quarantine holds freed memory by design")
def test_resident_memory_does_not_grow(rng):
    """200 forward+backward rounds (every cell with lengths, both dtypes, the multi-threaded
    path, the loss, a module and the error paths) after a warm-up: the RSS stays put. A leak
    of one gate buffer per round would add 200 * 60 KB = 12 MB or more."""
    cases = [(cell, make_case(cell, 10, 4, 16, 48, np.float32 if k % 2 else np.float64, rng,
                              lengths="random")) for k, cell in enumerate(CELLS)]
    cases.append(("lstm", make_case("lstm", 10, 16, 16, 48, np.float64, rng, lengths="random")))
    logits = rng.standard_normal((320, 40))
    t = rng.integers(0, 40, size=320)
    module = nn.GRU(16, 32, seed=0)
    xm = rng.standard_normal((10, 4, 16)).astype(np.float32)
    bad_ws = _tampered_workspace()

    def round_():
        for cell, case in cases:
            run(rnnkit, cell, case, reverse=True)
        rnnkit.softmax_cross_entropy(logits, t)
        out, _ = module(xm)
        module.backward(out)
        for call in (lambda: _core.lstm_forward(np.zeros((3, 2, 4)), None, None, np.zeros((20, 4)),
                                                np.zeros((21, 5)), None, None, None, None, False,
                                                True),
                     lambda: rnnkit.lstm_backward(None, None, None, bad_ws),
                     lambda: _core.softmax_cross_entropy(logits, t + 100, -100, 1.0)):
            try:
                call()
            except (ValueError, TypeError):
                pass

    for _ in range(30):
        round_()
    start = _rss_bytes()
    for _ in range(200):
        round_()
    grown = _rss_bytes() - start
    assert grown < 8 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB over 200 rounds"


# ============================================================================= numerical safety

PRE = np.array([0.0, 1e-8, -0.5, 0.62, -0.63, 1.0, -3.0, 9.0, -15.0, 20.0, -30.0, 44.0, -87.5,
                88.5, -300.0, 709.5, -710.5, 1e3, -2e3, 5e3, -1e4, 1e4])


def _exact_sigmoid(a):
    a = np.asarray(a, np.float64)
    with np.errstate(all="ignore"):  # np.where evaluates both branches
        return np.where(a >= 0, 1 / (1 + np.exp(-a)), np.exp(a) / (1 + np.exp(a)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_tanh_and_sigmoid_at_large_preactivations(dtype):
    """A cell whose pre-activations are exactly the values in PRE (x = 1, one input, no bias,
    h = 0 or 1): the kernels' tanh and sigmoid and their gradients are finite and correct."""
    eps = np.finfo(dtype).eps
    a = PRE.astype(dtype)
    n = a.size
    x = np.ones((1, 1), dtype)
    # tanh: RNN cell, h_next = tanh(a); the bias gradient is tanh'(a) = 1 - tanh(a)^2
    h, cache = rnnkit.rnn_cell_forward(x, None, a[:, None], np.zeros((n, n), dtype),
                                       np.zeros(n, dtype), None)
    g = rnnkit.rnn_cell_backward(np.ones((1, n), dtype), cache)
    th = np.tanh(a.astype(np.float64))
    np.testing.assert_allclose(h[0], th, rtol=4 * eps, atol=0)
    np.testing.assert_allclose(g.db_ih, 1 - th * th, rtol=0, atol=8 * eps)
    assert np.isfinite(h).all() and np.isfinite(g.db_ih).all() and np.isfinite(g.dx).all()
    # sigmoid: GRU cell with h = 1 and a zero n block gives h_next = z = sigmoid(a_z); the
    # z block's bias gradient is (h - n) z (1 - z) = sigmoid'(a)
    W_ih = np.zeros((3 * n, 1), dtype)
    W_ih[n:2 * n, 0] = a
    h1, cache = rnnkit.gru_cell_forward(x, np.ones((1, n), dtype), W_ih,
                                        np.zeros((3 * n, n), dtype), np.zeros(3 * n, dtype), None)
    g = rnnkit.gru_cell_backward(np.ones((1, n), dtype), cache)
    s = _exact_sigmoid(a)
    np.testing.assert_allclose(h1[0], s, rtol=4 * eps, atol=4 * np.finfo(dtype).tiny)
    np.testing.assert_allclose(g.db_ih[n:2 * n], s * _exact_sigmoid(-a), rtol=0, atol=4 * eps)
    assert np.isfinite(h1).all() and np.isfinite(g.db_ih).all() and np.isfinite(g.dW_ih).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_sequences_with_huge_preactivations(cell, dtype, rng):
    """|pre-activations| up to about 1e4: every result finite and equal to the oracle's."""
    case = make_case(cell, 6, 4, 5, 8, dtype, rng, lengths="random")
    # x in {+-0.5, +-1} and integer W_ih: x W_ih^T is exact whatever the summation order, so
    # kernel and oracle see the same pre-activations (up to the small recurrent terms)
    case["x"] = rng.choice([-1.0, -0.5, 0.5, 1.0], size=case["x"].shape).astype(dtype)
    W_ih = rng.integers(-2000, 2001, size=case["params"][0].shape).astype(dtype)
    case["params"] = (W_ih,) + case["params"][1:]
    assert 1e3 < np.abs(case["x"].reshape(-1, 5) @ W_ih.T).max() <= 1e4
    with np.errstate(all="ignore"):
        want = run(ref, cell, case)
    got = run(rnnkit, cell, case)
    for k, (a, e) in enumerate(zip(got, want)):
        if e is None:
            continue
        assert np.isfinite(a).all(), f"result {k}"
        assert_close(a, e, dtype, f"result {k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_cross_entropy_stable_up_to_1e4(dtype, rng):
    """Logits up to +-1e4 (spread 2e4): the loss and gradient equal the float64 logsumexp
    formula, finite; no overflow to inf or NaN."""
    C = 7
    rows = [np.full(C, 1e4), np.full(C, -1e4), np.linspace(-1e4, 1e4, C),
            np.array([1e4, -1e4, 0, 1, 2, 3, 9999.5]), rng.uniform(-1e4, 1e4, C)]
    logits = np.array(rows).astype(dtype)
    N = len(rows)
    t = np.array([0, 3, 0, 1, 6])
    res = rnnkit.softmax_cross_entropy(logits, t, reduction="none")
    l64 = logits.astype(np.float64)
    m = l64.max(axis=1, keepdims=True)
    shifted = l64 - m  # exact: both are float32/float64 values of the same binade range
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    want_loss = (m[:, 0] - l64[np.arange(N), t]) + log_sum  # small terms first, as it must be
    want_d = np.exp(shifted - log_sum[:, None])
    want_d[np.arange(N), t] -= 1
    lse = m[:, 0] + log_sum
    eps = np.finfo(dtype).eps
    assert np.isfinite(res.loss).all() and np.isfinite(res.dlogits).all()
    np.testing.assert_allclose(res.loss, want_loss, rtol=4 * eps, atol=4 * eps)
    np.testing.assert_allclose(res.dlogits, want_d, rtol=0, atol=4 * eps)
    p = rnnkit.softmax(logits)
    np.testing.assert_allclose(p, np.exp(shifted - log_sum[:, None]), rtol=0, atol=4 * eps)
    mean = rnnkit.softmax_cross_entropy(logits, t)
    np.testing.assert_allclose(mean.loss, want_loss.mean(), rtol=4 * eps)


# ============================================================================= docs/errors.md

def _md(text):
    return text.replace("|", "\\|")


def _render_table():
    lines = [
        "# Bad inputs and the errors they get",
        "",
        "Generated from real runs by `python tests/test_robustness.py > docs/errors.md`; the",
        "cases are `BAD_INPUTS` in `tests/test_robustness.py`, where a test checks each exception",
        "type and message. Base call: `lstm_forward` in float64 with T=3, B=2, I=4, H=5 (so",
        "G*H = 20), changed in one argument. Memory sizes in messages are those of the machine",
        f"that generated the table ({_validate._human(_validate.memory_limit() or 0)}, RAM + swap).",
        "",
        "Rules behind the table:",
        "",
        "- Every message starts with the argument's name, then what was expected (symbolically",
        "  and in numbers) and what was given. Wrong kinds of data raise `TypeError`; wrong",
        "  shapes or values raise `ValueError`; misuse of a module's state raises `RuntimeError`.",
        "- dtypes: float32 or float64, one dtype per call (set by `x`, or by the workspace for",
        "  backward). Integer, bool, complex, object, string and other float widths are",
        "  rejected, float16 included: it is never computed in another precision silently.",
        "  float32/float64 in non-native byte order are accepted (same values; results are",
        "  native). `rnnkit.nn` modules require exactly their own dtype.",
        "- Any layout is accepted: non-contiguous, negative strides, Fortran order, broadcast",
        "  (stride 0), read-only, Python lists; results are bitwise those of C-contiguous",
        "  arrays. Outputs are always fresh arrays; inputs are never written.",
        "- T = 0 or B = 0 (and I = 0, H = 0) give correctly shaped empty or zero results.",
        "- NaN and Inf propagate as IEEE arithmetic says (position by position as the NumPy",
        "  oracle); nothing crashes. tanh(+-inf) = +-1, sigmoid(-inf) = 0, exp underflows to 0.",
        "  One deliberate difference from plain multiplication: relu's gradient is a select, as",
        "  in PyTorch (a unit whose pre-activation is <= 0 or NaN passes exactly 0, even when",
        "  the incoming gradient is NaN or Inf).",
        "- Large values: sigmoid and tanh are exact to a few ulp and their gradients finite for",
        "  pre-activations up to |a| = 1e4 and beyond; softmax and the cross-entropy shift by",
        "  the row maximum and stay finite and exact for logits up to 1e4 (spread 2e4).",
        "- Sizes: every GEMM dimension (T*B, G*H, I) must fit the BLAS's 32-bit integers",
        "  (`ValueError`); byte counts that do not fit 64 bits are `ValueError`; buffers larger",
        "  than the machine's RAM + swap are `MemoryError` before any allocation; other",
        "  allocation failures (C++ `std::bad_alloc`, NumPy) are `MemoryError` too.",
        "",
        "| group | input tried | exception | message |",
        "|---|---|---|---|",
    ]
    for case in BAD_INPUTS:
        try:
            case.call()
            got, msg = "(no error)", ""
        except Exception as e:  # noqa: BLE001 - the table reports whatever happens
            got, msg = type(e).__name__, str(e)
        lines.append(f"| {case.group} | {_md(case.what)} | `{got}` | `{_md(msg)}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(_render_table())
