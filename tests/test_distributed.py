"""rnnkit.distributed without MPI: the single-process communicator, sharding, the flat gradient
buffer, and data-parallel training over N in-process ranks (threads exchanging through a
barrier), compared with one process on the whole global batch (float64, 1e-12).

The MPI communicator itself is tested under mpiexec (test_distributed_mpi.py,
test_distributed_failures.py).
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from rnnkit.distributed import (
    Communicator,
    DataParallel,
    DistributedError,
    RankMismatchError,
    SingleProcess,
    init,
    shard_indices,
)
from rnnkit.distributed import data_parallel as dp_module
from rnnkit.models import SequenceClassifier, SequenceRegressor
from rnnkit.nn import CrossEntropyLoss, Linear, MSELoss
from rnnkit.train import SGD, Adam, Callback, Checkpoint, fit, load_checkpoint, save_checkpoint

T, I, H, O = 5, 3, 4, 2
LAUNCHER_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class ThreadRanks:
    """N ranks as threads of this process: each collective is an exchange of copies between
    two barrier waits, summed in rank order."""

    def __init__(self, size):
        self.size = size
        self.slots = [None] * size
        self.wait = threading.Barrier(size, timeout=30)

    def comms(self):
        return [ThreadComm(self, r) for r in range(self.size)]

    def run(self, fn):
        """fn(comm) on every rank at once -> [result or the exception it raised]."""
        results = [None] * self.size

        def body(comm):
            try:
                results[comm.rank] = fn(comm)
            except Exception as exc:
                results[comm.rank] = exc

        threads = [threading.Thread(target=body, args=(c,)) for c in self.comms()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a rank hung"
        return results


class ThreadComm(Communicator):
    def __init__(self, group, rank):
        self.group, self.rank, self.size = group, rank, group.size
        self.allreduces = []  # the buffers allreduce_ was given

    def _exchange(self, obj):
        g = self.group
        g.slots[self.rank] = obj
        g.wait.wait()
        everyone = list(g.slots)
        g.wait.wait()
        return everyone

    def allreduce_(self, buf, *, ordered=False):
        self.allreduces.append(buf)
        parts = self._exchange(buf.copy())
        total = parts[0].copy()
        for p in parts[1:]:
            total += p
        buf[...] = total
        return buf

    def broadcast_(self, buf, root=0):
        buf[...] = self._exchange(buf.copy())[root]
        return buf

    def barrier(self):
        self.group.wait.wait()

    def allgather(self, obj):
        return self._exchange(obj)


def _data(seed, B):
    def data(step):
        rng = np.random.default_rng([seed, step])
        lengths = rng.integers(1, T + 1, B)
        return rng.standard_normal((T, B, I)), rng.standard_normal((B, O)), lengths

    return data


def _weights(model):
    return {n: p.data.copy() for n, p in model.named_parameters()}


# ---------------------------------------------------------------------- single process


def test_single_process_collectives_are_the_identity():
    comm = SingleProcess()
    buf = np.arange(4.0)
    assert comm.allreduce_(buf) is buf and comm.broadcast_(buf) is buf
    np.testing.assert_array_equal(buf, np.arange(4.0))
    comm.barrier()
    assert (comm.rank, comm.size, comm.allgather("x")) == (0, 1, ["x"])


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda c: c.allreduce_([1.0, 2.0]), TypeError, "buf: expected a NumPy array, got list"),
        (
            lambda c: c.allreduce_(np.zeros((4, 4))[:, 1]),
            ValueError,
            "buf: expected a writeable C-contiguous",
        ),
        (lambda c: c.broadcast_(np.zeros(2), root=1), ValueError, "root: expected 0"),
    ],
)
def test_single_process_bad_buffers(call, exc, match):
    with pytest.raises(exc, match=match):
        call(SingleProcess())


def test_init_without_a_launcher_is_single_process(monkeypatch):
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    assert isinstance(init(), SingleProcess)


def test_init_under_a_launcher_without_mpi4py_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(ImportError, match=r"one of 2 started by mpiexec.*rnnkit\[mpi\]"):
        init()


@pytest.mark.parametrize("B", [0, 1, 5, 7, 12])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_shards_are_disjoint_cover_the_batch_and_differ_by_one_at_most(B, size):
    for step in range(3):
        parts = [shard_indices(B, r, size, seed=1, step=step) for r in range(size)]
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(B))
        lens = [len(p) for p in parts]
        assert max(lens) - min(lens) <= 1
        assert all(np.all(np.diff(p) > 0) for p in parts)


def test_shards_are_drawn_from_the_seed_and_step():
    a = [shard_indices(10, 0, 3, seed=2, step=s) for s in range(4)]
    b = [shard_indices(10, 0, 3, seed=2, step=s) for s in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(a[0], x) for x in a[1:])  # which items a rank gets varies
    assert not np.array_equal(shard_indices(10, 0, 3, seed=3, step=0), a[0])
    with pytest.raises(ValueError, match=r"rank: expected a rank in \[0, 3\), got 3"):
        shard_indices(10, 3, 3)


def test_flatten_grads_makes_every_grad_a_view_of_one_buffer():
    model = SequenceRegressor("lstm", I, H, O, dtype=np.float64, seed=0)
    for k, p in enumerate(model.parameters()):
        p.grad[...] = k + 1
    flat = model.flatten_grads(extra=3)
    params = model.parameters()
    assert flat.size == sum(p.grad.size for p in params) + 3 and flat.flags.c_contiguous
    offset = 0
    for k, p in enumerate(params):
        assert np.shares_memory(p.grad, flat)
        np.testing.assert_array_equal(flat[offset : offset + p.grad.size], k + 1)
        offset += p.grad.size
    np.testing.assert_array_equal(flat[offset:], 0)
    params[0].accumulate(np.ones_like(params[0].grad))
    model.zero_grad()
    np.testing.assert_array_equal(flat[:offset], 0)  # zero_grad clears the buffer in place


def test_flatten_grads_needs_one_dtype():
    class Two(SequenceRegressor):
        pass

    model = Two("gru", I, H, O, dtype=np.float64, seed=0)
    model.extra = Linear(2, 2, dtype=np.float32, seed=0)
    with pytest.raises(TypeError, match=r"expected parameters of one dtype, got \['float32', 'float64'\]"):
        model.flatten_grads()


def test_data_parallel_on_one_process_trains_as_the_bare_model(tmp_path):
    data = _data(0, 6)
    ref = SequenceRegressor("gru", I, H, O, dtype=np.float64, seed=3)
    fit(ref, MSELoss(), Adam(ref.parameters(), lr=0.05), data, steps=3, clip_norm=0.5, progress=False)
    model = SequenceRegressor("gru", I, H, O, dtype=np.float64, seed=3)
    opt = Adam(model.parameters(), lr=0.05)
    path = tmp_path / "ck.npz"
    fit(
        model,
        MSELoss(),
        opt,
        data,
        steps=3,
        clip_norm=0.5,
        progress=False,
        comm=SingleProcess(),
        callbacks=[Checkpoint(path, at_end=True)],
    )
    for name, w in _weights(ref).items():
        np.testing.assert_array_equal(model.state_dict()[name], w, err_msg=name)
    bare = SequenceRegressor("gru", I, H, O, dtype=np.float64, seed=9)
    load_checkpoint(path, bare)  # the module's own names: no wrapper prefix
    for name, w in _weights(ref).items():
        np.testing.assert_array_equal(bare.state_dict()[name], w, err_msg=name)


def test_data_parallel_bad_arguments():
    model = SequenceRegressor("lstm", I, H, O, seed=0)
    with pytest.raises(TypeError, match="module: expected an rnnkit Module, got int"):
        DataParallel(3)
    with pytest.raises(TypeError, match="comm: expected a rnnkit.distributed Communicator, got str"):
        DataParallel(model, "world")
    dp = DataParallel(model)
    with pytest.raises(TypeError, match="module: expected a module to wrap, got a DataParallel"):
        DataParallel(dp)
    with pytest.raises(ValueError, match="comm: expected the communicator of the DataParallel model"):
        fit(dp, MSELoss(), SGD(dp.parameters(), lr=0.1), [], comm=SingleProcess(), progress=False)
    with pytest.raises(ValueError, match=r"y: expected 4 items \(x's batch size\) along axis 0, got shape"):
        fit(
            dp,
            MSELoss(),
            SGD(dp.parameters(), lr=0.1),
            [(np.zeros((T, 4, I), np.float32), np.zeros((3, O), np.float32))],
            progress=False,
        )


# ---------------------------------------------------------------------- N ranks in threads


@pytest.mark.parametrize("cell, size", [("lstm", 2), ("gru", 3)])
def test_n_ranks_equal_one_process_on_the_global_batch(cell, size):
    data, steps = _data(4, 7), 4

    def train(comm):
        model = SequenceRegressor(cell, I, H, O, dtype=np.float64, seed=10 + comm.rank)
        dp = DataParallel(model, comm, seed=1)
        state = fit(
            dp, MSELoss(), Adam(dp.parameters(), lr=0.05), data, steps=steps, clip_norm=0.2, progress=False
        )
        return _weights(dp), state, comm.allreduces

    results = ThreadRanks(size).run(train)
    ref = SequenceRegressor(cell, I, H, O, dtype=np.float64, seed=10)
    ref_state = fit(
        ref, MSELoss(), Adam(ref.parameters(), lr=0.05), data, steps=steps, clip_norm=0.2, progress=False
    )
    assert ref_state.grad_norm > 0.2  # the clipping acts
    for weights, state, allreduces in results:
        for name, w in _weights(ref).items():
            np.testing.assert_allclose(weights[name], w, rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(
            [v for _, v in state.history["loss"]], [v for _, v in ref_state.history["loss"]], rtol=1e-12
        )
        # one allreduce per step, always over the one flat buffer
        assert len(allreduces) == steps and all(b is allreduces[0] for b in allreduces)
    for weights, _, _ in results[1:]:
        for name, w in results[0][0].items():
            assert np.array_equal(weights[name], w), name


def test_a_rank_whose_targets_are_all_padding_contributes_nothing():
    C, ignore = 3, -1

    def data(step):
        rng = np.random.default_rng([6, step])
        targets = rng.integers(0, C, (T, 2))
        targets[:, step % 2] = ignore  # one whole sequence is padding: its rank has no items
        return rng.standard_normal((T, 2, I)), targets

    def model():
        return SequenceClassifier("gru", I, H, C, many_to_many=True, dtype=np.float64, seed=2)

    def train(comm):
        dp = DataParallel(model(), comm)
        loss_fn = CrossEntropyLoss(ignore_index=ignore)
        opt = SGD(dp.parameters(), lr=0.5)
        state = fit(dp, loss_fn, opt, data, steps=3, batch_axes=(1, 1), raise_on_nan=True, progress=False)
        return _weights(dp), state.history["loss"]

    results = ThreadRanks(2).run(train)
    ref = model()
    ref_state = fit(
        ref,
        CrossEntropyLoss(ignore_index=ignore),
        SGD(ref.parameters(), lr=0.5),
        data,
        steps=3,
        progress=False,
    )
    for weights, losses in results:
        for name, w in _weights(ref).items():
            np.testing.assert_allclose(weights[name], w, rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(
            [v for _, v in losses], [v for _, v in ref_state.history["loss"]], rtol=1e-12
        )


def test_a_rank_that_raises_stops_every_rank_naming_it():
    def train(comm):
        def data(step):
            x, y, _ = _data(0, 6)(step)
            if comm.rank == 2 and step == 1:
                x = x[:, :, :2]
            return x, y

        dp = DataParallel(SequenceRegressor("lstm", I, H, O, dtype=np.float64, seed=0), comm)
        fit(dp, MSELoss(), SGD(dp.parameters(), lr=0.1), data, steps=4, progress=False)

    results = ThreadRanks(3).run(train)
    for exc in results:
        assert isinstance(exc, DistributedError) and exc.ranks == (2,)
        assert str(exc).startswith(
            "training stopped on all 3 ranks: rank 2 failed during the step (rank 2 raised ValueError: x:"
        )
    assert isinstance(results[2].__cause__, ValueError)


def test_a_stop_on_one_rank_stops_all_at_the_same_step():
    class StopOnRank1(Callback):
        def on_step_end(self, state):
            if state.rank == 1 and state.step == 2:
                state.stop, state.stop_reason = True, "enough"

    def train(comm):
        dp = DataParallel(SequenceRegressor("gru", I, H, O, dtype=np.float64, seed=0), comm)
        state = fit(
            dp,
            MSELoss(),
            SGD(dp.parameters(), lr=0.1),
            _data(1, 5),
            steps=6,
            callbacks=[StopOnRank1()],
            progress=False,
        )
        return state.step, state.stop_reason

    assert ThreadRanks(2).run(train) == [(2, "rank 1 stopped training"), (2, "enough")]


def test_mismatched_models_or_versions_are_found_at_start_up(monkeypatch):
    def shapes(comm):
        DataParallel(SequenceRegressor("lstm", I, H + comm.rank, O, seed=0), comm)

    for exc in ThreadRanks(2).run(shapes):
        assert isinstance(exc, RankMismatchError) and isinstance(exc, ValueError)
        assert "rank 1's model differs from rank 0's: parameter 'rnn.weight_ih_l0' (20, 3)" in str(exc)

    versions = iter(["0.1.0", "0.2.0"])
    lock = threading.Lock()

    def next_version():
        with lock:
            return next(versions)

    monkeypatch.setattr(dp_module, "_version", next_version)

    def version(comm):
        DataParallel(SequenceRegressor("lstm", I, H, O, seed=0), comm)

    for exc in ThreadRanks(2).run(version):
        assert isinstance(exc, RankMismatchError)
        assert "runs rnnkit 0.2.0, rank 0 runs 0.1.0" in str(
            exc
        ) or "runs rnnkit 0.1.0, rank 0 runs 0.2.0" in str(exc)


def test_initial_parameters_come_from_rank_0():
    def build(comm):
        return _weights(
            DataParallel(SequenceRegressor("lstm", I, H, O, dtype=np.float64, seed=comm.rank), comm)
        )

    results = ThreadRanks(3).run(build)
    rank0 = _weights(SequenceRegressor("lstm", I, H, O, dtype=np.float64, seed=0))
    for weights in results:
        for name, w in rank0.items():
            assert np.array_equal(weights[name], w), name


def _fit_one(batch, **kw):
    model = SequenceRegressor("lstm", I, H, O, dtype=np.float64, seed=0)
    return fit(model, MSELoss(), SGD(model.parameters(), lr=0.1), [batch], progress=False, **kw)


_X, _Y, _L = _data(0, 4)(0)


@pytest.mark.parametrize(
    "batch, kw, exc, match",
    [
        (
            (_X, _Y, _L, _L),
            {},
            TypeError,
            r"data: expected batches \(x, y\) or \(x, y, lengths\), got tuple of length 4",
        ),
        (_X, {}, TypeError, r"data: expected batches \(x, y\) or \(x, y, lengths\), got ndarray"),
        (
            (_X, _Y),
            {"batch_axes": (1,)},
            TypeError,
            r"batch_axes: expected a pair of ints \(x's axis, y's axis\), got \(1,\)",
        ),
        (
            (_X, _Y),
            {"batch_axes": (3, 0), "comm": SingleProcess()},
            ValueError,
            "batch_axes: x has 3 dimensions, no batch axis 3",
        ),
        (
            (_X, _Y[:3]),
            {"comm": SingleProcess()},
            ValueError,
            r"y: expected 4 items \(x's batch size\) along axis 0, got shape \(3, 2\)",
        ),
        (
            (_X, _Y * np.nan),
            {"raise_on_nan": True},
            FloatingPointError,
            "loss: expected a finite value, got nan at step 1",
        ),
        ((_X, _Y), {"raise_on_nan": "yes"}, TypeError, "raise_on_nan"),
    ],
)
def test_fit_bad_batches_and_options(batch, kw, exc, match):
    with pytest.raises(exc, match=match):
        _fit_one(batch, **kw)


def test_fit_passes_lengths_to_the_model():
    # a batch (x, y, lengths) trains on the sequences cut at their lengths: the same as x with
    # everything past each length replaced by garbage
    garbage = _X.copy()
    garbage[np.arange(T)[:, None] >= _L[None, :]] = 1e3
    a = _fit_one((_X, _Y, _L)).model
    b = _fit_one((garbage, _Y, _L)).model
    c = _fit_one((_X, _Y)).model
    for name, w in _weights(a).items():
        np.testing.assert_array_equal(_weights(b)[name], w, err_msg=name)
    assert not all(np.array_equal(_weights(c)[n], w) for n, w in _weights(a).items())


def test_sync_gradients_bad_count():
    dp = DataParallel(SequenceRegressor("lstm", I, H, O, seed=0), ThreadRanks(1).comms()[0])
    with pytest.raises(ValueError, match=r"count: expected a number >= 0.0, got -1.0"):
        dp.sync_gradients(-1)


def test_only_rank_0_writes_a_checkpoint(tmp_path):
    def save(comm):
        dp = DataParallel(SequenceRegressor("gru", I, H, O, dtype=np.float64, seed=comm.rank), comm)
        save_checkpoint(tmp_path / f"rank{comm.rank}.npz", dp, step=1)
        return _weights(dp)

    weights = ThreadRanks(2).run(save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.npz"]
    bare = SequenceRegressor("gru", I, H, O, dtype=np.float64, seed=5)
    assert load_checkpoint(tmp_path / "rank0.npz", bare) == {"step": 1}
    for name, w in weights[1].items():
        np.testing.assert_array_equal(bare.state_dict()[name], w, err_msg=name)


def test_importing_and_single_process_training_do_not_import_mpi4py():
    code = (
        "import sys, numpy as np, rnnkit\n"
        "from rnnkit.distributed import DataParallel, init\n"
        "from rnnkit.models import SequenceRegressor\n"
        "DataParallel(SequenceRegressor('gru', 2, 3, 1, seed=0), init())\n"
        "print('mpi4py' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_replaced_grad_array_is_taken_back_into_the_buffer():
    def sync(comm):
        dp = DataParallel(SequenceRegressor("lstm", I, H, O, dtype=np.float64, seed=0), comm)
        for p in dp.parameters():
            p.grad = np.full(p.data.shape, comm.rank + 1.0)  # no longer a view of the buffer
        synced = dp.sync_gradients(count=comm.rank + 1)  # weights 1 and 2
        return synced, [(p.grad.copy(), np.shares_memory(p.grad, dp._flat)) for p in dp.parameters()]

    for synced, grads in ThreadRanks(2).run(sync):
        assert synced.items == 3
        for g, in_buffer in grads:
            assert in_buffer
            np.testing.assert_array_equal(g, (1 * 1 + 2 * 2) / 3)


def test_a_callback_that_raises_on_one_rank_stops_every_rank_at_the_next_step():
    class Fails(Callback):
        def on_step_end(self, state):
            if state.rank == 0 and state.step == 2:
                raise KeyError("no such metric")

    def train(comm):
        dp = DataParallel(SequenceRegressor("gru", I, H, O, dtype=np.float64, seed=0), comm)
        fit(
            dp,
            MSELoss(),
            SGD(dp.parameters(), lr=0.1),
            _data(1, 4),
            steps=5,
            callbacks=[Fails()],
            progress=False,
        )

    for exc in ThreadRanks(2).run(train):
        assert isinstance(exc, DistributedError) and exc.ranks == (0,)
        assert "rank 0 raised KeyError: 'no such metric'" in str(exc)
