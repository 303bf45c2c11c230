"""rmat submit/status/cancel on the real one-machine SLURM cluster: failures and cancellation.

A whole pipeline that succeeds, its resubmission and a deleted shard: test_submit_pipeline.py.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from pipeline_helpers import rmat, wait_until_finished, write_pipeline

from orchestration.records import RecordBook


def test_a_unit_with_bad_input_fails_with_its_error_and_log(slurm_cluster, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    config = write_pipeline(tmp_path, [{"name": "j", "kind": "jsonl", "urls": [str(bad)]}])
    assert rmat("submit", str(config))[0] == 0
    run_dir = tmp_path / "runs" / "tiny"
    state = wait_until_finished(run_dir)
    by_stage = {r.stage: state[r.job_id] for r in RecordBook(run_dir / "jobs").all() if r.kind == "stage"}
    assert by_stage["ingest"] == "FAILED"
    # kill_invalid_depend: the stages after a failed one are cancelled, not left pending forever
    assert all(by_stage[s].startswith("CANCELLED") for s in ("tokenizer", "shards", "train", "evaluate")), by_stage
    _, status = rmat("status", str(run_dir))
    unit_line = next(line for line in status.splitlines() if line.strip().startswith("units 0-0"))
    assert " FAILED " in unit_line
    error = status.splitlines()[status.splitlines().index(unit_line) + 1]
    assert "bad.jsonl:2: malformed JSON" in error
    log = Path(error.split("(stderr ")[1].rstrip(")"))
    assert "malformed JSON" in log.read_text()


def test_cancel_stops_running_and_queued_jobs(slurm_cluster, tmp_path):
    slow = {"name": "slow", "kind": "command", "urls": ["sleep 300"]}
    config = write_pipeline(tmp_path, [slow])
    assert rmat("submit", str(config))[0] == 0
    run_dir = tmp_path / "runs" / "tiny"
    deadline = time.time() + 60
    while not [r for r in RecordBook(run_dir / "jobs").all() if r.kind == "units"]:
        assert time.time() < deadline, "the ingest driver never submitted its unit"
        time.sleep(0.5)
    time.sleep(2)  # the unit is running its `sleep`
    start = time.time()
    code, out = rmat("cancel", str(run_dir))
    assert code == 0 and out.count("cancelled") == 7, out  # ingest driver, its unit, the five later stages
    state = wait_until_finished(run_dir, timeout_s=60)
    assert all(s.startswith("CANCELLED") for s in state.values()), state
    assert time.time() - start < 60
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout == ""
