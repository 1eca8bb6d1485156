"""A workspace and the caller's arrays: ``lengths`` is copied, so reusing it for the next batch
changes nothing; an input the workspace references (x, h0, the weights) changed in place before
backward makes backward raise ValueError naming it, instead of returning the gradients of
arrays that no longer exist."""

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, assert_close, random_case, seq_backward, seq_forward
from rnnkit import nn, reference
from rnnkit.train import SGD


def _copy(case):
    return {
        k: (tuple(a.copy() for a in v) if isinstance(v, tuple) else None if v is None else v.copy())
        for k, v in case.items()
    }


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_reused_for_the_next_batch(cell, rng):
    case = random_case(cell, 6, 4, 3, 5, np.float64, rng, lengths="random")
    want = _copy(case)
    y, finals, ws = seq_forward(
        rnnkit, cell, case["x"], case["states"], case["params"], lengths=case["lengths"]
    )
    case["lengths"][:] = [1, 6, 2, 5]  # the caller's array, refilled for the next batch
    got = seq_backward(rnnkit, cell, case["dy"], case["d_finals"], ws)
    _, _, ref_ws = seq_forward(
        reference, cell, want["x"], want["states"], want["params"], lengths=want["lengths"]
    )
    expected = seq_backward(reference, cell, want["dy"], want["d_finals"], ref_ws)
    for g, e in zip(got, expected):
        assert_close(g, e)


# Which inputs a workspace references: x and the weights always; h0 only where backward rebuilds
# h_{t-1} from it (the vanilla RNN without lengths, whose saved gates are the states).
def _referenced(cell, lengths):
    names = ["x", "W_ih", "W_hh"]
    if CELLS[cell][0] == "rnn" and lengths is None:
        names.append("h0")
    return names


def _array(case, name):
    if name == "x":
        return case["x"]
    if name == "h0":
        return case["states"][0]
    return case["params"][{"W_ih": 0, "W_hh": 1}[name]]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [None, "random"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_changed_in_place_are_refused(cell, lengths, dtype, rng):
    for name in _referenced(cell, lengths):
        case = random_case(cell, 5, 3, 4, 6, dtype, rng, lengths=lengths)
        _, _, ws = seq_forward(
            rnnkit, cell, case["x"], case["states"], case["params"], lengths=case["lengths"]
        )
        _array(case, name)[...] *= 0.9  # e.g. an optimizer step before backward
        with pytest.raises(ValueError, match=rf"^workspace: {name} was modified in place after the forward"):
            seq_backward(rnnkit, cell, case["dy"], case["d_finals"], ws)


@pytest.mark.parametrize("cell", CELLS)
def test_inputs_backward_does_not_read_may_change(cell, rng):
    """Biases (and h0 where a copy is saved) are not read by backward: changing them after the
    forward is harmless, and the gradients are those of the forward's values."""
    case = random_case(cell, 5, 3, 4, 6, np.float64, rng, lengths="random")
    want = _copy(case)
    _, _, ws = seq_forward(rnnkit, cell, case["x"], case["states"], case["params"], lengths=case["lengths"])
    case["params"][2][...] += 1.0
    case["params"][3][...] += 1.0
    for s in case["states"]:
        s[...] += 1.0
    got = seq_backward(rnnkit, cell, case["dy"], case["d_finals"], ws)
    _, _, ref_ws = seq_forward(
        reference, cell, want["x"], want["states"], want["params"], lengths=want["lengths"]
    )
    for g, e in zip(got, seq_backward(reference, cell, want["dy"], want["d_finals"], ref_ws)):
        assert_close(g, e)


def test_projection_weight_changed_in_place(rng):
    x = rng.standard_normal((4, 2, 3))
    W_ih, W_hh, W_hr = rng.standard_normal((20, 3)), rng.standard_normal((20, 2)), rng.standard_normal((2, 5))
    _, _, ws = rnnkit.lstm_forward(x, None, None, W_ih, W_hh, None, None, W_hr=W_hr)
    W_hr[0, 0] += 1.0  # the first element is always among the sampled ones
    with pytest.raises(ValueError, match=r"^workspace: W_hr was modified in place"):
        rnnkit.lstm_backward(np.ones((4, 2, 2)), None, None, ws)


def test_module_optimizer_step_before_backward(rng):
    m = nn.LSTM(3, 4, seed=0, dtype=np.float64)
    out, _ = m(rng.standard_normal((5, 2, 3)))
    SGD(m.parameters(), lr=0.1).step()  # grads are zero, but the step writes the weights...
    m.weight_hh_l0.data[...] *= 1.01  # ...and this one changes them
    with pytest.raises(ValueError, match=r"^workspace: W_hh was modified in place"):
        m.backward(np.ones_like(out))


def test_step_tape_with_a_refilled_input_buffer(rng):
    m = nn.GRU(3, 4, seed=0, dtype=np.float64)
    buf = np.empty((2, 3))
    state = None
    for _ in range(3):
        buf[...] = rng.standard_normal((2, 3))  # a streaming input buffer, refilled in place
        out, state = m.step(buf, state)
    m.step_backward(np.ones_like(out))  # the last step read the buffer as it is now
    with pytest.raises(ValueError, match=r"^workspace: x was modified in place"):
        m.step_backward(np.ones_like(out))  # the step before read other values
