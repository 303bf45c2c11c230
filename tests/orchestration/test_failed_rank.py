"""A rank that fails ends its whole job, instead of leaving the others in a collective until the time limit."""

from __future__ import annotations

import subprocess
import time

import dist_workload

from orchestration.distributed import DistributedCall
from orchestration.launcher import FINISHED, Launcher
from orchestration.resources import Resources


def test_a_rank_that_fails_ends_every_task_of_its_job(slurm_cluster, tmp_path):
    call = DistributedCall(dist_workload.crash_one_rank, (), dist_workload.never_finished, ())
    resources = Resources(time_min=10, nodes=2, tasks_per_node=1, max_requeues=0)
    job = Launcher("slurm", tmp_path / "logs").submit(call, resources=resources, name="crash")
    start = time.time()
    while subprocess.run(["squeue", "-h", "-j", job.job_id], capture_output=True, text=True).stdout.strip():
        # Start-up takes 5-20 s here; without the kill, rank 0 would wait out the 10-minute limit.
        assert time.time() - start < 120, f"job {job.job_id} still queued or running 120 s after its rank failed"
        time.sleep(1)
    while (state := _accounted_state(job.job_id)) not in FINISHED:  # accounting may lag the queue
        assert time.time() - start < 180, f"accounting still says {state!r} for job {job.job_id}"
        time.sleep(1)
    assert state == "FAILED", state
    errors = "".join(log.read_text() for log in (tmp_path / "logs" / "crash").glob("*_log.err"))
    assert "rank 1 failed on purpose" in errors, errors


def _accounted_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True)
    return out.stdout.strip()
