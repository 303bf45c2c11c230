"""Turn a picklable call into a job: on SLURM, as local processes, or in this process (debug).

One place builds submitit executors from ``Resources``, so every stage's job carries the
same parameters whether it is submitted from a laptop or from inside another job.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import submitit

from orchestration.resources import Resources

CLUSTERS = ("slurm", "local", "debug")
CPUS_ENV = "RMAT_CPUS_PER_TASK"  # the cores each task of a job was given (its Resources.cpus_per_task)
# Clusters with a scheduler and accounting: every job is queued at once, starts when its dependencies
# succeeded, and accounting knows how it ended. The others run a job as it is submitted, and the
# submitter waits for it and records how it ended.
SCHEDULED = {"slurm"}
# A task that fails ends its job's other tasks: a rank that dies before it joins the process group
# would otherwise leave the rest waiting for it (30 minutes in torch) and then the job's time limit.
SRUN_ARGS = ["--kill-on-bad-exit=1"]
# States after which a job will not change any more (sacct's names; submitit adds its own for local jobs).
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
            "DEADLINE", "REVOKED", "DONE", "INTERRUPTED", "FINISHED"}  # not PREEMPTED: it may be requeued


class Launcher:
    """Submits calls as jobs of one kind of cluster, with logs and pickles under ``folder``."""

    def __init__(self, cluster: str, folder: str | os.PathLike) -> None:
        if cluster not in CLUSTERS:
            raise ValueError(f"cluster {cluster!r}: choose one of {', '.join(CLUSTERS)}")
        self.cluster = cluster
        self.folder = Path(folder)
        self.scheduled = cluster in SCHEDULED

    def dependencies(self, job_ids: Sequence[str]) -> list[str]:
        """What a job can wait for: earlier jobs where a scheduler queues them, none where jobs run as submitted."""
        return list(job_ids) if self.scheduled else []

    def describe(self, resources: Resources, name: str, after: Sequence[str] = ()) -> str:
        """What a job of these resources would get here: sbatch flags, or local processes (``--dry-run``)."""
        if self.scheduled:
            return "sbatch " + " ".join(resources.sbatch_flags(name, list(after)))
        return f"{self.cluster}: {resources.nodes * resources.tasks_per_node} process(es), {resources.time_min} min"

    def executor(self, resources: Resources, name: str, after: Sequence[str] = (),
                 array_parallelism: int = 0) -> submitit.Executor:
        """A submitit executor for jobs with these resources that start after ``after`` succeeded."""
        folder = self.folder / name
        if self.scheduled:
            ex = submitit.SlurmExecutor(folder, max_num_timeout=resources.max_requeues)
            params = resources.slurm_parameters(name, list(after))
            if array_parallelism:
                params["array_parallelism"] = array_parallelism
            ex.update_parameters(**params, srun_args=SRUN_ARGS)
            return ex
        # One machine: a job's nodes x tasks become that many local processes.
        ex = submitit.AutoExecutor(folder, cluster=self.cluster, local_max_num_timeout=resources.max_requeues)
        if self.cluster == "local":
            ex.update_parameters(name=name, timeout_min=resources.time_min, cpus_per_task=resources.cpus_per_task,
                                 tasks_per_node=resources.nodes * resources.tasks_per_node)
        return ex

    def submit(self, fn: Callable[..., Any], *args: Any, resources: Resources, name: str,
               after: Sequence[str] = ()) -> submitit.Job:
        """Submit ``fn(*args)`` as one job (of ``resources.nodes`` x ``tasks_per_node`` tasks)."""
        with submission_env(resources):
            return self.executor(resources, name, after).submit(fn, *args)

    def submit_array(self, fn: Callable[..., Any], args: Sequence[tuple], resources: Resources, name: str,
                     parallelism: int = 0) -> list[submitit.Job]:
        """Submit ``fn(*a)`` for each ``a`` in ``args`` as one job array (one task each)."""
        ex = self.executor(resources, name, array_parallelism=parallelism)
        with submission_env(resources), ex.batch():
            jobs = [ex.submit(fn, *a) for a in args]
        return jobs


@contextlib.contextmanager
def submission_env(resources: Resources) -> Iterator[None]:
    """The environment a job is submitted with (sbatch and local jobs pass it on).

    A job submitted from a job inherits SLURM_* variables (task counts, memory, GPUs)
    that would shape the new job like the old one; submitit's clean_env hides them.
    SLURM_CONF is kept: it names the cluster, not the job. Calls are pickled by reference,
    so the job must import them from the same trees as this process: PYTHONPATH becomes
    this process's sys.path (the project's tree must not lose to another installed copy).
    CPUS_ENV tells every task how many cores it was given, where no SLURM_CPUS_PER_TASK
    does (local processes): a task that starts one thread per core of a shared machine
    crawls (an evaluation of a tiny model took minutes instead of seconds).
    """
    keep = {k: os.environ[k] for k in ("SLURM_CONF",) if k in os.environ}
    keep["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    keep[CPUS_ENV] = str(resources.cpus_per_task)
    outer = {k: os.environ[k] for k in keep if k in os.environ}
    with submitit.helpers.clean_env():
        os.environ.update(keep)
        try:
            yield
        finally:
            for key in keep:  # clean_env restores the outer values of what it hid; these, we do
                os.environ.pop(key, None)
            os.environ.update(outer)


def refresh(jobs: Sequence[submitit.Job]) -> None:
    """One accounting query for every job's state (submitit shares it between SLURM jobs)."""
    slurm = [j for j in jobs if isinstance(j, submitit.SlurmJob)]
    if slurm:
        slurm[0].get_info(mode="force")


def wait_each(jobs: Sequence[submitit.Job], poll_s: float = 2.0) -> Iterator[submitit.Job]:
    """Yield each job once it has finished (done, failed or cancelled), polling every ``poll_s``."""
    pending = list(jobs)
    while pending:
        refresh(pending)
        still = []
        for job in pending:
            if job.done():
                yield job
            else:
                still.append(job)
        pending = still
        if pending:
            time.sleep(poll_s)
