"""Command line: ``python -m rnnkit demo NAME [args]``, ``python -m rnnkit bench [args]`` and
``python -m rnnkit convert SOURCE TARGET``.

``demo adding [--quick] [--out DIR] ...`` trains vanilla RNN, LSTM and GRU on the adding
problem (see :mod:`rnnkit.demos.adding`); ``bench [args]`` runs ``rnnkit.bench.main(args)``;
``convert model.onnx out.npz`` (or ``in.npz model.onnx``) runs :func:`rnnkit.onnx.convert`.
"""

from __future__ import annotations

import importlib
import sys

from . import onnx as onnx_interop
from .demos import DEMOS

USAGE = """usage: python -m rnnkit <command> [args]

commands:
  demo NAME [args]   run a demo; NAME one of: {demos}  (demo NAME --help for its options)
  bench [args]       run the kernel benchmark (rnnkit.bench)
  convert SRC DST    model.onnx -> out.npz or in.npz -> model.onnx (rnnkit.onnx; needs onnx),
                     printing each layer and the max difference against onnxruntime
"""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = USAGE.format(demos=", ".join(sorted(DEMOS)))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage, end="")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        if not rest or rest[0] in ("-h", "--help"):
            print(usage, end="")
            return 0 if rest else 2
        name = rest[0]
        if name not in DEMOS:
            print(
                f"rnnkit demo: unknown demo {name!r}; available: {', '.join(sorted(DEMOS))}", file=sys.stderr
            )
            return 2
        importlib.import_module(DEMOS[name]).main(rest[1:])
        return 0
    if cmd == "bench":
        try:
            bench = importlib.import_module("rnnkit.bench")
        except ModuleNotFoundError as exc:
            if exc.name not in ("rnnkit.bench",):
                raise
            print(
                "rnnkit bench: bench module not available (rnnkit.bench is not installed in "
                "this version; run bench/bench_rnn.py from a source checkout)",
                file=sys.stderr,
            )
            return 2
        result = bench.main(rest, command_line=True)
        return result if isinstance(result, int) else 0
    if cmd == "convert":
        if len(rest) != 2 or rest[0] in ("-h", "--help"):
            print("usage: python -m rnnkit convert model.onnx out.npz | in.npz model.onnx", file=sys.stderr)
            return 0 if rest[:1] in (["-h"], ["--help"]) else 2
        try:
            lines = onnx_interop.convert(rest[0], rest[1])
        except ModuleNotFoundError as exc:
            if exc.name != "onnx":
                raise
            print("rnnkit convert: needs the onnx package (pip install 'rnnkit[onnx]')", file=sys.stderr)
            return 2
        except (ValueError, TypeError, OSError) as exc:
            print(f"rnnkit convert: {exc}", file=sys.stderr)
            return 1
        print("\n".join(lines))
        return 0
    print(f"rnnkit: unknown command {cmd!r}\n\n{usage}", file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    sys.exit(main())
