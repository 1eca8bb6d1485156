#!/usr/bin/env python
"""Peak memory of one training step (forward + backward), rnnkit against torch.

    python bench/bench_memory.py [--shape T,B,H] [--cells lstm,gru,rnn]

Each measurement runs in a fresh process: it imports the library, makes the inputs and weights,
records its resident set size (RSS), runs one float32 training step and reports how far the
peak RSS (VmHWM) rose above that point. The step's inputs and weights are not counted, its
outputs, saved workspace and gradients are. A tiny step runs first, so both libraries' one-time
costs (thread pools, code pages) are paid before the measurement starts.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
lib, cell, T_full, B_full, H_full = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
def make(T, B, H):
    global x, dy, W
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    shapes = [(G * H, H), (G * H, H), (G * H,), (G * H,)]
    W = [(rng.uniform(-1, 1, s) / np.sqrt(H)).astype(np.float32) for s in shapes]
if lib == "rnnkit":
    import rnnkit
    rnnkit.set_num_threads(1)
    def setup(): pass
    def step():
        if cell == "lstm":
            y, _, ws = rnnkit.lstm_forward(x, None, None, *W)
            return rnnkit.lstm_backward(dy, None, None, ws)
        y, _, ws = getattr(rnnkit, cell + "_forward")(x, None, *W)
        return getattr(rnnkit, cell + "_backward")(dy, None, ws)
else:
    import torch
    torch.set_num_threads(1)
    def setup():
        global mod, xt, dyt
        H = x.shape[2]
        mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](H, H)
        with torch.no_grad():
            for p, w in zip(mod.parameters(), W):
                p.copy_(torch.from_numpy(w))
        xt, dyt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)
    def step():
        out, _ = mod(xt)
        out.backward(dyt)
        return xt.grad
def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
make(2, 2, 8); setup(); step()  # one-time costs
make(T_full, B_full, H_full); setup()
import gc; gc.collect()
base = rss_kib()
# reset the peak counter so only the measured step counts (Linux >= 4.0: write 5 to clear_refs)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
step()
with open("/proc/self/status") as f:
    peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
print(json.dumps({"peak_mib": (peak - base) / 1024}))
"""


def measure(lib, cell, shape):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, lib, cell, *map(str, shape)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="100,64,512", help="T,B,H (I = H)")
    ap.add_argument("--cells", default="rnn,lstm,gru")
    args = ap.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    print(f"peak memory of one float32 training step above the inputs, T,B,I=H = {shape}")
    print(f"{'cell':6s} {'rnnkit MiB':>11s} {'torch MiB':>10s} {'ratio':>6s}")
    for cell in args.cells.split(","):
        ours = measure("rnnkit", cell, shape)
        try:
            theirs = measure("torch", cell, shape)
        except subprocess.CalledProcessError:
            theirs = float("nan")
        print(f"{cell:6s} {ours:11.1f} {theirs:10.1f} {ours / theirs if theirs else float('nan'):6.2f}")


if __name__ == "__main__":
    main()
