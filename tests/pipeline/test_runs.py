"""``rmat status`` groups a run's job records by their kind, lines up its columns, and loads no heavy library."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from orchestration.records import JobRecord, RecordBook
from pipeline.config import to_yaml
from pipeline.pipeline_config import load_pipeline
from pipeline.runs import latest_per_stage
from pipeline.submit import CONFIG_NAME
from tests.pipeline.conftest import REPO, pipeline_yaml, rmat


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


def submitted_run(tmp_path) -> Path:
    """A run folder as ``rmat submit`` leaves it (the resolved config), with local job records."""
    cfg = load_pipeline(pipeline_yaml(tmp_path))
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / CONFIG_NAME).write_text(to_yaml(cfg))
    book = RecordBook(run_dir / "jobs")
    for i, (stage, kind, what, state) in enumerate([
            ("ingest", "stage", "", "COMPLETED"),
            ("ingest", "units", "units 0-1 of 3, attempt 1", "COMPLETED"),
            ("train", "stage", "", "CANCELLED by 0")]):
        book.write(JobRecord(stage=stage, job_id=str(100 + i), cluster="local", folder=str(tmp_path / "logs"),
                             kind=kind, what=what, submitted=float(i), state=state))
    return run_dir


def test_status_and_cancel_load_neither_torch_nor_deepspeed_nor_mlflow(tmp_path):
    run_dir = submitted_run(tmp_path)
    probe = ("import sys, time; start = time.perf_counter(); from pipeline.cli import main; "
             f"main(['status', {str(run_dir)!r}]); main(['cancel', {str(run_dir)!r}]); "
             "print('seconds', time.perf_counter() - start); "
             "print('heavy', sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'deepspeed', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    print(next(line for line in out.stdout.splitlines() if line.startswith("seconds")))
    assert "heavy []" in out.stdout, out.stdout


def test_status_columns_line_up_whatever_the_state_text(tmp_path):
    code, out = rmat("status", str(submitted_run(tmp_path)))
    assert code == 0, out
    rows = [line for line in out.splitlines()[1:] if line.strip()]
    assert "CANCELLED by 0" in out and "units 0-1 of 3, attempt 1" in out, out
    columns = [re.search(r" (COMPLETED|CANCELLED by 0|-) +(job|\(not submitted)", line) for line in rows]
    assert all(columns), out
    assert len({c.start(1) for c in columns}) == 1 and len({c.start(2) for c in columns}) == 1, out
