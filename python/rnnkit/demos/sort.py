"""``python -m rnnkit demo sort``: the sequence-to-sequence demo on the sort task, with and
without attention (see :mod:`rnnkit.demos.seq2seq` for what it does and its options)."""

from __future__ import annotations

import sys

from .seq2seq import main as run


def main(argv=None):
    return run(["sort", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    main()
