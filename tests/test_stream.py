"""Streaming inference (nn's ``module.stream``): chunks equal one whole-sequence call, bitwise;
reset of some rows; the state's get / set; what a stream refuses."""

import numpy as np
import pytest

from conftest import CELLS, DTYPES, module_class, n_states
from rnnkit import _core, nn

T = 50


def _module(cell, dtype, num_layers=1, **kw):
    return module_class(cell)(6, 5, num_layers=num_layers, **CELLS[cell][1], dtype=dtype, seed=3, **kw)


def _whole(m, x):
    """One eval-mode forward (the module's mode restored afterwards)."""
    training = m.training
    m.eval()
    out = m(x)
    m.train(training)
    return out


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("chunk", [1, 3, 50])
def test_chunks_equal_whole_sequence_bitwise(cell, dtype, B, num_layers, chunk, rng):
    m = _module(cell, dtype, num_layers)  # training mode: a stream does not care
    x = rng.standard_normal((T, B, 6)).astype(dtype)
    y, final = _whole(m, x)
    s = m.stream(batch=B)
    ys = np.concatenate([s(x[t : t + chunk]) for t in range(0, T, chunk)])
    assert ys.dtype == dtype and ys.shape == y.shape
    np.testing.assert_array_equal(ys, y)
    finals = final if n_states(cell) == 2 else (final,)
    got = s.state if n_states(cell) == 2 else (s.state,)
    for a, b in zip(got, finals):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_projection_bitwise(dtype, rng):
    m = _module("lstm", dtype, 2, proj_size=3)
    x = rng.standard_normal((T, 4, 6)).astype(dtype)
    y, (h, c) = _whole(m, x)
    s = m.stream(4)
    ys = np.concatenate([s(x[t : t + 3]) for t in range(0, T, 3)])
    np.testing.assert_array_equal(ys, y)
    assert s.state[0].shape == (2, 4, 3) and s.state[1].shape == (2, 4, 5)
    np.testing.assert_array_equal(s.state[0], h)
    np.testing.assert_array_equal(s.state[1], c)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_single_step_form_and_batch_first(cell, rng):
    m = _module(cell, np.float32, 2, batch_first=True)
    x = rng.standard_normal((3, 10, 6)).astype(np.float32)  # (B, T, I)
    y, _ = _whole(m, x)
    steps = m.stream(3)
    out = np.stack([steps(x[:, t]) for t in range(10)], axis=1)  # each (B, I) -> (B, H)
    np.testing.assert_array_equal(out, y)
    chunks = m.stream(3)
    got = np.concatenate([chunks(x[:, :4]), chunks(x[:, 4:])], axis=1)
    assert got.shape == (3, 10, 5) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, y)


@pytest.mark.parametrize("cell", list(CELLS))
def test_reset_some_rows(cell, rng):
    m = _module(cell, np.float64, 2)
    x = rng.standard_normal((8, 4, 6))
    s = m.stream(4)
    s(x[:4])
    s.reset(rows=[1, 3])
    y = s(x[4:])
    fresh, _ = _whole(m, x[4:])  # rows 1 and 3 start again from zero
    np.testing.assert_array_equal(y[:, [1, 3]], fresh[:, [1, 3]])
    whole, _ = _whole(m, x)  # rows 0 and 2 carried on
    np.testing.assert_array_equal(y[:, [0, 2]], whole[4:, [0, 2]])
    s.reset()
    np.testing.assert_array_equal(s(x[4:]), fresh)
    with pytest.raises(ValueError, match="rows"):
        s.reset(rows=[4])


@pytest.mark.parametrize("cell", list(CELLS))
def test_state_round_trip_and_copy(cell, rng):
    m = _module(cell, np.float32, 2)
    x = rng.standard_normal((9, 2, 6)).astype(np.float32)
    whole, _ = _whole(m, x)
    s = m.stream(2)
    s(x[:5])
    saved = s.state
    first = s(x[5:])
    np.testing.assert_array_equal(first, whole[5:])
    s.state = saved  # back to after step 5
    np.testing.assert_array_equal(s(x[5:]), first)
    copy = s.state
    for a in copy if n_states(cell) == 2 else (copy,):
        a[...] = 7  # a copy: the stream's state is unchanged
    assert not np.any(np.asarray(s.state if n_states(cell) == 1 else s.state[0]) == 7)
    other = m.stream(2)
    other.state = saved
    np.testing.assert_array_equal(other(x[5:]), first)


def test_state_bad_shapes_name_the_argument():
    lstm = _module("lstm", np.float32, 2).stream(3)
    h, c = lstm.state
    with pytest.raises(ValueError, match=r"h: expected shape \(num_layers, B, H\) = \(2, 3, 5\)"):
        lstm.state = (h[:1], c)
    with pytest.raises(ValueError, match=r"c: expected shape"):
        lstm.state = (h, c[:, :2])
    with pytest.raises(TypeError, match="state"):
        lstm.state = h
    with pytest.raises(TypeError, match="h: expected dtype float32"):
        lstm.state = (h.astype(np.float64), c)
    gru = _module("gru", np.float32).stream(3)
    with pytest.raises(ValueError, match=r"h: expected shape \(num_layers, B, H\) = \(1, 3, 5\)"):
        gru.state = np.zeros((1, 2, 5), np.float32)


def test_bad_chunks_refused():
    s = _module("gru", np.float32).stream(2)
    with pytest.raises(ValueError, match=r"x: expected shape \(T_chunk, B, I\)"):
        s(np.zeros((3, 1, 6), np.float32))
    with pytest.raises(ValueError, match=r"x: expected shape \(T_chunk, B, I\)"):
        s(np.zeros((0, 2, 6), np.float32))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, I\)"):
        s(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="x: expected 3 dimensions"):
        s(np.zeros(6, np.float32))
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        s(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="batch"):
        _module("gru", np.float32).stream(0)


@pytest.mark.parametrize("cell", list(CELLS))
def test_bidirectional_refused(cell):
    m = _module(cell, np.float32, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional module cannot stream"):
        m.stream(1)


def test_stream_is_exported_and_inference_only(rng):
    m = _module("lstm", np.float32, 2, dropout=0.5)  # training mode with dropout
    s = m.stream(1)
    assert isinstance(s, nn.Stream)
    x = rng.standard_normal((6, 1, 6)).astype(np.float32)
    y, _ = _whole(m, x)  # eval: no dropout
    np.testing.assert_array_equal(s(x), y)
    assert m._cache is None  # no workspace kept


@pytest.fixture
def small_batch_limit():
    """Lets a test lower the packed-kernel batch limit; restores it afterwards."""
    saved = _core._get_small_batch_limit()
    yield _core._set_small_batch_limit
    _core._set_small_batch_limit(saved)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_above_the_packed_batch_limit_bitwise(cell, dtype, small_batch_limit, rng):
    """Batches above the packed kernel's limit (per-step products on the BLAS) stream through
    one sequence call per chunk and layer: still bitwise the whole-sequence forward."""
    small_batch_limit(2)
    m = _module(cell, dtype, 2)
    x = rng.standard_normal((T, 4, 6)).astype(dtype)
    y, _ = _whole(m, x)
    s = m.stream(4)
    assert not isinstance(s._layers[0], type(m.stream(1)._layers[0]))  # the other path
    for chunk in (1, 3, 50):
        s.reset()
        np.testing.assert_array_equal(np.concatenate([s(x[t : t + chunk]) for t in range(0, T, chunk)]), y)


def test_weights_are_read_when_the_stream_is_made(rng):
    m = _module("lstm", np.float32)
    x = rng.standard_normal((4, 1, 6)).astype(np.float32)
    s = m.stream(1)
    want, _ = _whole(m, x)
    m.weight_ih_l0.data[...] = 0  # not seen by the stream made before
    np.testing.assert_array_equal(s(x), want)
