"""rmat submit/status/cancel on the real one-machine SLURM cluster: data-prep stages as job arrays."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from pipeline_helpers import code_source, rmat, tiny_corpus, wait_until_finished, write_pipeline

from orchestration.records import RecordBook

STAGES = ("ingest", "tokenizer", "shards")


@pytest.fixture
def prepared(slurm_cluster, tmp_path):
    """The tiny data prep submitted once and run to the end: (config path, run folder)."""
    config = write_pipeline(tmp_path, [code_source(tiny_corpus(tmp_path))])
    code, out = rmat("submit", str(config))
    assert code == 0, out
    run_dir = tmp_path / "runs" / "tiny"
    wait_until_finished(run_dir)
    return config, run_dir


def stage_lines(status: str) -> dict[str, str]:
    return {line.split()[0]: line for line in status.splitlines() if line.split()[0] in STAGES}


def test_every_stage_completes_and_status_says_so(prepared):
    _, run_dir = prepared
    code, status = rmat("status", str(run_dir))
    assert code == 0
    lines = stage_lines(status)
    assert sorted(lines) == sorted(STAGES)
    for stage, line in lines.items():
        assert " COMPLETED " in line and "output complete" in line, status
        assert Path(line.split(" log ")[1].split()[0]).is_file(), f"{stage}: its log is not there"
    units = [line for line in status.splitlines() if line.strip().startswith("units ")]
    assert len(units) == 4 and all(" COMPLETED " in u for u in units), status  # 2 tasks each for ingest, shards


def test_resubmitting_a_complete_run_submits_nothing(prepared):
    config, run_dir = prepared
    before = RecordBook(run_dir / "jobs").all()
    code, out = rmat("submit", str(config))
    assert code == 0 and "nothing to submit" in out
    assert RecordBook(run_dir / "jobs").all() == before


def test_a_deleted_shard_resubmits_only_its_unit(prepared, tmp_path):
    config, run_dir = prepared
    shards = sorted((tmp_path / "data").glob("shards-*/*.tar"))
    shard = shards[-1]
    original = shard.read_bytes()
    shard.unlink()
    known = {r.job_id for r in RecordBook(run_dir / "jobs").all()}
    code, out = rmat("submit", str(config))
    assert code == 0, out
    assert [line.split()[0] for line in out.splitlines() if " job " in line] == ["shards"]
    wait_until_finished(run_dir)
    new = [r for r in RecordBook(run_dir / "jobs").all() if r.job_id not in known]
    assert [r.stage for r in new] == ["shards", "shards"]
    assert new[0].what == f"stage: 1 of {len(shards)} units to run"
    assert new[1].what == "units 0-0 of 1, attempt 1"  # the executor is handed only the missing unit
    assert shard.read_bytes() == original


def test_a_unit_with_bad_input_fails_with_its_error_and_log(slurm_cluster, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    config = write_pipeline(tmp_path, [{"name": "j", "kind": "jsonl", "urls": [str(bad)]}])
    assert rmat("submit", str(config))[0] == 0
    run_dir = tmp_path / "runs" / "tiny"
    state = wait_until_finished(run_dir)
    by_stage = {r.stage: state[r.job_id] for r in RecordBook(run_dir / "jobs").all() if r.what.startswith("stage")}
    assert by_stage["ingest"] == "FAILED"
    # kill_invalid_depend: the stages after a failed one are cancelled, not left pending forever
    assert by_stage["tokenizer"].startswith("CANCELLED") and by_stage["shards"].startswith("CANCELLED")
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
    while not [r for r in RecordBook(run_dir / "jobs").all() if r.what.startswith("units")]:
        assert time.time() < deadline, "the ingest driver never submitted its unit"
        time.sleep(0.5)
    time.sleep(2)  # the unit is running its `sleep`
    start = time.time()
    code, out = rmat("cancel", str(run_dir))
    assert code == 0 and out.count("cancelled") == 4, out  # ingest driver, its unit, tokenizer, shards
    state = wait_until_finished(run_dir, timeout_s=60)
    assert all(s.startswith("CANCELLED") for s in state.values()), state
    assert time.time() - start < 60
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout == ""
