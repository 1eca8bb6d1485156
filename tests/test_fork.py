"""rnnkit in a forked child (multiprocessing's default start method on Linux): the child has
only the forking thread, so rnnkit's thread team must start afresh there and no rnnkit lock
may be inherited locked (cpp/fork_safety.hpp). The child must compute what the oracle
computes, at 1 and 2 threads.

Everything runs in a subprocess (the test process itself never forks with threads running),
with timeouts, so that a hang fails the test instead of blocking it. Not covered, because it
cannot be fixed here: a fork while another thread is inside a multi-threaded BLAS product hangs
in OpenBLAS's own fork handling (as with NumPy); the README says to use "spawn" or
"forkserver" then.
"""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")

SCRIPT = textwrap.dedent(
    """
    import os, sys, threading, time
    import numpy as np
    import rnnkit
    from rnnkit import _core, reference as ref

    mode, forks = sys.argv[1], int(sys.argv[2])
    rnnkit.set_num_threads(2)
    _core._set_team_min_work(0)  # every step on the team's 2 threads
    rng = np.random.default_rng(0)
    T, B, I, H = 6, 12, 20, 64
    x = rng.standard_normal((T, B, I))
    W = [0.2 * rng.standard_normal(s) for s in [(4 * H, I), (4 * H, H), (4 * H,), (4 * H,)]]
    dy = rng.standard_normal((T, B, H))

    def lstm(mod):
        y, _, ws = mod.lstm_forward(x, None, None, *W)
        return [y, *mod.lstm_backward(dy, None, None, ws)]

    want = lstm(ref)

    def matches_oracle():
        return all(np.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(lstm(rnnkit), want))

    assert matches_oracle()  # the parent has used its team (2 threads)

    stop, calls = threading.Event(), []
    if mode == "busy":
        # Another thread computes while the main thread forks: per-step products on the BLAS
        # (B > 128, each small enough to run on one BLAS thread, switching its thread count) and
        # on the team (B = 12), outputs from the block cache. No multi-threaded BLAS product:
        # OpenBLAS's own fork handler would hang on those (not rnnkit's to fix).
        big = rng.standard_normal((40, 200, I))

        def work():
            while not stop.is_set():
                rnnkit.lstm_forward(big, None, None, *W)
                calls.append(matches_oracle())

        worker = threading.Thread(target=work)
        worker.start()
        time.sleep(0.2)

    hangs = wrong = 0
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:  # the child: 1 and 2 threads, each against the oracle
            ok = True
            for n in (1, 2):
                rnnkit.set_num_threads(n)
                ok = ok and rnnkit.get_num_threads() == n and matches_oracle()
            os._exit(0 if ok else 1)
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                wrong += status != 0
                break
            if time.monotonic() > deadline:
                hangs += 1
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                break
            time.sleep(0.002)
    stop.set()
    if mode == "busy":
        worker.join(timeout=30)
        assert not worker.is_alive(), "the parent's computing thread hangs after fork"
        assert calls and all(calls), "the parent's computing thread computes wrong results after fork"
    assert matches_oracle()
    print(f"hangs={hangs} wrong={wrong}")
    """
)


def run(mode, forks):
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(forks)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_forked_child_computes_like_the_oracle_at_1_and_2_threads():
    """After the parent's team has run, with no other thread computing: fork does not hang and
    the child's results (its own team's) match the oracle."""
    assert run("idle", 3) == "hangs=0 wrong=0"


def test_fork_while_another_thread_computes():
    """Forks while another thread is inside rnnkit calls (holding, at times, the locks of the
    BLAS thread-count switch, the buffer pools and the block cache): no child hangs or
    computes wrongly, and the parent's computing thread goes on correctly. (Before the locks
    were held across fork, about one child in 15 hung here.)"""
    assert run("busy", 60) == "hangs=0 wrong=0"
