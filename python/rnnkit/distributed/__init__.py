"""Data-parallel training on several processes or machines, over MPI.

* :mod:`.comm`: the :class:`Communicator` interface (``rank``, ``size``, ``allreduce_``,
  ``broadcast_``, ``barrier``, ``allgather``), :class:`SingleProcess` and
  :class:`MPICommunicator` (mpi4py: ``pip install "rnnkit[mpi]"``), and :func:`init`.
* :mod:`.data_parallel`: :class:`DataParallel` (a module trained on all ranks, one allreduce
  per step), :func:`shard_indices`.
* :class:`DistributedError` (a rank failed: raised on every rank), :class:`RankMismatchError`
  (the ranks hold different models or rnnkit versions).

``mpiexec -n N python train.py`` with ``comm = rnnkit.distributed.init()`` and
``fit(DataParallel(model, comm), ..., comm=comm)``. Nothing here imports mpi4py until an
:class:`MPICommunicator` is made.

The layer sits between models and train: it uses nn (and below); train's fit loop uses it.
"""

from .comm import (
    Communicator,
    DistributedError,
    MPICommunicator,
    RankMismatchError,
    SingleProcess,
    init,
    launched_by_mpi,
)
from .data_parallel import DataParallel, Synced, shard_array, shard_indices

__all__ = [
    "Communicator",
    "SingleProcess",
    "MPICommunicator",
    "init",
    "launched_by_mpi",
    "DataParallel",
    "DistributedError",
    "RankMismatchError",
    "Synced",
    "shard_indices",
    "shard_array",
]
