"""The benchmark ``python -m rnnkit bench`` runs: rnnkit's kernels against the NumPy oracle or
torch (:mod:`.kernels`). It lives in the package so that users of the wheel, who have no
checkout, can run it; ``bench/bench_rnn.py`` in a checkout runs the same.
"""

from .kernels import (
    CELLS,
    MODES,
    SHAPES,
    Problem,
    denormal_rows,
    format_row,
    gemm_flops,
    main,
    markdown_table,
    roofline_gflops,
    run_grid,
    step_kernel,
    validate,
)

__all__ = [
    "main",
    "CELLS",
    "MODES",
    "SHAPES",
    "Problem",
    "format_row",
    "markdown_table",
    "gemm_flops",
    "roofline_gflops",
    "run_grid",
    "validate",
    "step_kernel",
    "denormal_rows",
]
