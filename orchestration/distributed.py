"""A multi-process, multi-node job that survives preemption and time limits.

``DistributedCall(fn, args, finished, finished_args)`` runs ``fn(*args)`` in every task of a
job with torch's env:// variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
exported from ``submitit.helpers.TorchDistributedEnvironment``. ``fn`` owns SIGUSR2/SIGTERM:
all of its ranks must agree to stop, save a checkpoint together and return (a handler on
rank 0 alone, as submitit installs, would leave the other ranks in a collective).
After ``fn`` returns, ``finished(*finished_args)`` says whether the work is done; if not,
rank 0 hands the signal back to submitit, which requeues the job (at most
``Resources.max_requeues`` times); the requeued job builds a new process group and ``fn``
resumes from its own checkpoint.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import submitit


class DistributedCall(submitit.helpers.Checkpointable):
    """One task of a distributed job; requeued by submitit when stopped before it finished."""

    def __init__(self, fn: Callable[..., Any], args: tuple, finished: Callable[..., bool],
                 finished_args: tuple) -> None:
        self.fn, self.args = fn, args
        self.finished, self.finished_args = finished, finished_args

    def __call__(self) -> Any:
        env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's: checkpoint() and requeue, on rank 0 only
        result = self.fn(*self.args)
        if self.finished(*self.finished_args):
            return result
        signal.signal(signal.SIGUSR2, requeue)
        if env.rank == 0:
            # The checkpoint is on disk already; submitit pickles this call again and requeues the job.
            os.kill(os.getpid(), signal.SIGUSR2)
        return None
