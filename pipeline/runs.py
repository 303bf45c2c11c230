"""``rmat status`` and ``rmat cancel``: a submitted run's jobs, their states and logs, its outputs."""

from __future__ import annotations

import os
from pathlib import Path

from orchestration.launcher import FINISHED
from orchestration.records import JobRecord, RecordBook, last_error, states
from pipeline.config import ConfigError, load_config
from pipeline.pipeline_config import PipelineConfig
from pipeline.stage_graph import build_graph
from pipeline.stages import Stage
from pipeline.submit import CONFIG_NAME
from pipeline.sweep import POINT_STAGES, grid
from pipeline.train.tracking import saved_run_id

DEFAULT_WORK_DIR = "runs/pipelines"


def find_run(run: str | None) -> Path:
    """A run folder: a path, a name under runs/pipelines, or (None) the most recently submitted run."""
    if run is None:
        found = sorted(Path(DEFAULT_WORK_DIR).glob(f"*/{CONFIG_NAME}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"no run under {DEFAULT_WORK_DIR}; name one: rmat status RUN_FOLDER")
        return found[-1].parent
    for candidate in (Path(run), Path(DEFAULT_WORK_DIR) / run):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise ConfigError(f"{run!r} is not a submitted run (no {CONFIG_NAME} in {run} or {DEFAULT_WORK_DIR}/{run})")


def latest_per_stage(records: list[JobRecord]) -> dict[str, list[JobRecord]]:
    """Per stage, its last submission: the stage's job and the unit tasks that job submitted."""
    out: dict[str, list[JobRecord]] = {}
    for r in records:  # oldest first: a stage job starts a new list, its units join it
        if r.kind == "stage" or r.stage not in out:
            out[r.stage] = [r]
        else:
            out[r.stage].append(r)
    return out


def status(run_dir: Path) -> str:
    """Each stage: its job's state and logs (with its unit tasks), then whether its output is complete."""
    cfg = load_config(PipelineConfig, run_dir / CONFIG_NAME)
    records = RecordBook(run_dir / "jobs").all()
    state = states(records)
    lines = [f"run {run_dir}"]
    graph = build_graph(cfg, records[0].cluster if records else "slurm")
    grouped = latest_per_stage(records)
    # Columns as wide as their longest entry ("CANCELLED by 0", a unit task's words): job ids line up.
    shown = [r for jobs in grouped.values() for r in jobs]
    width = max([12, *(len(state[r.job_id]) for r in shown)])
    label_width = max([10, *(len(s.name) for s in graph), *(len(f"  {r.what}") for r in shown if r.kind == "units")])
    for stage in graph:
        output = f"output {'complete' if stage.complete else 'incomplete: ' + stage.detail}"
        jobs = grouped.get(stage.name, [])
        if not jobs:
            lines.append(f"{stage.name:<{label_width}} {'-':<{width}} (not submitted)  {output}")
            continue
        for i, r in enumerate(jobs):
            label = stage.name if i == 0 else f"  {r.what}"
            lines.append(f"{label:<{label_width}} {state[r.job_id]:<{width}} job {r.job_id}  log {r.logs()[0]}"
                         + (f"  {output}" if i == 0 else ""))
            if state[r.job_id].startswith(("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")):
                lines.append(f"{'':<{label_width + 2}}error: {last_error(r)}  (stderr {r.logs()[1]})")
    if cfg.sweep:
        lines += point_lines(cfg, graph, {name: state[jobs[0].job_id] for name, jobs in grouped.items()})
    return "\n".join(lines)


def point_lines(cfg: PipelineConfig, graph: list[Stage], job_states: dict[str, str]) -> list[str]:
    """A line per sweep point: its values, where it stands (complete, or its first incomplete stage and the
    state of that stage's last job), and its training's MLflow run id."""
    by_name = {s.name: s for s in graph}
    rows = []
    for p in grid(cfg):
        stages = [by_name[p.stage(name)] for name in POINT_STAGES]
        pending = next((s for s in stages if not s.complete), None)
        last_job = f"last job {job_states[pending.name]}" if pending and pending.name in job_states else "not submitted"
        where = "complete" if pending is None else f"{pending.name} incomplete, {last_job}"
        rows.append([f"p{p.index}", p.label, where, f"mlflow run {saved_run_id(stages[0].output) or '-'}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [f"sweep points ({len(rows)})"] + ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                                              .rstrip() for row in rows]


def cancel(run_dir: Path, log=print) -> list[str]:
    """Cancel every job of the run that has not finished; returns their ids.

    Stage jobs go first, so that a data-prep driver cannot submit another unit array; jobs
    waiting on a cancelled one are cancelled by SLURM (DependencyParameters=kill_invalid_depend).
    """
    book = RecordBook(run_dir / "jobs")
    cancelled: list[str] = []
    for _ in range(2):  # a second pass catches unit arrays submitted while the first ran
        records = [r for r in book.all() if r.accounted and r.job_id not in cancelled]
        state = states(records)
        live = [r for r in records if state[r.job_id].split()[0] not in FINISHED]
        for r in sorted(live, key=lambda r: r.kind == "units"):
            r.job().cancel(check=False)
            cancelled.append(r.job_id)
            log(f"cancelled {r.stage} job {r.job_id} ({state[r.job_id]})")
    if not cancelled:
        log(f"nothing to cancel in {os.fspath(run_dir)}")
    return cancelled
