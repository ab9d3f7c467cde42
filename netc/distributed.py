"""Data-parallel training over MPI: what each of N processes (ranks) does so that together they
take the steps one process would take with the same global batch. Guide: docs/distributed.md.

    mpiexec -n 4 netc train examples/lenet5.net --batch 256

join() gives Solo, a team of one that calls the model as before, unless mpiexec (or srun)
started several ranks; then Team, over mpi4py (`pip install 'netc[mpi]'`), imported only then.
A rank takes its slice of every global batch (shard), computes its gradient, and one in-place
allreduce of the model's contiguous gradient region (Model.gradient) sums them; every rank then
applies the same update to the same parameters, broadcast from rank 0 at the start. Evaluation
is sharded and summed; BatchNorm's running statistics are averaged at the end of each epoch,
before the evaluation and the checkpoint.

Failures. A collective waits for every rank, so a rank that stops alone must end the job:
Team.end() calls MPI_Abort for any failure the ranks did not reach together. Diverging and
Ctrl-C are reached together: the per-step sum carries each rank's Ctrl-C flag, every rank
stops after the same step, and settle() holds them until rank 0 has written its checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time

import numpy as np

from .errors import NetcError
from .runtime import Model

INSTALL = "pip install 'netc[mpi]'"  # mpi4py, and MPICH with its mpiexec, from wheels
# The job's size as launchers set it in each rank's environment, read before MPI is touched:
# MPICH's and Intel MPI's mpiexec and srun --mpi=pmi2 (PMI), Open MPI's mpirun.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
ABORT_PAUSE = 0.5  # seconds a failing rank waits for its message to reach mpiexec's output


class Stopped(KeyboardInterrupt):
    """Ctrl-C on some rank, acted on by every rank after the same step."""


def launched_size() -> int:
    """How many ranks the launcher started this process among (1 outside mpiexec)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def join() -> Solo | Team:
    """This process's team: Solo outside mpiexec (or with -n 1), else Team over mpi4py."""
    size = launched_size()
    if size == 1:
        return SOLO
    try:
        from mpi4py import MPI
    except ImportError:
        raise NetcError(f"this process is one of {size} ranks started by mpiexec, but mpi4py "
                        "is not installed", hint=INSTALL) from None
    return Team(MPI)


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """[lo, hi) of rank's share of n items: contiguous, sizes differing by at most one."""
    return n * rank // size, n * (rank + 1) // size


class Solo:
    """One process: the model's own fused step, no communication."""

    rank, size, root = 0, 1, True

    def describe(self, threads: int) -> str:
        return ""

    def shard(self, items):
        return items

    def sum(self, values: np.ndarray) -> np.ndarray:
        return values

    def train_step(self, model: Model, x: np.ndarray, y, total: int, lr: float,
                   hyper: dict) -> float:
        return model.train_step(x, y, lr=lr, **hyper)

    def share_state(self, model: Model) -> None:
        pass

    def average_buffers(self, model: Model) -> None:
        pass

    def agree(self, flag: bool) -> bool:
        return flag

    def settle(self) -> None:
        pass

    def deferred_interrupts(self):
        return contextlib.nullcontext()


SOLO = Solo()


class Team:
    """This rank of an MPI job (COMM_WORLD). Every method is collective unless it says not:
    all ranks call it, in the same order."""

    def __init__(self, mpi):
        self.mpi, self.comm = mpi, mpi.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.root = self.rank == 0
        self.local = self.comm.Split_type(mpi.COMM_TYPE_SHARED).Get_size()  # ranks on this host
        self.settled = False  # a failure every rank reached together (settle)
        self.interrupted = False  # Ctrl-C seen here, not yet shared

    def default_threads(self) -> int:
        """Not collective: this host's cores shared among its ranks."""
        return max(1, len(os.sched_getaffinity(0)) // self.local)

    def describe(self, threads: int) -> str:
        """For rank 0's header: the ranks, and each one's process id and host, which mpiexec's
        own message names when a rank is killed."""
        where = self.comm.gather(f"{os.getpid()}@{socket.gethostname()}")
        return (f"{self.size} ranks × {threads} thread{'s' * (threads != 1)}"
                + (f" (pids {', '.join(where)})" if self.root else ""))

    def shard(self, items):
        """Not collective: this rank's contiguous part of a global batch or a split."""
        lo, hi = shard_bounds(len(items), self.rank, self.size)
        return items[lo:hi]

    def sum(self, values: np.ndarray) -> np.ndarray:
        """values (float64) summed over the ranks, in place."""
        self.comm.Allreduce(self.mpi.IN_PLACE, values, op=self.mpi.SUM)
        return values

    def train_step(self, model: Model, x: np.ndarray, y, total: int, lr: float,
                   hyper: dict) -> float:
        """One step of the global batch, of which x is this rank's part and `total` the size:
        the mean loss over all of it. The gradient of a mean over `total` samples is the sum of
        each rank's mean gradient weighted by its share; the update is skipped, on every rank,
        when the loss is not finite (fit then reports the divergence)."""
        local = model.loss_and_grad(x, y)
        loss, interrupted = self.sum(np.array([local * len(x), self.interrupted]))
        if interrupted:
            raise Stopped
        if np.isfinite(loss):
            gradient = model.gradient
            gradient *= len(x) / total
            self.comm.Allreduce(self.mpi.IN_PLACE, gradient, op=self.mpi.SUM)
            model.update(lr=lr, **hyper)
        return float(loss / total)

    def share_state(self, model: Model) -> None:
        """Rank 0's parameters, running statistics and optimizer state on every rank."""
        for views in (model.params, model.buffers, model.optimizer_state):
            for view in views.values():
                self.comm.Bcast(view, root=0)

    def average_buffers(self, model: Model) -> None:
        """BatchNorm's running statistics, per rank during the steps, averaged."""
        for view in model.buffers.values():
            self.comm.Allreduce(self.mpi.IN_PLACE, view, op=self.mpi.SUM)
            view /= self.size

    def agree(self, flag: bool) -> bool:
        """Rank 0's answer to a question only it can answer (a file on its disk), for all."""
        return self.comm.bcast(flag, root=0)

    def settle(self) -> None:
        """Every rank reached the same failure: wait here until rank 0 has saved, so that no
        rank's exit aborts it mid-write, and let the ranks end normally (end)."""
        self.comm.Barrier()
        self.settled = True

    @contextlib.contextmanager
    def deferred_interrupts(self):
        """Ctrl-C (mpiexec passes it to every rank) only sets a flag, shared at the next step:
        a rank that stopped on its own would leave the others waiting in a collective."""
        def note(signum, frame):
            self.interrupted = True
        previous = signal.signal(signal.SIGINT, note)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def end(self, code: int) -> int:
        """Not collective: a rank failing alone ends the whole job now (MPI_Abort), else the
        others would wait for it forever; a failure all reached ends each rank normally."""
        if code and not self.settled:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            # mpiexec forwards each rank's output on its own time, and the abort kills the
            # forwarding too: without a pause the message saying why was lost now and then
            time.sleep(ABORT_PAUSE)
            self.comm.Abort(code)
        return code
