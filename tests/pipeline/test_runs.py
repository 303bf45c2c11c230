"""``rmat status`` groups a run's job records by their kind, never by the words they display."""

from __future__ import annotations

from orchestration.records import JobRecord
from pipeline.runs import latest_per_stage


def record(stage: str, job_id: str, kind: str, what: str) -> JobRecord:
    return JobRecord(stage=stage, job_id=job_id, cluster="local", folder="/nowhere", kind=kind, what=what,
                     submitted=float(job_id))


def test_unit_tasks_join_their_stage_job_and_a_resubmitted_stage_starts_afresh():
    records = [record("ingest", "1", "stage", "units to run: 3 of 3"),  # a stage whose words start like units
               record("ingest", "2", "units", "units 0-1 of 3, attempt 1"),
               record("ingest", "3", "units", "the last unit"),
               record("ingest", "4", "stage", "1 of 3 units to run"),
               record("ingest", "5", "units", "units 2-2 of 3, attempt 1")]
    grouped = latest_per_stage(records)
    assert [r.job_id for r in grouped["ingest"]] == ["4", "5"]
    assert [r.job_id for r in latest_per_stage(records[:3])["ingest"]] == ["1", "2", "3"]
