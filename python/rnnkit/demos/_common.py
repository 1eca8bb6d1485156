"""What the demos share: their run options, the merge of options into a config, and the
thread setting they run under."""

from __future__ import annotations

from threadpoolctl import threadpool_limits

from .. import get_num_threads, set_num_threads


def add_run_args(p, threads_help="BLAS threads of rnnkit and NumPy (default 1)"):
    """The options every demo has: --threads, --seed, --dtype, --no-plot, --no-progress."""
    p.add_argument("--threads", type=int, default=1, help=threads_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--no-plot", action="store_true", dest="no_plot")
    p.add_argument("--no-progress", action="store_true", dest="no_progress")


def config(args, quick, full):
    """The demo's settings: its QUICK or FULL defaults, overridden by the options given."""
    cfg = dict(quick if args.quick else full)
    for k in cfg:
        val = getattr(args, k, None)
        if val is not None:
            cfg[k] = val
    return cfg


class Threads:
    """rnnkit's BLAS threads, and NumPy's (through threadpoolctl): the demo models are small,
    and on a shared machine oversubscribed BLAS threads cost far more than they gain."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.before = get_num_threads()
        set_num_threads(self.n)
        self.limits = threadpool_limits(self.n)

    def __exit__(self, *exc):
        set_num_threads(self.before)
        self.limits.restore_original_limits()
