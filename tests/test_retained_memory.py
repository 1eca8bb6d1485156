"""Memory kept after calls return: bounded, reported by rnnkit.memory_stats(), and given
back by rnnkit.empty_cache().

Each scenario runs in a fresh child process and reads its resident set (VmRSS) after a warm-up
(the baseline), after the calls with every array deleted, and after empty_cache(). Without
empty_cache() what stays is the block cache (at most ``cache_limit``) and the scratch pool (at
most ``scratch_limit``); after it, at most SLACK above the baseline (the allocator's own free
lists, code pages touched on the way). Scratch larger than the pool's limit, e.g. a long
inference sequence's input projection, is freed when its call returns.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rnnkit

MiB = 2**20
SLACK = 64 * MiB

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc/self/status"),
    pytest.mark.skipif(
        bool(os.environ.get("RNNKIT_SANITIZED")), reason="ASan's quarantine holds freed memory"
    ),
]

CHILD = r"""
import json, sys, threading
import numpy as np
import rnnkit

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

scenario = sys.argv[1]
rng = np.random.default_rng(0)
T, B, I, H = 1000, 64, 16, 256
W_ih = (0.1 * rng.standard_normal((4 * H, I))).astype(np.float32)
W_hh = (0.05 * rng.standard_normal((4 * H, H))).astype(np.float32)
x = rng.standard_normal((T, B, I)).astype(np.float32)

def inference():  # gx scratch T*B*4*H = 250 MiB, y 62.5 MiB
    y, _, ws = rnnkit.lstm_forward(x, None, None, W_ih, W_hh, None, None, training=False)
    assert ws is None and np.isfinite(y).all()

def training_step(t):
    y, _, ws = rnnkit.lstm_forward(x[:t], None, None, W_ih, W_hh, None, None)
    g = rnnkit.lstm_backward(y, None, None, ws)
    assert np.isfinite(g.dW_hh).all()

rnnkit.lstm_forward(x[:2, :2], None, None, W_ih, W_hh, None, None)  # warm-up: pools, BLAS, code
base = rss()
if scenario == "inference":
    inference()
elif scenario == "threads":
    threads = [threading.Thread(target=inference) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
else:  # "lengths": 60 different sequence lengths
    for t in range(100, 400, 5):
        training_step(t)
stats = rnnkit.memory_stats()
after = rss()
rnnkit.empty_cache()
emptied = rss()
print(json.dumps(dict(base=base, after=after, emptied=emptied, stats=stats, y=T * B * H * 4)))
"""


def run(scenario):
    r = subprocess.run([sys.executable, "-c", CHILD, scenario], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("scenario", ["inference", "threads", "lengths"])
def test_retained_memory_is_bounded_and_released(scenario):
    m = run(scenario)
    kept, left = m["after"] - m["base"], m["emptied"] - m["base"]
    s = m["stats"]
    what = f"{scenario}: {kept / MiB:.0f} MiB kept, {left / MiB:.0f} MiB after empty_cache(), stats {s}"
    assert s["cached_bytes"] <= s["cache_limit"] and s["scratch_bytes"] <= s["scratch_limit"], what
    # what stays is what memory_stats() reports, within the slack
    assert kept <= s["cached_bytes"] + s["scratch_bytes"] + SLACK, what
    assert kept <= s["cache_limit"] + s["scratch_limit"] + SLACK, what
    assert left <= SLACK, what
    if scenario != "lengths":
        # training=False keeps no workspace: only the deleted outputs' blocks (y, one per call)
        # are cached; the 250 MiB of scratch of each call went back to the system
        calls = 4 if scenario == "threads" else 1
        assert kept <= calls * m["y"] + SLACK, what


def test_memory_stats_and_cache_limit():
    old = rnnkit.memory_stats()["cache_limit"]
    try:
        x = np.ones((50, 64, 64), np.float32)  # y: 50*64*64*4 = 800 KiB, below the 1 MiB blocks
        W = np.full((256, 64), 0.01, np.float32)
        rnnkit.lstm_forward(np.ones((100, 64, 64), np.float32), None, None, W, W, None, None)
        assert rnnkit.memory_stats()["cached_bytes"] > 0  # y, gates, ... (1.6 MiB each or more)
        rnnkit.set_cache_limit(0)
        assert rnnkit.memory_stats()["cached_bytes"] == 0 and rnnkit.memory_stats()["cache_limit"] == 0
        rnnkit.lstm_forward(x, None, None, W, W, None, None)
        assert rnnkit.memory_stats()["cached_bytes"] == 0
        rnnkit.set_cache_limit(old)
        rnnkit.empty_cache()
        assert rnnkit.memory_stats()["cached_bytes"] == rnnkit.memory_stats()["scratch_bytes"] == 0
        with pytest.raises(ValueError, match=r"^nbytes: expected an int >= 0, got -1"):
            rnnkit.set_cache_limit(-1)
        with pytest.raises(TypeError, match=r"^nbytes: expected an int, got 1.5"):
            rnnkit.set_cache_limit(1.5)
    finally:
        rnnkit.set_cache_limit(old)


def test_the_pool_keeps_the_scratch_used_last():
    """A call whose scratch fits the pool's limit finds it pooled next time, even after calls
    of other sizes filled the pool: the least recently pooled buffers make room (keeping them
    instead re-mapped and re-faulted the newer call's scratch on every call)."""
    rng = np.random.default_rng(0)
    H, B = 128, 32

    def inference(T):  # the input projection's scratch: T*B*4*H float32
        x = rng.standard_normal((T, B, H)).astype(np.float32)
        W = (0.1 * rng.standard_normal((4 * H, H))).astype(np.float32)
        rnnkit.lstm_forward(x, None, None, W, W, None, None, training=False)
        return T * B * 4 * H * 4

    rnnkit.empty_cache()
    try:
        first = inference(640)  # 40 MiB
        assert rnnkit.memory_stats()["scratch_bytes"] >= first
        second = inference(800)  # 50 MiB: both do not fit the 64 MiB pool
        assert first + second > rnnkit.memory_stats()["scratch_limit"] // 2
        assert rnnkit.memory_stats()["scratch_bytes"] >= second
    finally:
        rnnkit.empty_cache()
