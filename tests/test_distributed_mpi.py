"""Data-parallel training on MPI ranks equals one process on the whole global batch.

Run under a launcher: ``mpiexec -n 2 python -m pytest -m mpi tests/test_distributed_mpi.py``
(and ``-n 3``: the global batches do not divide evenly). Without ``mpiexec -n N`` (N >= 2) or
mpi4py the module skips. Each test makes all its collective calls before asserting anything,
so that a failing rank does not leave the others waiting in the next test.

The reference is a plain single-process :func:`rnnkit.train.fit` on the concatenated batch,
computed on every rank: the data-parallel path (shards, scaled gradients, one allreduce,
division by the global count) against the one-process path, in float64 to 1e-12.
"""

import os
import tempfile

import numpy as np
import pytest

from rnnkit.distributed import DataParallel, init, launched_by_mpi, shard_indices
from rnnkit.models import SequenceClassifier, SequenceRegressor
from rnnkit.nn import CrossEntropyLoss, MSELoss
from rnnkit.train import SGD, Adam, Checkpoint, fit, load_checkpoint

pytestmark = pytest.mark.mpi

if launched_by_mpi() < 2:
    pytest.skip("needs mpiexec -n 2 (or more)", allow_module_level=True)
pytest.importorskip("mpi4py")

COMM = init()
T, I, H, O, C = 6, 3, 5, 2, 4
B = 7  # divides evenly by neither 2 nor 3 ranks
STEPS = 4


def _regression_data(seed):
    def data(step):
        rng = np.random.default_rng([seed, step])
        x = rng.standard_normal((T, B, I))
        y = rng.standard_normal((B, O))
        lengths = rng.integers(1, T + 1, B)
        return x, y, lengths

    return data


def _gather_weights(model):
    return COMM.allgather({n: p.data.copy() for n, p in model.named_parameters()})


def _assert_bitwise_same_on_every_rank(everyone):
    for r, theirs in enumerate(everyone[1:], start=1):
        for name, w in everyone[0].items():
            assert np.array_equal(w, theirs[name]), f"rank {r}: {name} differs from rank 0's"


def _assert_close(model_weights, ref, tol=1e-12):
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(model_weights[name], p.data, rtol=0, atol=tol, err_msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lstm_gru_with_lengths_clipping_adam_equal_one_process(cell):
    data = _regression_data(11)
    # every rank starts from different weights: rank 0's reach all by the broadcast
    model = SequenceRegressor(cell, I, H, O, dtype=np.float64, seed=100 + COMM.rank)
    dp = DataParallel(model, COMM, deterministic=True, seed=5)
    state = fit(
        dp, MSELoss(), Adam(dp.parameters(), lr=0.05), data, steps=STEPS, clip_norm=0.3, progress=False
    )
    everyone = _gather_weights(dp)

    ref = SequenceRegressor(cell, I, H, O, dtype=np.float64, seed=100)
    ref_state = fit(
        ref, MSELoss(), Adam(ref.parameters(), lr=0.05), data, steps=STEPS, clip_norm=0.3, progress=False
    )
    _assert_bitwise_same_on_every_rank(everyone)
    _assert_close(everyone[COMM.rank], ref)
    # the clipping did act (the global norm exceeded the bound), and the losses are the batch's
    assert ref_state.grad_norm > 0.3
    assert state.grad_norm == pytest.approx(ref_state.grad_norm, rel=1e-12)
    np.testing.assert_allclose(
        [v for _, v in state.history["loss"]], [v for _, v in ref_state.history["loss"]], rtol=1e-12
    )
    assert state.step == STEPS


@pytest.mark.parametrize("deterministic", [True, False])
def test_cross_entropy_averages_over_non_padding_targets_of_all_ranks(deterministic):
    ignore = -1

    def data(step):
        rng = np.random.default_rng([3, step])
        x = rng.standard_normal((T, B, I))
        lengths = rng.integers(1, T + 1, B)
        lengths[0] = 1  # one short sequence: its shard has few contributing targets
        targets = rng.integers(0, C, (T, B))
        targets[np.arange(T)[:, None] >= lengths[None, :]] = ignore  # padding
        return x, targets, lengths

    def model(seed):
        return SequenceClassifier("lstm", I, H, C, many_to_many=True, dtype=np.float64, seed=seed)

    dp = DataParallel(model(20 + COMM.rank), COMM, deterministic=deterministic, seed=9)
    fit(
        dp,
        CrossEntropyLoss(ignore_index=ignore),
        SGD(dp.parameters(), lr=0.5, momentum=0.9),
        data,
        steps=STEPS,
        batch_axes=(1, 1),
        progress=False,
    )
    everyone = _gather_weights(dp)
    ref = model(20)
    fit(
        ref,
        CrossEntropyLoss(ignore_index=ignore),
        SGD(ref.parameters(), lr=0.5, momentum=0.9),
        data,
        steps=STEPS,
        progress=False,
    )
    if deterministic:
        _assert_bitwise_same_on_every_rank(everyone)
    _assert_close(everyone[COMM.rank], ref)


def test_uneven_shards_cover_every_item_once():
    sizes = (1, 2, 5, 7, 10)
    mine = [[shard_indices(n, COMM.rank, COMM.size, seed=4, step=s) for s in range(3)] for n in sizes]
    everyone = COMM.allgather(mine)
    for k, n in enumerate(sizes):
        for s in range(3):
            parts = [everyone[r][k][s] for r in range(COMM.size)]
            np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))
            lens = [len(p) for p in parts]
            assert max(lens) - min(lens) <= 1


def test_more_ranks_than_items_still_trains_like_one_process():
    def data(step):
        rng = np.random.default_rng([8, step])
        return rng.standard_normal((T, 1, I)), rng.standard_normal((1, O))

    dp = DataParallel(SequenceRegressor("gru", I, H, O, dtype=np.float64, seed=1), COMM, deterministic=True)
    fit(dp, MSELoss(), SGD(dp.parameters(), lr=0.1), data, steps=2, progress=False)
    everyone = _gather_weights(dp)
    ref = SequenceRegressor("gru", I, H, O, dtype=np.float64, seed=1)
    fit(ref, MSELoss(), SGD(ref.parameters(), lr=0.1), data, steps=2, progress=False)
    _assert_bitwise_same_on_every_rank(everyone)
    _assert_close(everyone[COMM.rank], ref)


def test_checkpoint_written_by_rank_0_loads_into_one_process():
    folder = COMM.allgather(tempfile.mkdtemp() if COMM.rank == 0 else None)[0]
    path = os.path.join(folder, "dp.npz")
    dp = DataParallel(SequenceRegressor("lstm", I, H, O, dtype=np.float64, seed=COMM.rank), COMM)
    opt = Adam(dp.parameters(), lr=0.01)
    fit(
        dp,
        MSELoss(),
        opt,
        _regression_data(2),
        steps=2,
        callbacks=[Checkpoint(path, at_end=True)],
        progress=False,
    )
    COMM.barrier()  # rank 0 has written the file
    single = SequenceRegressor("lstm", I, H, O, dtype=np.float64, seed=99)
    single_opt = Adam(single.parameters(), lr=0.01)
    meta = load_checkpoint(path, single, single_opt)
    COMM.barrier()  # everyone has read it
    if COMM.rank == 0:
        os.remove(path)
        os.rmdir(folder)
    assert meta["step"] == 2
    for name, p in dp.named_parameters():
        np.testing.assert_array_equal(single.state_dict()[name], p.data, err_msg=name)
    for k, a in opt.state_dict().items():
        np.testing.assert_array_equal(single_opt.state_dict()[k], a, err_msg=k)


def test_collectives():
    r, n = COMM.rank, COMM.size
    a = np.arange(5.0) * (r + 1)
    b = a.copy()
    COMM.allreduce_(a)
    COMM.allreduce_(b, ordered=True)
    c = np.full(3, float(r))
    COMM.broadcast_(c, root=n - 1)
    gathered = COMM.allgather(r * 10)
    COMM.barrier()
    total = n * (n + 1) / 2
    np.testing.assert_array_equal(a, np.arange(5.0) * total)
    np.testing.assert_array_equal(b, np.arange(5.0) * total)
    np.testing.assert_array_equal(c, np.full(3, float(n - 1)))
    assert gathered == [10 * k for k in range(n)]
