"""Data-parallel training: :class:`DataParallel` wraps a module so that N ranks, each on its
shard of every global batch, take the same optimizer steps as one process on the whole batch.

Each step: every rank runs forward and backward on its shard (:meth:`DataParallel.shard`);
:meth:`DataParallel.sync_gradients` sums the gradients with ONE allreduce over a flat buffer
that every parameter's ``.grad`` is a view of (no per-parameter messages, no copies); the
buffer's tail carries the step's item count, loss and error flags, so that averaging by the
global count of contributing items, the global loss and the failure of any rank come with
the same message. After it every rank holds the same gradients, so gradient clipping computes
the global norm locally and the optimizers step identically.

Shape letters: T time steps, B batch (the global batch; each rank sees its shard of it).
"""

from __future__ import annotations

import importlib.metadata
import math
from typing import Any, NamedTuple

import numpy as np

from .. import _validate as v
from ..nn.module import Module, Parameter
from .comm import Communicator, DistributedError, RankMismatchError, SingleProcess

__all__ = ["DataParallel", "Synced", "shard_indices", "shard_array"]

# Tail of the flat buffer, after the gradients: [weight, weight * loss, ranks that gave a loss,
# one flag per rank (1: failed, -1: asks to stop)].
_WEIGHT, _LOSS, _HAS_LOSS, _FLAGS = 0, 1, 2, 3


class Synced(NamedTuple):
    """What :meth:`DataParallel.sync_gradients` returns: the global count of ``items`` the
    gradients average over, the global mean ``loss`` (nan when no rank gave one), and the
    ranks that asked to stop (``stop_ranks``)."""

    items: float
    loss: float
    stop_ranks: tuple[int, ...]


def _version() -> str:
    try:
        return importlib.metadata.version("rnnkit")
    except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path
        return "unknown"


def shard_indices(batch_size: int, rank: int, size: int, seed: int = 0, step: int = 0) -> np.ndarray:
    """Rank ``rank``'s share of a global batch of ``batch_size`` items at step ``step``.

    A permutation of range(B) drawn from (seed, step) is cut into ``size`` contiguous parts
    whose sizes differ by at most one (B need not divide evenly); the parts of all ranks are
    disjoint and cover every item once. Returns the sorted indices (N,) of this rank's N items.
    """
    B = v.int_arg("batch_size", batch_size, minimum=0)
    size = v.int_arg("size", size)
    rank = v.int_arg("rank", rank, minimum=0)
    if rank >= size:
        raise ValueError(f"rank: expected a rank in [0, {size}), got {rank}")
    perm = np.random.default_rng([v.seed_arg(seed), v.step_index(step)]).permutation(B)
    return np.sort(np.array_split(perm, size)[rank])


def shard_array(name: str, a: Any, idx: np.ndarray, axis: int) -> Any:
    """``a`` (...) restricted to the items ``idx`` (N,) along its batch axis ``axis``, which then
    has size N (None stays None)."""
    if a is None:
        return None
    arr = v.as_array(name, a)
    if not -arr.ndim <= axis < arr.ndim:
        raise ValueError(f"{name}: expected a batch axis {axis} within its {arr.ndim} dimensions")
    return np.ascontiguousarray(np.take(arr, idx, axis=axis))


class DataParallel(Module):
    """``dp = DataParallel(module, comm)``: ``module`` trained on the ranks of ``comm``.

    At construction every rank checks that all ranks hold the same rnnkit version and the same
    parameters (names, shapes, dtypes) -- :class:`RankMismatchError` (a ValueError) on every
    rank otherwise -- then takes rank
    0's parameter values (one broadcast) and re-points every ``.grad`` into one flat buffer
    (:meth:`~rnnkit.nn.Module.flatten_grads`).

    ``dp(x, ...)`` and ``dp.backward(dy)`` are the module's; parameters, ``state_dict`` and
    checkpoints carry the module's own names, so a checkpoint written by rank 0 loads into the
    bare module in one process. After backward, :meth:`sync_gradients`. The optimizer's state is
    not broadcast: make the optimizer on every rank (or load its checkpoint on every rank).

    deterministic: reduce in rank order (:meth:`Communicator.allreduce_` ``ordered=True``):
    bitwise the same gradients, hence weights, on every rank, and results that do not depend
    on the MPI library's reduction tree. seed: draws each step's shards (:meth:`shard`).

    :func:`rnnkit.train.fit` with ``comm=`` runs the whole loop; by hand, each rank does::

        idx = dp.shard(step, B)                         # this rank's items of the batch
        opt.zero_grad()
        loss = loss_fn(dp(x[:, idx]), y[idx])           # x (T, B, I), y (B, O)
        dp.backward(loss_fn.backward())
        dp.sync_gradients(count=y[idx].size, loss=float(loss))
        opt.step()
    """

    module: Any  # the wrapped Module (checked in __init__); its backward is its own
    comm: Communicator

    def __init__(
        self, module: Module, comm: Communicator | None = None, *, deterministic: bool = False, seed: int = 0
    ) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"module: expected an rnnkit Module, got {type(module).__name__}")
        if isinstance(module, DataParallel):
            raise TypeError("module: expected a module to wrap, got a DataParallel (already wrapped)")
        comm = SingleProcess() if comm is None else comm
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm: expected a rnnkit.distributed Communicator, got {type(comm).__name__}")
        self.module = module
        self.comm = comm
        self.deterministic = v.flag("deterministic", deterministic)
        self.seed = v.seed_arg(seed)
        dtype = getattr(module, "dtype", None)
        if dtype is not None:
            self.dtype = dtype
        params = self._unique_params()
        if not params:
            raise ValueError(f"module: {type(module).__name__} has no parameters to train")
        self._check_same_everywhere()
        self._broadcast_parameters(params)
        self._n = sum(p.grad.size for p in params)
        self._flat = module.flatten_grads(extra=_FLAGS + comm.size)
        self._params: dict[str, Parameter] = {}  # the wrapper owns no parameters of its own
        self._grad_params = params  # in the buffer's order

    # ------------------------------------------------------------------ the module's face

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def size(self) -> int:
        return self.comm.size

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """The wrapped module's, under its own names (no ``module.`` prefix)."""
        return self.module.named_parameters()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped module's forward (its arguments and shapes), given this rank's shard."""
        return self.module(*args, **kwargs)

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped module's backward (its arguments and shapes): this rank's gradients only;
        :meth:`sync_gradients` then sums them over the ranks."""
        return self.module.backward(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # attributes of the wrapped module (final_state, hidden_size, ...) read through
        module = self.__dict__.get("module")
        if module is None:
            raise AttributeError(f"DataParallel has no attribute {name!r}")
        return getattr(module, name)

    def __repr__(self) -> str:
        return f"DataParallel({self.module!r}, rank={self.rank}, size={self.size})"

    # ------------------------------------------------------------------ start-up

    def _unique_params(self) -> list[Parameter]:
        return list({id(p): p for p in self.module.parameters()}.values())

    def _check_same_everywhere(self) -> None:
        """RankMismatchError on every rank unless all ranks run one rnnkit version and one model."""
        mine = {
            "version": _version(),
            "params": [
                (n, tuple(p.data.shape), p.data.dtype.name) for n, p in self.module.named_parameters()
            ],
        }
        everyone = self.comm.allgather(mine)
        ref = everyone[0]
        problems = []
        for r, theirs in enumerate(everyone[1:], start=1):
            if theirs["version"] != ref["version"]:
                problems.append(f"rank {r} runs rnnkit {theirs['version']}, rank 0 runs {ref['version']}")
            if theirs["params"] != ref["params"]:
                diff = _first_difference(ref["params"], theirs["params"])
                problems.append(f"rank {r}'s model differs from rank 0's: {diff}")
        if problems:
            raise RankMismatchError("DataParallel: the ranks do not agree; " + "; ".join(problems))

    def _broadcast_parameters(self, params: list[Parameter]) -> None:
        """Every rank takes rank 0's parameter values (one message), written in place."""
        if self.comm.size == 1:
            return
        buf = np.concatenate([p.data.reshape(-1) for p in params])
        self.comm.broadcast_(buf, root=0)
        offset = 0
        for p in params:
            p.data[...] = buf[offset : offset + p.data.size].reshape(p.data.shape)
            offset += p.data.size

    # ------------------------------------------------------------------ each step

    def shard(self, step: int, batch_size: int) -> np.ndarray:
        """This rank's indices (N,) into the global batch of ``batch_size`` items at
        ``step`` (:func:`shard_indices` from the seed): the ranks' shards are disjoint, cover
        the batch, and differ in size by at most one."""
        return shard_indices(batch_size, self.rank, self.size, self.seed, step)

    def _ensure_views(self) -> None:
        # something may have replaced a .grad array (p.grad = ...): take it back into the buffer
        offset = 0
        for p in self._grad_params:
            size = p.data.size
            view = self._flat[offset : offset + size]
            g = p.grad
            if not (
                isinstance(g, np.ndarray)
                and g.size == size
                and g.flags.c_contiguous
                and g.ctypes.data == view.ctypes.data
            ):
                view[...] = np.asarray(g).reshape(-1)
                p.grad = view.reshape(p.data.shape)
            offset += size

    def sync_gradients(
        self,
        count: float | None = None,
        *,
        loss: float | None = None,
        average: bool = True,
        stop: bool = False,
        error: BaseException | None = None,
    ) -> Synced:
        """Sum the ranks' gradients (one allreduce) and average them by the global item count.

        count: the number of items (non-padding targets, say) this rank's gradient is the
        mean over; the result is the mean over all ranks' items. None: each rank's gradient
        counts as one (the mean over ranks). A rank with count 0 contributes nothing.
        average=False: the gradients are summed (a loss with reduction "sum"; count is then
        ignored, and :attr:`Synced.loss` is the mean of the ranks' losses).
        loss: this rank's mean loss, averaged into :attr:`Synced.loss` with the same weights.
        stop: this rank asks to stop (reported in :attr:`Synced.stop_ranks` on every rank).
        error: the exception this rank raised during the step instead of a gradient: every
        rank then raises :class:`DistributedError` naming the failed ranks and their errors.
        """
        flat, n, comm = self._flat, self._n, self.comm
        self._ensure_views()
        if comm.size == 1:  # nothing to combine: the gradients are already the batch's
            if error is not None:
                raise error
            return Synced(
                1.0 if count is None else v.real("count", count, 0.0),
                math.nan if loss is None else float(loss),
                (0,) if stop else (),
            )
        tail = flat[n:]
        tail[...] = 0
        if error is not None:
            flat[:n] = 0
            tail[_FLAGS + comm.rank] = 1
        else:
            weight = 1.0 if count is None or not average else v.real("count", count, 0.0)
            if weight == 0:
                flat[:n] = 0  # a rank with no items: its mean is meaningless (0/0)
            elif weight != 1.0:
                flat[:n] *= flat.dtype.type(weight)
            tail[_WEIGHT] = weight
            if loss is not None:
                tail[_LOSS] = float(loss) * weight if weight else 0.0
                tail[_HAS_LOSS] = 1
            if stop:
                tail[_FLAGS + comm.rank] = -1  # each rank writes its own slot only
        comm.allreduce_(flat, ordered=self.deterministic)
        flags = tail[_FLAGS:]
        failed = tuple(int(r) for r in np.flatnonzero(flags > 0))
        if failed:
            self._raise_failure(failed, error)
        total = float(tail[_WEIGHT])
        if average and total > 0:
            flat[:n] /= flat.dtype.type(total)
        mean_loss = float(tail[_LOSS]) / total if total > 0 and tail[_HAS_LOSS] else math.nan
        stop_ranks = tuple(int(r) for r in np.flatnonzero(flags < 0))
        return Synced(total, mean_loss, stop_ranks)

    def _raise_failure(self, failed: tuple[int, ...], error: BaseException | None) -> None:
        """Every rank raises, naming the failed ranks and what they raised (one more
        collective, on the failure path only)."""
        mine = None if error is None else f"{type(error).__name__}: {error}"
        messages = self.comm.allgather(mine)
        detail = "; ".join(f"rank {r} raised {messages[r]}" for r in failed)
        who = "rank" if len(failed) == 1 else "ranks"
        names = ", ".join(str(r) for r in failed)
        exc = DistributedError(
            f"training stopped on all {self.size} ranks: {who} {names} failed during the step ({detail})",
            failed,
        )
        if error is not None:
            raise exc from error
        raise exc


def _first_difference(a: list[Any], b: list[Any]) -> str:
    for x, y in zip(a, b):
        if x != y:
            return f"parameter {y[0]!r} {y[1]} {y[2]} where rank 0 has {x[0]!r} {x[1]} {x[2]}"
    return f"{len(b)} parameters where rank 0 has {len(a)}"
