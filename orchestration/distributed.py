"""A multi-process, multi-node job that survives preemption and time limits.

``DistributedCall(fn, args, finished, finished_args)`` runs ``fn(*args)`` in every task of a
job with torch's env:// variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
exported from ``submitit.helpers.TorchDistributedEnvironment``, the port from ``master_port``.
``fn`` owns SIGUSR2/SIGTERM: all of its ranks must agree to stop, save a checkpoint together
and return (a handler on rank 0 alone, as submitit installs, would leave the other ranks in
a collective), and its handlers must pass each signal on to the handler they replaced, which
records it here. After ``fn`` returns, ``finished(*finished_args)`` says whether the work is
done. If not, the signal says why it stopped:

- SIGUSR2, SLURM's warning before a time limit or a preemption (``--signal=USR2@...``):
  rank 0 hands it back to submitit, which requeues the job (at most
  ``Resources.max_requeues`` times); the requeued job builds a new process group and ``fn``
  resumes from its own checkpoint.
- SIGTERM alone, ``scancel`` (``rmat cancel``): the job ends for good with its checkpoint on
  disk; a later submission resumes from it. Requeued, a cancel would come back 15 s later,
  every time, since a requeue after a signal does not count against ``max_requeues``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import submitit

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
# Rank 0's rendezvous port, from the job id: below Linux's ephemeral range (32768-60999), where any
# client socket on the node may hold a port when rank 0 binds it; submitit draws from 20000-60000.
# Lightning does the same (15000 + the job id's last four digits).
PORT_RANGE = (15000, 32768)


def master_port(job_id: str) -> int:
    """The port every task of job ``job_id`` agrees on without talking: a function of the id."""
    low, high = PORT_RANGE
    return low + int("".join(c for c in job_id if c.isdigit()) or "0") % (high - low)


class DistributedCall(submitit.helpers.Checkpointable):
    """One task of a distributed job; requeued by submitit when stopped before it finished."""

    def __init__(self, fn: Callable[..., Any], args: tuple, finished: Callable[..., bool],
                 finished_args: tuple) -> None:
        self.fn, self.args = fn, args
        self.finished, self.finished_args = finished, finished_args

    def __call__(self) -> Any:
        os.environ.setdefault("MASTER_PORT", str(master_port(submitit.JobEnvironment().job_id)))
        env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        submitits = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}  # USR2: checkpoint() and requeue
        received: list[int] = []

        def record(signum: int, frame: Any) -> None:
            received.append(signum)
            if signal.getsignal(signum) is record and callable(submitits[signum]):
                submitits[signum](signum, frame)  # fn has not taken the signal over yet (still starting)

        for sig in STOP_SIGNALS:
            signal.signal(sig, record)
        result = self.fn(*self.args)
        if self.finished(*self.finished_args):
            return result
        if signal.SIGUSR2 not in received:
            return None  # cancelled (or stopped for no signal): the job ends, a later submission resumes
        requeue = submitits[signal.SIGUSR2]
        signal.signal(signal.SIGUSR2, requeue)
        if env.rank == 0:
            # The checkpoint is on disk already; submitit pickles this call again and requeues the job.
            os.kill(os.getpid(), signal.SIGUSR2)
        return None
