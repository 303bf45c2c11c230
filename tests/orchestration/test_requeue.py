"""A 2-node job with a short time limit is signalled, checkpoints, is requeued and resumes exactly."""

from __future__ import annotations

import json
import time

import dist_workload

from orchestration.distributed import DistributedCall
from orchestration.launcher import Launcher
from orchestration.resources import Resources

STEPS = 60


def test_time_limit_checkpoint_requeue_resume(slurm_cluster, tmp_path):
    state, log = str(tmp_path / "state.json"), tmp_path / "steps.jsonl"
    call = DistributedCall(dist_workload.run_steps, (state, str(log), STEPS, 0.5), dist_workload.finished,
                           (state, STEPS))
    # One minute, USR2 45 s before its end: SLURM signals after 15-45 s (it checks limits every ~30 s),
    # well before the 30 s of work are done. On a loaded machine a start-up takes 20 s of each attempt's
    # 15-45 s: requeues to spare, so that what is tested is the resume, not the machine's load.
    resources = Resources(time_min=1, nodes=2, tasks_per_node=2, signal_delay_s=45, max_requeues=8)
    job = Launcher("slurm", tmp_path / "logs").submit(call, resources=resources, name="requeue")
    start = time.time()
    assert job.results()[0] == STEPS  # rank 0 ends at the last step
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1)), "a step was lost or repeated"
    assert {r["world"] for r in records} == {4}
    expected, value = [], 0.0
    for step in range(STEPS):
        value = dist_workload.next_value(value, step, 4)
        expected.append(value)
    assert [r["value"] for r in records] == expected  # bit for bit, as if never interrupted
    restarts = [i for i in range(1, STEPS) if records[i]["restart"] != records[i - 1]["restart"]]
    assert restarts, "the job was never requeued"
    gaps = [records[i]["time"] - records[i - 1]["time"] for i in restarts]
    print(f"\nrequeues: {len(restarts)}, requeue-to-resume gaps: {[f'{g:.1f}' for g in gaps]} s, "
          f"submit to result {time.time() - start:.0f} s")
