"""Memory: allocation limits and leaks.

* Overflowing sizes are ValueError and unallocatable ones MemoryError, decided before any
  allocation (so nothing is ever touched).
* Resident memory does not grow over many forward+backward calls (and error paths). The
  sanitizer run (tools/sanitize.sh) sets RNNKIT_SANITIZED=1, which skips this test: ASan's
  quarantine grows the RSS by design.
"""

import os

import numpy as np
import pytest

import rnnkit
from conftest import CELLS, DTYPES, random_case, run_case
from error_cases import huge_lstm_projection, tampered_workspace
from rnnkit import _core, nn

SANITIZED = bool(os.environ.get("RNNKIT_SANITIZED"))


def test_bad_alloc_in_the_compiled_module_is_memory_error():
    """Bypassing the Python checks, the compiled module's own allocation failure (4 PiB: beyond
    any address space, so nothing is ever touched) surfaces as MemoryError."""
    with pytest.raises(MemoryError):
        huge_lstm_projection(2**16, private=True)


def test_size_checks_come_before_allocation():
    """The 64-bit overflow case is rejected by arithmetic on Python ints: a float32 and a
    float64 call both fail the same way, and fast."""
    for dtype in DTYPES:
        with pytest.raises(ValueError, match=r"more than a 64-bit size can hold"):
            huge_lstm_projection(2**29 - 1, dtype=dtype)
    with pytest.raises(ValueError, match=r"^x: T\*B = 2147483648"):
        rnnkit.gru_forward(
            np.empty((2**31, 1, 0), np.float32),
            None,
            np.empty((3, 0), np.float32),
            np.zeros((3, 1), np.float32),
            None,
            None,
        )


def test_nn_module_size_checks():
    with pytest.raises(ValueError, match=r"^input_size: input_size = 4294967296 exceeds"):
        nn.RNN(2**32, 3)
    with pytest.raises(MemoryError, match=r"^LSTM: the parameters"):
        nn.LSTM(2**20, 2**20)


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
    cases = [
        (cell, random_case(cell, 10, 4, 16, 48, np.float32 if k % 2 else np.float64, rng, lengths="random"))
        for k, cell in enumerate(CELLS)
    ]
    cases.append(("lstm", random_case("lstm", 10, 16, 16, 48, np.float64, rng, lengths="random")))
    logits = rng.standard_normal((320, 40))
    t = rng.integers(0, 40, size=320)
    module = nn.GRU(16, 32, seed=0)
    xm = rng.standard_normal((10, 4, 16)).astype(np.float32)
    bad_ws = tampered_workspace()

    def round_():
        for cell, case in cases:
            run_case(rnnkit, cell, case, reverse=True)
        rnnkit.softmax_cross_entropy(logits, t)
        out, _ = module(xm)
        module.backward(out)
        for call in (
            lambda: _core.lstm_forward(
                np.zeros((3, 2, 4)),
                None,
                None,
                np.zeros((20, 4)),
                np.zeros((21, 5)),
                None,
                None,
                None,
                None,
                False,
                True,
            ),
            lambda: rnnkit.lstm_backward(None, None, None, bad_ws),
            lambda: _core.softmax_cross_entropy(logits, t + 100, -100, 1.0),
        ):
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
