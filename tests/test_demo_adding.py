"""The adding-problem demo end to end on tiny settings (``--quick``: T = 20, a few seconds):
LSTM and GRU must get far below the trivial predictor's MSE (1/6); results and plots are
written; the command line dispatches demos and reports a missing bench module."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from rnnkit.demos import adding


def test_adding_batch_statistics():
    x, y = adding.adding_batch(4000, 30, np.random.default_rng(0))
    assert x.shape == (30, 4000, 2) and y.shape == (4000, 1) and x.dtype == np.float32
    marks = x[:, :, 1]
    assert (marks.sum(0) == 2).all()
    assert (marks[:15].sum(0) == 1).all()  # one marker in each half
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * marks).sum(0), rtol=1e-6)
    # predicting the mean gives MSE = Var(U1 + U2) = 1/6
    assert abs(float(np.mean((y - 1.0) ** 2)) - adding.TRIVIAL_MSE) < 0.01


def test_quick_demo_learns(tmp_path, capsys):
    results = adding.main(["--quick", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert {r["cell"] for r in results} == {"lstm", "gru"}
    for r in results:
        first, last = r["curve"][0][1], r["final_test_mse"]
        assert first > 0.05  # untrained: near the trivial predictor
        assert last < 0.03 < adding.TRIVIAL_MSE / 5, r
        assert r["steps"] <= 800
    saved = json.loads((tmp_path / "adding_results.json").read_text())
    assert saved["meta"]["config"]["T"] == 20 and len(saved["grad_norms"]["lstm"]) == 20
    assert "test MSE" in out
    pytest.importorskip("matplotlib")
    assert (tmp_path / "adding_mse.png").stat().st_size > 1000
    assert (tmp_path / "adding_gradient_flow.png").exists()


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "rnnkit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_cli_dispatch(tmp_path):
    r = _cli(
        "demo", "adding", "--quick", "--models", "gru", "--no-plot", "--no-progress", "--out", str(tmp_path)
    )
    assert r.returncode == 0, r.stderr
    assert "gru" in r.stdout and (tmp_path / "adding_results.json").exists()
    r = _cli("demo", "nope")
    assert r.returncode == 2 and "unknown demo 'nope'" in r.stderr
    r = _cli()
    assert r.returncode == 2 and "usage" in r.stdout
    r = _cli("bench", "--help")
    try:
        import rnnkit.bench  # noqa: F401
    except ModuleNotFoundError:
        assert r.returncode == 2 and "bench module not available" in r.stderr


def test_distributed_flag_without_a_launcher_trains_on_one_rank(tmp_path):
    results = adding.main(
        ["--quick", "--distributed", "--models", "gru", "--out", str(tmp_path), "--no-progress"]
    )
    assert results[0]["final_test_mse"] < 0.03
    assert json.loads((tmp_path / "adding_results.json").read_text())["meta"]["ranks"] == 1


@pytest.mark.mpi
def test_distributed_demo_under_mpiexec(tmp_path):
    pytest.importorskip("mpi4py")
    mpiexec = pathlib.Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        pytest.skip("mpiexec not found next to the interpreter (pip install mpich)")
    r = subprocess.run(
        [
            str(mpiexec),
            "-n",
            "2",
            sys.executable,
            "-m",
            "rnnkit",
            "demo",
            "adding",
            "--distributed",
            "--quick",
        ]
        + ["--models", "lstm", "--no-plot", "--no-progress", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "data-parallel on 2 ranks" in r.stdout
    saved = json.loads((tmp_path / "adding_results.json").read_text())
    assert saved["meta"]["ranks"] == 2
    assert saved["results"][0]["final_test_mse"] < 0.03
