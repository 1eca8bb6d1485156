"""Failures in data-parallel training stop every rank with a clear error, not a hang.

Each case launches ``mpiexec -n 2`` on a small training script with a time limit: a bad
batch or a NaN loss on one rank, mismatched models or rnnkit versions at start-up, and an
exception outside any training step. Skips where mpi4py or mpiexec is absent.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.mpi

pytest.importorskip("mpi4py")
_BIN = pathlib.Path(sys.executable).parent / "mpiexec"
MPIEXEC = str(_BIN) if _BIN.exists() else shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("mpiexec not found (pip install mpich)", allow_module_level=True)

TIMEOUT = 60  # seconds: far above a run's few seconds; reaching it means a rank hung

SCRIPT = textwrap.dedent(
    """
    import sys

    import numpy as np

    import rnnkit.distributed as dist
    from rnnkit.distributed import data_parallel
    from rnnkit.models import SequenceRegressor
    from rnnkit.nn import MSELoss
    from rnnkit.train import SGD, fit

    case, out = sys.argv[1], sys.argv[2]
    comm = dist.init()
    H = 4
    if case == "shape" and comm.rank == 1:
        H = 5
    if case == "version" and comm.rank == 1:
        data_parallel._version = lambda: "0.0.0-other"
    if case == "outside" and comm.rank == 1:
        raise RuntimeError("rank one cannot build its model")

    def data(step):
        rng = np.random.default_rng(step)
        x, y = rng.standard_normal((5, 6, 2)), rng.standard_normal((6, 1))
        if case == "bad_input" and comm.rank == 1 and step == 2:
            x = x[..., :1]  # one input channel where the model takes two
        if case == "nan" and comm.rank == 0 and step == 1:
            y = np.full_like(y, np.nan)
        return x, y

    try:
        model = dist.DataParallel(SequenceRegressor("lstm", 2, H, 1, dtype=np.float64, seed=0), comm)
        fit(model, MSELoss(), SGD(model.parameters(), lr=0.1), data, steps=5, progress=False,
            raise_on_nan=True)
    except dist.DistributedError as exc:
        result = f"stopped: {type(exc).__name__}: {exc}"
    else:
        result = "finished"
    with open(f"{out}/rank{comm.rank}.txt", "w") as f:  # the launcher interleaves stdout
        f.write(result)
    sys.exit(0 if result == "finished" else 3)
    """
)


def _run(tmp_path, case):
    """(exit code, [what each rank wrote, or None], the launcher's output)."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(
            [MPIEXEC, "-n", "2", sys.executable, str(script), case, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{case}: the ranks did not stop within {TIMEOUT} s (a hang); output: {exc.stdout!r}")
    results = [tmp_path / f"rank{r}.txt" for r in (0, 1)]
    return (
        proc.returncode,
        [p.read_text() if p.exists() else None for p in results],
        proc.stdout + proc.stderr,
    )


@pytest.mark.parametrize(
    "case, expected",
    [
        ("bad_input", "rank 1 failed during the step (rank 1 raised ValueError: x: expected"),
        ("nan", "rank 0 failed during the step (rank 0 raised FloatingPointError: loss: expected a finite"),
        ("shape", "rank 1's model differs from rank 0's: parameter 'rnn.weight_ih_l0' (20, 2)"),
        ("version", "rank 1 runs rnnkit 0.0.0-other, rank 0 runs"),
    ],
)
def test_every_rank_stops_with_an_error_naming_the_failed_rank(tmp_path, case, expected):
    code, results, out = _run(tmp_path, case)
    assert code != 0, out
    for result in results:
        assert result is not None and result.startswith("stopped: "), out
        assert expected in result, result


def test_an_exception_outside_a_step_aborts_all_ranks(tmp_path):
    code, results, out = _run(tmp_path, "outside")
    assert code != 0, out
    assert "RuntimeError: rank one cannot build its model" in out
    assert "rank 1 raised RuntimeError outside a training step; aborting all 2 ranks" in out
    assert results == [None, None], out


def test_the_same_script_finishes_on_every_rank_without_a_failure(tmp_path):
    code, results, out = _run(tmp_path, "none")
    assert code == 0, out
    assert results == ["finished", "finished"], out
