"""Ctrl-C stops a long call: KeyboardInterrupt arrives within a fraction of a second of SIGINT
(the kernels poll for pending signals between time steps, cpp/interrupt.hpp), not when a
several-second call ends; the interrupted call returns nothing, and later calls are correct.

Each case runs in a subprocess (a signal must go to the main thread of a process of its own):
a call that takes about 5 s here starts in the main thread, a timer thread sends SIGINT after
0.5 s, and the subprocess reports how long KeyboardInterrupt took to arrive. The bound (1.5 s)
is a correctness check, not a speed measurement: without polling the delay is the rest of the
call, seconds.
"""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    import numpy as np
    import rnnkit
    import rnnkit.nn
    from rnnkit import reference as ref
    from rnnkit.ops import attention as att

    threads, cases = int(sys.argv[1]), sys.argv[2].split(",")
    rnnkit._core._set_interrupt_polling(sys.argv[3] == "poll")
    rnnkit.set_num_threads(threads)
    rnnkit._core._set_team_min_work(0)  # every step on all threads: the team must stop together
    rng = np.random.default_rng(0)
    H = 2048  # one step takes 0.4-4 ms here; T makes each call about 5 s (4 s for backward)
    GATES = {"rnn": 1, "lstm": 4, "gru": 3}
    STEPS = {"rnn": 12000, "lstm": 1250, "gru": 2200}

    def args(cell, T, B, I, H, dtype):
        G = GATES[cell]
        shapes = [(G * H, I), (G * H, H), (G * H,), (G * H,)]
        W = [(0.02 * rng.standard_normal(s)).astype(dtype) for s in shapes]
        x = rng.standard_normal((T, B, I)).astype(dtype)
        return x, [None] * (2 if cell == "lstm" else 1), W

    def interrupted(call, exc=KeyboardInterrupt):
        sent = []

        def ctrl_c():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Timer(0.5, ctrl_c)
        timer.start()
        try:
            call()
        except exc as e:
            return time.perf_counter() - sent[0], f"{type(e).__name__}: {e}"
        timer.join()
        time.sleep(1)  # the call ended first: take the signal here, outside the call
        return None, None

    def small_case_matches_oracle(cell):
        x, states, W = args(cell, 7, 3, 5, 6, np.float64)
        got = getattr(rnnkit, cell + "_forward")(x, *states, *W)
        want = getattr(ref, cell + "_forward")(x, *states, *W)
        dy = rng.standard_normal(want[0].shape)
        g_got = getattr(rnnkit, cell + "_backward")(dy, *states, got[2])
        g_want = getattr(ref, cell + "_backward")(dy, *states, want[2])
        pairs = [(got[0], want[0])] + list(zip(g_got, g_want))
        return all(a is None or np.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in pairs)

    for case in cases:
        kind, cell = case.split(":")
        if kind in ("forward", "handler"):
            x, states, W = args(cell, STEPS[cell], 1, 8, H, np.float32)
            run = lambda: getattr(rnnkit, cell + "_forward")(x, *states, *W, training=False)
            if kind == "handler":  # the SIGINT handler itself calls rnnkit: refused, not run
                signal.signal(signal.SIGINT, lambda *_: small_case_matches_oracle(cell))
            delay, raised = interrupted(run, RuntimeError if kind == "handler" else KeyboardInterrupt)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        elif kind == "stream":  # a long chunk of a stream (cpp/stream.hpp polls per step too)
            x, _, _ = args(cell, STEPS[cell], 1, 8, H, np.float32)
            stream = rnnkit.nn.module_class(cell)(8, H, seed=0).stream(1)
            delay, raised = interrupted(lambda: stream(x))
        elif kind == "backward":
            x, states, W = args(cell, STEPS[cell] * 4 // 5, 1, 8, H, np.float32)
            y, _, ws = getattr(rnnkit, cell + "_forward")(x, *states, *W)
            delay, raised = interrupted(lambda: getattr(rnnkit, cell + "_backward")(y, *states, ws))
        else:  # additive attention, forward: 700 batch rows of 200 x 200 scores, A = 64
            q, k = rng.standard_normal((700, 200, 16)), rng.standard_normal((700, 200, 16))
            Wq, Wk, v = rng.standard_normal((64, 16)), rng.standard_normal((64, 16)), rng.standard_normal(64)
            delay, raised = interrupted(lambda: att.additive_attention_forward(q, k, k, Wq, Wk, v))
            cell = "lstm"
        report = {"case": case, "delay": delay, "raised": raised, "after": small_case_matches_oracle(cell)}
        print(json.dumps(report), flush=True)
    """
)


@pytest.mark.parametrize(
    "threads, cases",
    [
        (1, "forward:rnn,forward:lstm,forward:gru,attention:additive,handler:lstm,stream:gru"),
        (2, "forward:gru,backward:lstm"),
    ],
)
def test_ctrl_c_interrupts_a_long_call_within_a_second(threads, cases):
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threads), cases, "poll"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    reports = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rep["case"] for rep in reports] == cases.split(",")
    for rep in reports:
        assert rep["delay"] is not None, f"{rep['case']}: the call ended before the signal (too short here)"
        assert rep["delay"] < 1.5, f"{rep['case']}: KeyboardInterrupt {rep['delay']:.2f} s after SIGINT"
        assert rep["after"], f"{rep['case']}: a call after the interrupted one disagrees with the oracle"
        if rep["case"].startswith("handler"):  # a handler calling rnnkit gets a clear error
            assert rep["raised"].startswith("RuntimeError: rnnkit was called from a signal handler")
