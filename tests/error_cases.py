"""The bad inputs tried and the exception and message each must give: ``BAD_INPUTS``.

``tests/test_bad_inputs.py`` runs every case and checks its exception type and message;
``tools/render_errors.py`` runs them too and renders ``docs/errors.md`` from the results. The
helpers that build the calls (``base_args``, ``lstm_workspace``, ...) are shared with the
workspace and memory tests. Not a test module: nothing here is collected by pytest.
"""

import collections
import dataclasses

import numpy as np
import pytest

import rnnkit
from conftest import make_params, n_states
from rnnkit import _core, nn

T, B, I, H = 3, 2, 4, 5  # the base sizes of the bad-input table


# Base arguments of the table's calls: LSTM, float64, T=3, B=2, I=4, H=5.


def base_args(dtype=np.float64, cell="lstm", T=T, B=B):
    rng = np.random.default_rng(0)
    W_ih, W_hh, b_ih, b_hh = make_params(cell, I, H, dtype, rng)
    args = {"x": rng.standard_normal((T, B, I)).astype(dtype)}
    for name in ("h0", "c0")[: n_states(cell)]:
        args[name] = rng.standard_normal((B, H)).astype(dtype)
    args.update(W_ih=W_ih, W_hh=W_hh, b_ih=b_ih, b_hh=b_hh)
    return args


def _lstm(**changes):
    return rnnkit.lstm_forward(**dict(base_args(), **changes))


def _lstm_f32(**changes):
    return rnnkit.lstm_forward(**dict(base_args(np.float32), **changes))


def _lstm_proj(P=3, **changes):
    rng = np.random.default_rng(1)
    args = base_args()
    args.update(
        h0=rng.standard_normal((B, P)), W_hh=rng.standard_normal((4 * H, P)), W_hr=rng.standard_normal((P, H))
    )
    return rnnkit.lstm_forward(**dict(args, **changes))


def lstm_workspace(dtype=np.float64):
    return rnnkit.lstm_forward(**base_args(dtype))[2]


_OWN = object()


def _lstm_backward(dy=None, dh_T=None, dc_T=None, ws=_OWN):
    return rnnkit.lstm_backward(dy, dh_T, dc_T, lstm_workspace() if ws is _OWN else ws)


def _lstm_cell(**changes):
    a = base_args()
    args = dict(
        x=a["x"][0], h=a["h0"], c=a["c0"], W_ih=a["W_ih"], W_hh=a["W_hh"], b_ih=a["b_ih"], b_hh=a["b_hh"]
    )
    return rnnkit.lstm_cell_forward(**dict(args, **changes))


def _rnn(**changes):
    a = base_args(cell="rnn")
    return rnnkit.rnn_forward(**dict(a, **changes))


def _gru(**changes):
    a = base_args(cell="gru")
    return rnnkit.gru_forward(**dict(a, **changes))


def _ce(logits=None, targets=None, **kw):
    logits = np.zeros((4, 3)) if logits is None else logits
    targets = np.array([0, 1, 2, -100]) if targets is None else targets
    return rnnkit.softmax_cross_entropy(logits, targets, **kw)


def huge_lstm_projection(H_big, T_big=2**26 - 1, B_big=32, dtype=np.float64, private=False):
    """An LSTM whose every array is empty (I = 0, P = 0) but whose gate buffer is
    T*B*4*H values: sizes that are valid for the BLAS yet cannot be allocated or even counted."""
    x = np.empty((T_big, B_big, 0), dtype)
    W_ih = np.empty((4 * H_big, 0), dtype)
    W_hh = np.empty((4 * H_big, 0), dtype)
    W_hr = np.empty((0, H_big), dtype)
    if private:
        return _core.lstm_forward(x, None, None, W_ih, W_hh, None, None, W_hr, None, False, True)
    return rnnkit.lstm_forward(x, None, None, W_ih, W_hh, None, None, W_hr=W_hr)


def _torch():
    """torch, for the torch cases (they skip without it; docs/errors.md is rendered with it)."""
    return pytest.importorskip("torch")


def _torch_x(**kw):
    return _torch().tensor(base_args()["x"], **kw)


def _ragged_x():
    """x as nested lists whose second time step has one batch row too few."""
    x = base_args()["x"].tolist()
    x[1] = x[1][:1]
    return x


def _module(**kw):
    return nn.LSTM(I, H, seed=0, dtype=np.float64, **kw)


def _module_backward(dout):
    m = _module()
    m(base_args()["x"])
    return m.backward(dout)


def tampered_workspace():
    """A workspace whose compiled record was replaced by a dict of its saved arrays."""
    ws = lstm_workspace()
    return dataclasses.replace(ws, saved=ws.saved.saved_arrays())


def workspace_of_modified_input(name="x"):
    """A workspace whose forward's input ``name`` was then changed in place (an optimizer step
    before backward): backward must refuse it."""
    args = base_args()
    ws = rnnkit.lstm_forward(**args)[2]
    args[name] *= 0.5
    return ws


def _eval_module_backward():
    m = nn.LSTM(I, H, seed=0, dtype=np.float64).eval()
    m(base_args()["x"])
    return m.backward(None)


def _eval_cell_backward():
    m = nn.LSTMCell(I, H, seed=0, dtype=np.float64).eval()
    m(base_args()["x"][0])
    return m.backward(None)


Case = collections.namedtuple("Case", "group what call exc message")
# ``message``: the exact start of the exception's message.
BAD_INPUTS = [
    # --- shapes: rank and every dimension against the others
    Case(
        "shape",
        "`lstm_forward`: W_hh one column short (H = 256)",
        lambda: rnnkit.lstm_forward(
            np.zeros((1, 1, 4)), None, None, np.zeros((1024, 4)), np.zeros((1024, 255)), None, None
        ),
        ValueError,
        "W_hh: expected shape (4*H, H) = (1024, 256), got (1024, 255)",
    ),
    Case(
        "shape",
        "`lstm_forward`: x with 2 dimensions",
        lambda: _lstm(x=np.zeros((T, I))),
        ValueError,
        "x: expected 3 dimensions (T, B, I), got shape (3, 4)",
    ),
    Case(
        "shape",
        "`lstm_forward`: W_hh with 3 dimensions",
        lambda: _lstm(W_hh=np.zeros((1, 4 * H, H))),
        ValueError,
        "W_hh: expected 2 dimensions (4*H, H), got shape (1, 20, 5)",
    ),
    Case(
        "shape",
        "`lstm_forward`: W_hh rows not 4*H",
        lambda: _lstm(W_hh=np.zeros((4 * H + 1, H))),
        ValueError,
        "W_hh: expected shape (4*H, H) = (20, 5), got (21, 5)",
    ),
    Case(
        "shape",
        "`lstm_forward`: x's input size differs from W_ih's",
        lambda: _lstm(x=np.zeros((T, B, I + 1))),
        ValueError,
        "W_ih: expected shape (4*H, I) = (20, 5), got (20, 4)",
    ),
    Case(
        "shape",
        "`lstm_forward`: b_ih of length 4*H + 1",
        lambda: _lstm(b_ih=np.zeros(4 * H + 1)),
        ValueError,
        "b_ih: expected shape (4*H,) = (20,), got (21,)",
    ),
    Case(
        "shape",
        "`lstm_forward`: b_hh as a (1, 4*H) row",
        lambda: _lstm(b_hh=np.zeros((1, 4 * H))),
        ValueError,
        "b_hh: expected shape (4*H,) = (20,), got (1, 20)",
    ),
    Case(
        "shape",
        "`lstm_forward`: h0 of another batch size",
        lambda: _lstm(h0=np.zeros((B + 1, H))),
        ValueError,
        "h0: expected shape (B, H) = (2, 5), got (3, 5)",
    ),
    Case(
        "shape",
        "`lstm_forward`: c0 with a time axis",
        lambda: _lstm(c0=np.zeros((1, B, H))),
        ValueError,
        "c0: expected shape (B, H) = (2, 5), got (1, 2, 5)",
    ),
    Case(
        "shape",
        "`lstm_forward(W_hr=...)`: W_hh not (4*H, P)",
        lambda: _lstm_proj(W_hh=np.zeros((4 * H, H))),
        ValueError,
        "W_hh: expected shape (4*H, P) = (20, 3), got (20, 5)",
    ),
    Case(
        "shape",
        "`lstm_forward(W_hr=...)`: h0 (B, H) instead of (B, P)",
        lambda: _lstm_proj(h0=np.zeros((B, H))),
        ValueError,
        "h0: expected shape (B, P) = (2, 3), got (2, 5)",
    ),
    Case(
        "shape",
        "`lstm_forward`: lengths of another batch size",
        lambda: _lstm(lengths=np.ones(B + 1, int)),
        ValueError,
        "lengths: expected shape (B,) = (2,), got (3,)",
    ),
    Case(
        "shape",
        "`lstm_backward`: dy one step short",
        lambda: _lstm_backward(dy=np.zeros((T - 1, B, H))),
        ValueError,
        "dy: expected shape (T, B, H) = (3, 2, 5), got (2, 2, 5)",
    ),
    Case(
        "shape",
        "`lstm_backward`: dc_T transposed",
        lambda: _lstm_backward(dc_T=np.zeros((H, B))),
        ValueError,
        "dc_T: expected shape (B, H) = (2, 5), got (5, 2)",
    ),
    Case(
        "shape",
        "`lstm_cell_forward`: a sequence x (T, B, I)",
        lambda: _lstm_cell(x=np.zeros((T, B, I))),
        ValueError,
        "x: expected 2 dimensions (B, I), got shape (3, 2, 4)",
    ),
    Case(
        "shape",
        "`lstm_cell_forward`: c of another size",
        lambda: _lstm_cell(c=np.zeros((B, H + 1))),
        ValueError,
        "c: expected shape (B, H) = (2, 5), got (2, 6)",
    ),
    Case(
        "shape",
        "`rnn_forward`: W_hh (H, H+1)",
        lambda: _rnn(W_hh=np.zeros((H, H + 1))),
        ValueError,
        "W_hh: expected shape (H, H) = (5, 5), got (5, 6)",
    ),
    Case(
        "shape",
        "`gru_forward`: W_ih (4*H, I) (an LSTM's)",
        lambda: _gru(W_ih=np.zeros((4 * H, I))),
        ValueError,
        "W_ih: expected shape (3*H, I) = (15, 4), got (20, 4)",
    ),
    Case(
        "shape",
        "`softmax_cross_entropy`: 1-D logits",
        lambda: _ce(logits=np.zeros(3)),
        ValueError,
        "logits: expected 2 dimensions (N, C), got shape (3,)",
    ),
    Case(
        "shape",
        "`softmax_cross_entropy`: targets (N-1,)",
        lambda: _ce(targets=np.array([0, 1, 2])),
        ValueError,
        "targets: expected shape (N,) = (4,), got (3,)",
    ),
    Case(
        "shape",
        "`softmax`: a 0-d array",
        lambda: rnnkit.softmax(np.array(1.0)),
        ValueError,
        "logits: expected at least 1 dimension (..., C), got a scalar",
    ),
    Case(
        "shape",
        "`nn.LSTM(4, 5)`: x with input size 5",
        lambda: _module()(np.zeros((T, B, I + 1))),
        ValueError,
        "x: expected input size I = 4 (last dimension), got shape (3, 2, 5)",
    ),
    Case(
        "shape",
        "`nn.LSTM(4, 5)`: x with 4 dimensions",
        lambda: _module()(np.zeros((1, T, B, I))),
        ValueError,
        "x: expected 3 dimensions (T, B, I) or 2 (T, I) (unbatched), got shape (1, 3, 2, 4)",
    ),
    Case(
        "shape",
        "`nn.LSTM(4, 5, num_layers=2, bidirectional=True)`: h0 for one layer",
        lambda: _module(num_layers=2, bidirectional=True)(base_args()["x"], (np.zeros((2, B, H)), None)),
        ValueError,
        "h0: expected shape (num_layers*D, B, H) = (4, 2, 5), got (2, 2, 5)",
    ),
    Case(
        "shape",
        "`nn.LSTM.backward`: dout of the wrong width",
        lambda: _module_backward(np.zeros((T, B, H + 1))),
        ValueError,
        "dout: expected shape (T, B, D*H_out) = (3, 2, 5), got (3, 2, 6)",
    ),
    Case(
        "shape",
        "`nn.LSTM`: unbatched x (T, I) with lengths",
        lambda: _module()(np.zeros((T, I)), lengths=[1]),
        ValueError,
        "lengths: not supported with unbatched input x (T, I)",
    ),
    Case(
        "shape",
        "`nn.LSTM`: hx a single array, not a pair",
        lambda: _module()(base_args()["x"], np.zeros((1, B, H))),
        TypeError,
        "hx: expected a pair (h, c) (either may be None) or None, got ndarray",
    ),
    Case(
        "shape",
        "`nn.GRUCell(4, 5)`: x (1, B, I) with a time axis",
        lambda: nn.GRUCell(I, H)(np.zeros((1, B, I), np.float32)),
        ValueError,
        "x: expected 2 dimensions (B, I) or 1 (I,) (unbatched), got shape (1, 2, 4)",
    ),
    # --- dtypes
    Case(
        "dtype",
        "`lstm_forward`: x int64",
        lambda: _lstm(x=np.zeros((T, B, I), np.int64)),
        TypeError,
        "x: expected a float32 or float64 array, got dtype int64",
    ),
    Case(
        "dtype",
        "`lstm_forward`: x bool",
        lambda: _lstm(x=np.zeros((T, B, I), bool)),
        TypeError,
        "x: expected a float32 or float64 array, got dtype bool",
    ),
    Case(
        "dtype",
        "`lstm_forward`: W_ih complex128",
        lambda: _lstm(W_ih=np.zeros((4 * H, I), complex)),
        TypeError,
        "W_ih: expected a float32 or float64 array, got dtype complex128",
    ),
    Case(
        "dtype",
        "`lstm_forward`: h0 object array",
        lambda: _lstm(h0=np.zeros((B, H), object)),
        TypeError,
        "h0: expected a float32 or float64 array, got dtype object",
    ),
    Case(
        "dtype",
        "`lstm_forward`: x float16",
        lambda: _lstm(x=np.zeros((T, B, I), np.float16)),
        TypeError,
        "x: expected a float32 or float64 array, got dtype float16 (float16 is not "
        "supported: convert to float32)",
    ),
    Case(
        "dtype",
        "`lstm_forward`: x long double",
        lambda: _lstm(x=np.zeros((T, B, I), np.longdouble)),
        TypeError,
        f"x: expected a float32 or float64 array, got dtype {np.dtype(np.longdouble)}",
    ),
    Case(
        "dtype",
        "`lstm_forward`: x a string",
        lambda: _lstm(x="abc"),
        TypeError,
        "x: expected a float32 or float64 array, got dtype <U3",
    ),
    Case(
        "dtype", "`lstm_forward`: x None", lambda: _lstm(x=None), TypeError, "x: expected an array, got None"
    ),
    Case(
        "dtype",
        "`lstm_forward`: W_hh None",
        lambda: _lstm(W_hh=None),
        TypeError,
        "W_hh: expected an array, got None",
    ),
    Case(
        "dtype",
        "`lstm_forward`: float64 x, float32 W_hh",
        lambda: _lstm(W_hh=base_args()["W_hh"].astype(np.float32)),
        TypeError,
        "W_hh: expected dtype float64 (all arrays of one call share a dtype), got float32",
    ),
    Case(
        "dtype",
        "`lstm_forward`: float32 x, float64 b_hh",
        lambda: _lstm_f32(b_hh=np.zeros(4 * H)),
        TypeError,
        "b_hh: expected dtype float32 (all arrays of one call share a dtype), got float64",
    ),
    Case(
        "dtype",
        "`lstm_backward`: float32 dy, float64 workspace",
        lambda: _lstm_backward(dy=np.zeros((T, B, H), np.float32)),
        TypeError,
        "dy: expected dtype float64 (all arrays of one call share a dtype), got float32",
    ),
    Case(
        "dtype",
        "`gru_cell_backward`: float32 dh_next, float64 cache",
        lambda: rnnkit.gru_cell_backward(
            np.zeros((B, H), np.float32),
            rnnkit.gru_cell_forward(
                base_args()["x"][0], None, *make_params("gru", I, H, np.float64, np.random.default_rng(0))
            )[1],
        ),
        TypeError,
        "dh_next: expected dtype float64 (all arrays of one call share a dtype), got float32",
    ),
    Case(
        "dtype",
        "`lstm_forward`: float lengths",
        lambda: _lstm(lengths=np.array([1.0, 2.0])),
        TypeError,
        "lengths: expected an integer array, got dtype float64",
    ),
    Case(
        "dtype",
        "`lstm_forward`: bool lengths",
        lambda: _lstm(lengths=np.array([True, True])),
        TypeError,
        "lengths: expected an integer array, got dtype bool",
    ),
    Case(
        "dtype",
        "`softmax_cross_entropy`: float targets",
        lambda: _ce(targets=np.array([0.0, 1.0, 2.0, 0.0])),
        TypeError,
        "targets: expected an integer array, got dtype float64",
    ),
    Case(
        "dtype",
        "`softmax`: int logits",
        lambda: rnnkit.softmax(np.zeros((2, 3), int)),
        TypeError,
        "logits: expected a float32 or float64 array, got dtype int64",
    ),
    Case(
        "dtype",
        "`nn.LSTM` (float32): float64 x",
        lambda: nn.LSTM(I, H, seed=0)(np.zeros((T, B, I))),
        TypeError,
        "x: expected dtype float32 (the module's dtype), got float64",
    ),
    Case(
        "dtype",
        "`nn.LSTM(dtype=float16)`",
        lambda: nn.LSTM(I, H, dtype=np.float16),
        TypeError,
        "dtype: expected float32 or float64, got float16",
    ),
    # --- other kinds of arrays: ragged nested lists, torch tensors and dtypes
    Case(
        "array kind",
        "`lstm_forward`: x a ragged nested list (one step with B - 1 rows)",
        lambda: _lstm(x=_ragged_x()),
        ValueError,
        "x: expected a rectangular array, got a ragged nested sequence (of shape (3,) + ragged part)",
    ),
    Case(
        "array kind",
        "`nn.LSTM`: x a ragged nested list",
        lambda: _module()(_ragged_x()),
        ValueError,
        "x: expected a rectangular array, got a ragged nested sequence (of shape (3,) + ragged part)",
    ),
    Case(
        "array kind",
        "`softmax_cross_entropy`: ragged targets",
        lambda: _ce(targets=[[0], [1, 2], [0], [1]]),
        ValueError,
        "targets: expected a rectangular array, got a ragged nested sequence (of shape (4,) + ragged part)",
    ),
    Case(
        "array kind",
        "`lstm_forward`: x a torch tensor with requires_grad=True",
        lambda: _lstm(x=_torch_x(requires_grad=True)),
        TypeError,
        "x: expected an array, got a torch tensor with requires_grad=True: call .detach() on it first",
    ),
    Case(
        "array kind",
        "`nn.LSTM`: h0 a torch.nn.Parameter",
        lambda: _module()(base_args()["x"], (_torch().nn.Parameter(_torch().zeros(1, B, H)), None)),
        TypeError,
        "h0: expected an array, got a torch tensor with requires_grad=True: call .detach() on it first",
    ),
    Case(
        "array kind",
        "`lstm_forward`: x a torch bfloat16 tensor",
        lambda: _lstm(x=_torch_x(dtype=_torch().bfloat16)),
        TypeError,
        "x: expected a float32 or float64 array, got dtype torch.bfloat16 (bfloat16 is not supported: "
        "convert with .float())",
    ),
    Case(
        "array kind",
        "`nn.LSTM`: x a torch bfloat16 tensor",
        lambda: _module()(_torch_x(dtype=_torch().bfloat16)),
        TypeError,
        "x: expected a float32 or float64 array, got dtype torch.bfloat16",
    ),
    Case(
        "array kind",
        "`lstm_forward`: x a torch float8 tensor",
        lambda: _lstm(x=_torch_x().to(_torch().float8_e4m3fn)),
        TypeError,
        "x: expected a float32 or float64 array, got dtype torch.float8_e4m3fn",
    ),
    Case(
        "array kind",
        "`nn.LSTM(dtype=torch.bfloat16)` (torch.float32 / torch.float64 are accepted)",
        lambda: nn.LSTM(I, H, dtype=_torch().bfloat16),
        TypeError,
        "dtype: expected float32 or float64, got torch.bfloat16",
    ),
    # --- values and options
    Case(
        "value",
        "`lstm_forward`: a length of 0",
        lambda: _lstm(lengths=np.array([0, 1])),
        ValueError,
        "lengths: every length must satisfy 1 <= length <= T = 3, got [0]",
    ),
    Case(
        "value",
        "`lstm_forward`: a length > T",
        lambda: _lstm(lengths=[T + 1, 1]),
        ValueError,
        "lengths: every length must satisfy 1 <= length <= T = 3, got [4]",
    ),
    Case(
        "value",
        "`lstm_forward`: a negative length",
        lambda: _lstm(lengths=[-1, 1]),
        ValueError,
        "lengths: every length must satisfy 1 <= length <= T = 3, got [-1]",
    ),
    Case(
        "value",
        "`lstm_forward`: lengths 2**63 (uint64)",
        lambda: _lstm(lengths=np.array([2**63, 1], np.uint64)),
        ValueError,
        "lengths: every length must satisfy 1 <= length <= T = 3, got [9223372036854775808]",
    ),
    Case(
        "value",
        "`lstm_forward`: lengths with T = 0",
        lambda: _lstm(x=np.zeros((0, B, I)), lengths=[1, 1]),
        ValueError,
        "lengths: every length must satisfy 1 <= length <= T = 0, got [1, 1]",
    ),
    Case(
        "value",
        "`rnn_forward`: nonlinearity='sigmoid'",
        lambda: _rnn(nonlinearity="sigmoid"),
        ValueError,
        "nonlinearity: expected one of 'tanh', 'relu', got 'sigmoid'",
    ),
    Case(
        "value",
        "`lstm_forward`: reverse=1",
        lambda: _lstm(reverse=1),
        TypeError,
        "reverse: expected True or False, got 1",
    ),
    Case(
        "value",
        "`gru_forward`: reset_after='yes'",
        lambda: _gru(reset_after="yes"),
        TypeError,
        "reset_after: expected True or False, got 'yes'",
    ),
    Case(
        "value",
        "`softmax_cross_entropy`: target = C",
        lambda: _ce(targets=np.array([0, 1, 3, 0])),
        ValueError,
        "targets: expected class indices in [0, C) = [0, 3) or ignore_index=-100, got [3]",
    ),
    Case(
        "value",
        "`softmax_cross_entropy`: reduction='avg'",
        lambda: _ce(reduction="avg"),
        ValueError,
        "reduction: expected one of 'mean', 'sum', 'none', got 'avg'",
    ),
    Case(
        "value",
        "`set_num_threads(0)`",
        lambda: rnnkit.set_num_threads(0),
        ValueError,
        "n: expected at least 1, got 0",
    ),
    Case(
        "value",
        "`set_num_threads(2.0)`",
        lambda: rnnkit.set_num_threads(2.0),
        TypeError,
        "n: expected an int, got 2.0",
    ),
    Case(
        "value",
        "`set_cache_limit(-1)`",
        lambda: rnnkit.set_cache_limit(-1),
        ValueError,
        "nbytes: expected an int >= 0, got -1",
    ),
    Case(
        "value",
        "`set_cache_limit(1.5)`",
        lambda: rnnkit.set_cache_limit(1.5),
        TypeError,
        "nbytes: expected an int, got 1.5",
    ),
    Case(
        "value",
        "`nn.LSTM(4, 5, proj_size=5)`",
        lambda: nn.LSTM(I, H, proj_size=H),
        ValueError,
        "proj_size: expected 0 (no projection) or less than hidden_size = 5, got 5",
    ),
    Case(
        "value",
        "`nn.GRU(4, 0)`",
        lambda: nn.GRU(I, 0),
        ValueError,
        "hidden_size: expected an int >= 1, got 0",
    ),
    Case(
        "value",
        "`nn.RNN(4, 5, num_layers=2.0)`",
        lambda: nn.RNN(I, H, num_layers=2.0),
        TypeError,
        "num_layers: expected an int, got 2.0",
    ),
    Case(
        "value",
        "`nn.RNN(4, 5, dropout=1.5)`",
        lambda: nn.RNN(I, H, dropout=1.5),
        ValueError,
        "dropout: expected a probability in [0, 1], got 1.5",
    ),
    # --- workspaces
    Case(
        "workspace",
        "`lstm_backward`: workspace of a `training=False` forward (None)",
        lambda: _lstm_backward(ws=_lstm(training=False)[2]),
        ValueError,
        "workspace: got None; lstm_backward needs the workspace of a forward run with training=True",
    ),
    Case(
        "workspace",
        "`gru_backward`: an LSTM workspace",
        lambda: rnnkit.gru_backward(None, None, lstm_workspace()),
        ValueError,
        "workspace: it comes from a lstm forward, but gru_backward needs one from a gru forward",
    ),
    Case(
        "workspace",
        "`lstm_backward`: the cache of `lstm_cell_forward`",
        lambda: _lstm_backward(ws=_lstm_cell()[1]),
        ValueError,
        "workspace: it comes from lstm_cell_forward and cannot be used by lstm_backward",
    ),
    Case(
        "workspace",
        "`lstm_backward`: a dict",
        lambda: rnnkit.lstm_backward(None, None, None, {}),
        TypeError,
        "workspace: expected the Workspace returned by lstm_forward, got dict",
    ),
    Case(
        "workspace",
        "`lstm_backward`: a workspace whose saved state was replaced by a dict",
        lambda: _lstm_backward(ws=tampered_workspace()),
        TypeError,
        "workspace: its saved state is a dict, but a workspace must come unmodified from its forward",
    ),
    Case(
        "workspace",
        "`lstm_backward`: x modified in place after the forward",
        lambda: _lstm_backward(ws=workspace_of_modified_input("x")),
        ValueError,
        "workspace: x was modified in place after the forward that made this workspace (its "
        "contents changed); backward needs the arrays that forward read: run the forward again, "
        "or give it a copy",
    ),
    Case(
        "workspace",
        "`lstm_backward`: W_hh updated in place (an optimizer step) before backward",
        lambda: _lstm_backward(ws=workspace_of_modified_input("W_hh")),
        ValueError,
        "workspace: W_hh was modified in place after the forward",
    ),
    Case(
        "workspace",
        "`nn.LSTM.backward` after an eval-mode forward",
        _eval_module_backward,
        RuntimeError,
        "LSTM.backward: the module is in eval mode, which keeps no workspace",
    ),
    Case(
        "workspace",
        "`nn.LSTMCell.backward` after an eval-mode forward",
        _eval_cell_backward,
        RuntimeError,
        "LSTMCell.backward: the module is in eval mode, which keeps nothing for backward",
    ),
    Case(
        "workspace",
        "`nn.GRU.backward` before any forward",
        lambda: nn.GRU(I, H).backward(None),
        RuntimeError,
        "GRU.backward: no forward to differentiate",
    ),
    # --- sizes: overflow and allocation
    Case(
        "size",
        "`rnn_forward`: T*B = 2**31 rows (x (65536, 32768, 0))",
        lambda: rnnkit.rnn_forward(
            np.empty((2**16, 2**15, 0)), None, np.empty((H, 0)), np.zeros((H, H)), None, None
        ),
        ValueError,
        "x: T*B = 2147483648 exceeds the BLAS's 32-bit size limit 2147483647",
    ),
    Case(
        "size",
        "`lstm_forward(W_hr=...)`: T*B*4*H = 2**62 values (all arrays empty: I = P = 0)",
        lambda: huge_lstm_projection(2**29 - 1),
        ValueError,
        "x: the call's outputs, workspace and scratch (incl. the BLAS buffer) would take ",
    ),
    Case(
        "size",
        "`lstm_forward(W_hr=...)`: a 4 PiB gate buffer (all arrays empty: I = P = 0)",
        lambda: huge_lstm_projection(2**16),
        MemoryError,
        "x: the call's outputs, workspace and scratch (incl. the BLAS buffer) would take 7.0 PiB "
        "of float64, more than this machine's memory",
    ),
    Case(
        "size",
        "`rnn_forward`: y + gates of 64 TiB (T*B = 2**31 - 2**16, H = 2048, float64)",
        lambda: rnnkit.rnn_forward(
            np.empty((2**16, 2**15 - 1, 0)), None, np.empty((2048, 0)), np.zeros((2048, 2048)), None, None
        ),
        MemoryError,
        "x: the call's outputs, workspace and scratch (incl. the BLAS buffer) would take 64.0 TiB "
        "of float64, more than this machine's memory",
    ),
    Case(
        "size",
        "`rnn_forward`: x a broadcast view of 256 TiB",
        lambda: rnnkit.rnn_forward(
            np.broadcast_to(np.float32(1), (2**20, 2**20, 64)),
            None,
            np.zeros((H, 64), np.float32),
            np.zeros((H, H), np.float32),
            None,
            None,
        ),
        MemoryError,
        "x: a C-contiguous copy would take 256.0 TiB of float32, more than this machine's memory",
    ),
    Case(
        "size",
        "`dot_attention_forward`: T = S = 2**20 (weights and scores 8 TiB each; H = Hv = 0)",
        lambda: rnnkit.attention.dot_attention_forward(
            np.empty((1, 2**20, 0)), np.empty((1, 2**20, 0)), np.empty((1, 2**20, 0))
        ),
        MemoryError,
        "query: the call's outputs and scratch (incl. the BLAS buffer) would take 16.0 TiB of "
        "float64, more than this machine's memory",
    ),
    Case(
        "size",
        "`additive_attention_forward`: T = S = 2**20 (A = 1, Hq = Hk = Hv = 0)",
        lambda: rnnkit.attention.additive_attention_forward(
            np.empty((1, 2**20, 0)),
            np.empty((1, 2**20, 0)),
            np.empty((1, 2**20, 0)),
            np.zeros((1, 0)),
            np.zeros((1, 0)),
            np.zeros(1),
        ),
        MemoryError,
        "query: the call's outputs and scratch (incl. the BLAS buffer) would take 8.0 TiB of "
        "float64, more than this machine's memory",
    ),
    Case(
        "size",
        "`nn.LSTM(10, 2**31)`",
        lambda: nn.LSTM(10, 2**31),
        ValueError,
        "hidden_size: 4*hidden_size = 8589934592 exceeds the BLAS's 32-bit size limit 2147483647",
    ),
    Case(
        "size",
        "`nn.GRU(10, 64, num_layers=10**9)`",
        lambda: nn.GRU(10, 64, num_layers=10**9),
        MemoryError,
        "GRU: the parameters (24959999989632 values) would take 90.8 TiB of float32, "
        "more than this machine's memory",
    ),
]
