#!/usr/bin/env python
"""The kernel benchmark. It lives in the package (rnnkit/bench.py) so that an installed rnnkit
runs it too, as ``python -m rnnkit bench``; this file runs the same from a checkout:

    python bench/bench_rnn.py [--quick] [--vs numpy|torch] [--cells ...] [--threads 1,2] [--markdown]
"""

import sys

from rnnkit.bench import main

if __name__ == "__main__":
    sys.exit(main())
