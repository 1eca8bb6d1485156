#!/usr/bin/env python
"""An imported ONNX model in rnnkit against onnxruntime on the same file: inference time.

    python bench/bench_onnx.py [--threads 1,2]

For LSTM and GRU at (T, B, I=H) = (50, 1, 128) and (100, 16, 256): a torch.nn module is
exported with torch.onnx.export (the TorchScript exporter), the file is loaded by
``rnnkit.onnx.load`` and by an onnxruntime session, and one whole-sequence inference call of
each is timed, alternating, median of several samples, at each thread count (rnnkit's threads
and onnxruntime's intra-op threads). Needs torch, onnx and onnxruntime. Float32.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import rnnkit


def timed(fn, repeats=15):
    fn()
    samples = []
    for _ in range(repeats):
        inner = 1
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter() - t0
        inner = max(1, int(0.02 / max(t1, 1e-7)))
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return samples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma list (default 1,2)")
    args = ap.parse_args(argv)
    import onnxruntime as ort
    import torch

    threads = [int(t) for t in args.threads.split(",")]
    print(f"# rnnkit {rnnkit.__version__} vs onnxruntime {ort.__version__}, torch {torch.__version__}")
    print(f"CPU: {rnnkit._core._cpu_info()['model_name']}; command: {' '.join(sys.orig_argv)}")
    print("| model | (T,B,I=H) | threads | rnnkit ms | onnxruntime ms | ratio |")
    print("|---|---|--:|--:|--:|--:|")
    rng = np.random.default_rng(0)
    for name, cls in (("LSTM", torch.nn.LSTM), ("GRU", torch.nn.GRU)):
        for T, B, H in ((50, 1, 128), (100, 16, 256)):
            torch.manual_seed(0)
            m = cls(H, H).eval()
            x = rng.standard_normal((T, B, H)).astype(np.float32)
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "model.onnx")
                torch.onnx.export(m, (torch.from_numpy(x),), path, input_names=["x"], dynamo=False)
                ours = rnnkit.onnx.load(path).eval()
                sessions = {}
                for n in threads:
                    so = ort.SessionOptions()
                    so.intra_op_num_threads = n
                    so.inter_op_num_threads = 1
                    sessions[n] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            want = sessions[threads[0]].run(None, {"x": x})[0]
            got = ours(x)[0]
            assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), "outputs differ"
            for n in threads:
                rnnkit.set_num_threads(n)
                sess = sessions[n]
                ts_r, ts_o = [], []
                for _ in range(3):  # alternate the contenders
                    ts_r += timed(lambda m=ours, x=x: m(x), 5)
                    ts_o += timed(lambda s=sess, x=x: s.run(None, {"x": x}), 5)
                r, o = statistics.median(ts_r) * 1e3, statistics.median(ts_o) * 1e3
                print(f"| {name} | ({T},{B},{H}) | {n} | {r:.3f} | {o:.3f} | {r / o:.2f} |")


if __name__ == "__main__":
    main()
