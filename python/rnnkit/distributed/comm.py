"""Communicators: the few collectives data-parallel training needs, for one process
(:class:`SingleProcess`) or for the ranks of an MPI job (:class:`MPICommunicator`, on mpi4py).

Every collective is called by every rank in the same order; buffers are C-contiguous NumPy
arrays, reduced or broadcast in place.
"""

from __future__ import annotations

import abc
import os
import sys
from typing import Any

import numpy as np

from .. import _validate as v

__all__ = [
    "Communicator",
    "SingleProcess",
    "MPICommunicator",
    "init",
    "launched_by_mpi",
    "DistributedError",
    "RankMismatchError",
]

# Set by the MPI launchers (MPICH's Hydra, Open MPI, PMIx-based ones) in every rank's environment.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class DistributedError(RuntimeError):
    """Raised on every rank at once when a rank failed during a step; ``ranks`` lists the
    failed ranks."""

    def __init__(self, message: str, ranks: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.ranks = ranks


class RankMismatchError(DistributedError, ValueError):
    """Raised on every rank at start-up when the ranks run different rnnkit versions or hold
    different models."""


def _contiguous(name: str, buf: Any) -> np.ndarray:
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(buf).__name__}")
    if not buf.flags.c_contiguous or not buf.flags.writeable:
        raise ValueError(f"{name}: expected a writeable C-contiguous array (reduced in place)")
    return buf


class Communicator(abc.ABC):
    """What data-parallel training asks of its ranks: ``rank`` (0 .. size-1), ``size``, and
    collectives that every rank calls in the same order."""

    rank: int
    size: int

    @abc.abstractmethod
    def allreduce_(self, buf: np.ndarray, *, ordered: bool = False) -> np.ndarray:
        """Sum ``buf`` (...) over the ranks, in place; returns ``buf``. Any shape, the same on
        every rank, C-contiguous.

        ordered: add the ranks' contributions in rank order, the same additions on every rank,
        so that every rank gets bitwise the same sum (at the cost of a reduce-scatter plus an
        allgather instead of the library's allreduce)."""

    @abc.abstractmethod
    def broadcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite ``buf`` (...) on every rank with rank ``root``'s, in place; returns ``buf``
        (any shape, the same on every rank, C-contiguous)."""

    @abc.abstractmethod
    def barrier(self) -> None:
        """Return once every rank has called it."""

    @abc.abstractmethod
    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (a small picklable value), as a list in rank order."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class SingleProcess(Communicator):
    """One rank: every collective is the identity."""

    rank = 0
    size = 1

    def allreduce_(self, buf: np.ndarray, *, ordered: bool = False) -> np.ndarray:
        return _contiguous("buf", buf)

    def broadcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        if root != 0:
            raise ValueError(f"root: expected 0 (the only rank), got {root!r}")
        return _contiguous("buf", buf)

    def barrier(self) -> None:
        pass

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]


class MPICommunicator(Communicator):
    """The ranks of an MPI communicator (mpi4py's ``MPI.COMM_WORLD`` by default).

    Install with ``pip install "rnnkit[mpi]"`` (mpi4py and the MPICH wheel) and launch with
    ``mpiexec -n N python ...``. Buffers go to MPI without a copy (mpi4py's buffer interface).
    """

    def __init__(self, comm: Any = None) -> None:
        from mpi4py import MPI  # optional and slow to import: only when MPI is used

        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        if self.size > 1:
            _abort_on_uncaught_exception(self.comm, self.rank, self.size)

    def allreduce_(self, buf: np.ndarray, *, ordered: bool = False) -> np.ndarray:
        buf = _contiguous("buf", buf)
        if self.size == 1:
            return buf
        if not ordered:
            self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
            return buf
        # Reduce-scatter in rank order, then allgather: rank j sums chunk j of every rank's
        # buffer, adding rank 0's, then 1's, ... and sends the sum to all, so every rank holds
        # the same bits whatever the library's reduction tree.
        flat = buf.reshape(-1)
        n, p = flat.size, self.size
        counts = np.array([n // p + (1 if j < n % p else 0) for j in range(p)])
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        mine = int(counts[self.rank])
        recv = np.empty((p, mine), flat.dtype)
        self.comm.Alltoallv(
            [flat, (counts.tolist(), displs.tolist())],
            [recv, ([mine] * p, [mine * i for i in range(p)])],
        )
        acc = recv[0].copy()
        for i in range(1, p):
            acc += recv[i]
        self.comm.Allgatherv(acc, [flat, (counts.tolist(), displs.tolist())])
        return buf

    def broadcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        buf = _contiguous("buf", buf)
        root = v.int_arg("root", root, minimum=0)
        if root >= self.size:
            raise ValueError(f"root: expected a rank in [0, {self.size}), got {root}")
        self.comm.Bcast(buf, root=root)
        return buf

    def barrier(self) -> None:
        self.comm.Barrier()

    def allgather(self, obj: Any) -> list[Any]:
        return list(self.comm.allgather(obj))


_hooked: list[Any] = []  # the communicators whose ranks abort the job on an uncaught exception


def _abort_on_uncaught_exception(comm: Any, rank: int, size: int) -> None:
    """An exception that ends this rank's program ends the whole job (MPI_Abort), instead of
    leaving the other ranks waiting in their next collective. A DistributedError is raised by
    every rank together, so those ranks exit normally."""
    if _hooked:
        return
    _hooked.append(comm)
    previous = sys.excepthook

    def hook(exc_type: Any, exc: Any, tb: Any) -> None:
        previous(exc_type, exc, tb)
        if isinstance(exc, DistributedError):
            return
        sys.stderr.write(
            f"rnnkit.distributed: rank {rank} raised {exc_type.__name__} outside a training "
            f"step; aborting all {size} ranks\n"
        )
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = hook


def launched_by_mpi() -> int:
    """The number of ranks an MPI launcher (``mpiexec -n N``) started this process among,
    read from the launcher's environment variables; 0 when not started by one."""
    for var in _LAUNCHER_SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def init() -> Communicator:
    """The communicator of this process: an :class:`MPICommunicator` over all ranks when it
    runs under an MPI launcher (``mpiexec``) with mpi4py installed, else :class:`SingleProcess`.

    Under ``mpiexec -n N`` with N > 1 but without mpi4py, raises ImportError: N independent
    copies of a training run would be a silent mistake.
    """
    n = launched_by_mpi()
    if n == 0:
        return SingleProcess()
    try:
        import mpi4py  # noqa: F401  (optional: only under a launcher)
    except ImportError:
        if n > 1:
            raise ImportError(
                f"rnnkit.distributed.init: this process is one of {n} started by mpiexec, but "
                'mpi4py is not installed; pip install "rnnkit[mpi]"'
            ) from None
        return SingleProcess()
    return MPICommunicator()
