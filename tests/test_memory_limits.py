"""Out of memory: a call either raises MemoryError or returns the right result, never crashes.

Each case runs in a child process (``subprocess.run([sys.executable, "-c", ...])``) that
imports rnnkit, makes its inputs, then limits its own address space (RLIMIT_AS, what
``ulimit -v`` sets) to its current size (VmSize) plus a step of headroom, and makes the call.
The limit is set after the import, relative to the child's size, because importing NumPy and
OpenBLAS under a very low limit already fails. At every step the child must exit normally: with
MemoryError (raised by the size check before any allocation, or by a failed allocation in
the compiled module), or with the result, which it then compares with the NumPy oracle (with
the limit lifted). A crash (SIGSEGV, SIGABRT, OpenBLAS's exit(1) "Memory allocation still failed
after 10 retries, giving up") fails the test.
"""

import functools
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_close
from rnnkit import _core
from rnnkit import reference as ref

TESTS = os.path.dirname(os.path.abspath(__file__))
MiB = 2**20

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_AS and /proc"),
    pytest.mark.skipif(
        bool(os.environ.get("RNNKIT_SANITIZED")), reason="ASan reserves terabytes of address space"
    ),
]

# The calls, shared by the child (under the limit) and the parent (the oracle, once per kind).
SETUP = r"""
import numpy as np
from conftest import random_case, run_case
rng = np.random.default_rng(0)
if kind == "lstm":  # the issue's realistic size: forward + backward, float32
    case = random_case("lstm", 64, 32, 256, 512, np.float32, rng)
    call = lambda mod: run_case(mod, "lstm", case)
elif kind == "attention":  # dot attention forward + backward, float64
    B, T, S, H = 2, 512, 4096, 16
    q, k, v = (rng.standard_normal(s) for s in ((B, T, H), (B, S, H), (B, S, H)))
    dctx = rng.standard_normal((B, T, H))
    def call(mod):
        ctx, w, cache = mod.attention.dot_attention_forward(q, k, v, scale=0.25)
        return [ctx, w, *mod.attention.dot_attention_backward(dctx, None, cache)]
else:  # "kernel": the compiled kernel alone, past the Python size check: its own bad_alloc
    B, T, S, H = 1, 2**12, 2**13, 1
    q, k, v = (rng.standard_normal(s) for s in ((B, T, H), (B, S, H), (B, S, H)))
    def call(mod):
        if mod.__name__ == "rnnkit":
            return list(mod._core.attention_dot_forward(q, k, v, None, 1.0))
        return list(mod.attention.dot_attention_forward(q, k, v, training=False)[:2])
"""

CHILD = r"""
import resource, sys
sys.path.insert(0, sys.argv[1])
kind, headroom, out = sys.argv[2], int(sys.argv[3]), sys.argv[4]
import numpy as np
import rnnkit
exec(sys.argv[5])

def vm_size():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

_, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (vm_size() + headroom, hard))
try:
    got = call(rnnkit)
except MemoryError as e:
    print("MemoryError:", e)
    sys.exit(0)
resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
np.savez(out, *[np.zeros(0) if a is None else a for a in got])
print("result")
"""


@functools.cache
def oracle(kind):
    scope = {"kind": kind}
    exec(SETUP, scope)
    return scope["call"](ref)


def run_child(kind, headroom, tmp_path):
    out = tmp_path / f"{kind}-{headroom}.npz"
    r = subprocess.run(
        [sys.executable, "-c", CHILD, TESTS, kind, str(headroom), str(out), SETUP],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, (
        f"{kind} with {headroom / MiB:.0f} MiB of headroom: exit status {r.returncode}\n"
        f"stdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-2000:]}"
    )
    outcome = r.stdout.strip().splitlines()[-1]
    if outcome == "result":  # compared with the NumPy oracle
        with np.load(out) as got:
            for k, want in enumerate(oracle(kind)):
                a = got[f"arr_{k}"]
                assert_close(None if want is None else a, want, err_msg=f"{kind}, result {k}")
    return outcome


# The steps include the windows where the code before the full count crashed: the LSTM with
# RuntimeError at 30 MiB (a thread that could not start) and OpenBLAS's exit(1) at 70-90 MiB;
# attention with SIGSEGV at 40 MiB, exit(1) at 50-80 MiB and SIGABRT at 90 MiB.
@pytest.mark.parametrize(
    "kind,steps_mib",
    [
        # forward then backward count 72 and 62 MiB; the forward's outputs stay during backward
        ("lstm", [0, 30, 70, 80, 90, 150]),
        # w and the score scratch are 32 MiB each, the backward's two scratch arrays 64 MiB
        ("attention", [0, 40, 50, 70, 90, 200]),
        # 256 MiB of weights fit, the kernel's 256 MiB of score scratch then does not
        ("kernel", [300]),
    ],
)
def test_memory_error_or_correct_result_at_every_limit(kind, steps_mib, tmp_path):
    outcomes = [run_child(kind, mib * MiB, tmp_path) for mib in steps_mib]
    assert all(o == "result" or o.startswith("MemoryError") for o in outcomes), outcomes
    if kind == "kernel":  # std::bad_alloc inside the compiled module
        assert outcomes == ["MemoryError: std::bad_alloc"], outcomes
    else:  # the steps span the call: the smallest is refused, the largest runs
        assert outcomes[0].startswith("MemoryError") and outcomes[-1] == "result", outcomes


PEAK_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import rnnkit
from rnnkit import _core
from conftest import CELLS, random_case, run_case
cell, T, B, I, H = sys.argv[2], *map(int, sys.argv[3:7])
bf16 = sys.argv[7] == "bf16"
family, options = CELLS[cell]

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

case = random_case(cell, T, B, I, H, np.float32, np.random.default_rng(0), lengths="random")
reset_after = options.get("reset_after", True)
forward = _core._sequence_terms(family, reset_after, False, False, T, B, I, H, H, True, True, False,
                                False, False, False, bf16=bf16)
backward = _core._sequence_terms(family, reset_after, True, False, T, B, I, H, H, True, True, False,
                                 True, True, True, bf16=bf16)
counted = sum(c * i for _, c, i in forward + backward)
before = status("VmSize:")
run_case(rnnkit, cell, case, precision=sys.argv[7])
print(status("VmPeak:") - before, counted)
"""


BF16 = _core._cpu_info()["bf16_kernel"] != "none"


@pytest.mark.parametrize(
    "cell,T,B,I,H,precision",
    [
        ("lstm", 64, 32, 256, 512, "float32"),
        ("gru", 100, 64, 512, 512, "float32"),
        ("gru_before", 50, 200, 64, 256, "float32"),
        ("rnn_tanh", 200, 8, 64, 256, "float32"),
        *[
            pytest.param(
                *case, "bf16", marks=pytest.mark.skipif(not BF16, reason="the CPU lacks AVX512-BF16")
            )
            for case in [("lstm", 64, 32, 256, 512), ("gru_before", 50, 200, 64, 256)]
        ],
    ],
)
def test_counted_bytes_cover_the_peak_address_space(cell, T, B, I, H, precision):
    """In a fresh process, a forward + backward (the forward's workspace alive during the
    backward) grows the peak address space (VmPeak, which counts the BLAS buffer and every
    malloc) by no more than the two calls' counted bytes: the size check does not under-count.
    (The old count, y and the gate buffer only, was 20 MiB for the LSTM here; the peak grows
    by 96 MiB.)"""
    r = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, TESTS, cell, str(T), str(B), str(I), str(H), precision],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    grown, counted = map(int, r.stdout.split())
    assert 0 < grown <= counted, f"peak grew by {grown / MiB:.1f} MiB, counted {counted / MiB:.1f} MiB"
