"""``rmat submit``: the stages still incomplete, as jobs chained by ``afterok``.

On SLURM every job is queued at once and the scheduler starts each when the stages it
depends on succeeded. Local processes and debug (in this process) have no scheduler:
the stages run one after another and this command waits for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import submitit

from data_prep.atomic import write_atomic
from orchestration.launcher import Launcher
from orchestration.records import RecordBook, last_error
from pipeline.config import ConfigError, to_yaml
from pipeline.lineage import end_submission, start_submission
from pipeline.pipeline_config import PipelineConfig
from pipeline.stage_graph import build_graph
from pipeline.stages import Stage
from pipeline.sweep import POINT_STAGES, grid

CONFIG_NAME = "pipeline.yaml"


@dataclass
class Submitted:
    stage: str
    job_id: str
    stdout: str
    stderr: str
    state: str = ""  # final state, where this command waited for the job


def plan(cfg: PipelineConfig, cluster: str, parent_run_id: str = "") -> tuple[list[Stage], list[Stage]]:
    """(stages to submit, stages already complete); refused if a time limit cannot work on a scheduler.
    The stages' MLflow runs are children of the submission's run ``parent_run_id``."""
    graph = build_graph(cfg, cluster, parent_run_id)
    todo = [s for s in graph if not s.complete]
    refused = [s.refused for s in todo if s.refused]
    if refused and Launcher(cluster, ".").scheduled:
        raise ConfigError(refused[0] + "; nothing submitted")
    return todo, [s for s in graph if s.complete]


def describe(cfg: PipelineConfig, todo: list[Stage], done: list[Stage], cluster: str) -> str:
    """What would be submitted: the sweep's points, then per stage what it does, its dependencies, and what
    its job would get."""
    launcher = Launcher(cluster, ".")
    w = max(10, *(len(s.name) for s in todo + done))
    lines = describe_points(cfg, todo + done) if cfg.sweep else []
    lines += [f"{s.name:<{w}} complete, skipped ({s.output})" for s in done]
    for s in todo:
        after = [a for a in s.after if a in {t.name for t in todo}]
        lines.append(f"{s.name:<{w}} {s.detail}; after {', '.join(after) or 'nothing'}")
        lines.append(f"{'':<{w}} {launcher.describe(s.resources, s.name, [f'<{a}>' for a in after])}")
        if s.time_budget and launcher.scheduled:
            lines.append(f"{'':<{w}} {s.time_budget}")
    if not todo:
        lines.append("nothing to submit: every stage is complete")
    return "\n".join(lines)


def describe_points(cfg: PipelineConfig, stages: list[Stage]) -> list[str]:
    """A line per sweep point: its number, its values, whether it is complete, its training folder."""
    by_name = {s.name: s for s in stages}
    points = grid(cfg)
    rows = [[f"p{p.index}", p.label, "complete" if by_name[p.stage(POINT_STAGES[-1])].complete else "to run",
             f"({by_name[p.stage(POINT_STAGES[0])].output})"] for p in points]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [f"sweep: {len(points)} points ({' x '.join(str(len(v)) for v in cfg.sweep.values())})",
            *("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)]


def submit(cfg: PipelineConfig, cluster: str, log=print) -> list[Submitted]:
    """Submit every incomplete stage; on SLURM return at once, elsewhere after the stages ran.

    A submission with work to do is a parent run in the pipeline's MLflow store, whose
    children are the runs of its stages; it ends FAILED if a stage failed (or could not be
    submitted), else FINISHED: here once every stage ran, on a scheduler once every job is queued.
    """
    todo, done = plan(cfg, cluster)
    for s in done:
        log(f"{s.name:<10} complete, skipped")
    if not todo:
        log("nothing to submit: every stage is complete")
        return []
    lineage = start_submission(cfg, cluster, _save_config(cfg), log)
    out: list[Submitted] = []
    try:
        out = submit_stages(cfg, cluster, plan(cfg, cluster, lineage.parent_run_id)[0], log)
    finally:
        ok = len(out) == len(todo) and all(s.state in ("", "COMPLETED") for s in out)
        end_submission(lineage, "FINISHED" if ok else "FAILED", log)
    return out


def submit_stages(cfg: PipelineConfig, cluster: str, todo: list[Stage], log=print) -> list[Submitted]:
    """Submit ``todo`` in order as jobs recorded in the run folder. On a scheduler each waits for the jobs
    of the stages it comes after; here each runs to its end, and a failed one leaves out only the stages
    after it (a sweep's other points go on)."""
    launcher = Launcher(cluster, os.path.join(cfg.run_dir, "logs"))
    book = RecordBook(os.path.join(cfg.run_dir, "jobs"))
    ids: dict[str, str] = {}
    out: list[Submitted] = []
    not_run: set[str] = set()  # here, a stage after one that failed (a scheduler cancels those itself)
    for s in todo:
        if not_run & set(s.after):
            not_run.add(s.name)
            log(f"{s.name:<10} not run: after {', '.join(sorted(not_run & set(s.after)))}")
            continue
        after = launcher.dependencies([ids[a] for a in s.after if a in ids])
        job = launcher.submit(s.fn, *s.args, resources=s.resources, name=s.name, after=after)
        record = book.add(s.name, job, cluster, "stage", s.detail)
        ids[s.name] = str(job.job_id)
        sub = Submitted(s.name, str(job.job_id), *record.logs())
        out.append(sub)
        log(f"{s.name:<10} job {job.job_id}{' after ' + ','.join(after) if after else ''}  log {sub.stdout}")
        if not launcher.scheduled:
            sub.state = record.state = _wait(job, log)
            book.write(record)
            if sub.state != "COMPLETED":
                not_run.add(s.name)
                log(f"{s.name}: {sub.state}: {last_error(record)}\nstages after it not run; log {sub.stderr}")
    return out


def _wait(job: submitit.Job, log) -> str:
    try:
        summary = job.results()[0]  # rank 0's, for a job of several tasks
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError):
        return "FAILED"
    if summary:
        log(f"  {summary}")
    return "COMPLETED"


def _save_config(cfg: PipelineConfig) -> str:
    """The run's resolved config, beside its job records (``rmat status`` reads it back); its path."""
    os.makedirs(cfg.run_dir, exist_ok=True)
    path = os.path.join(cfg.run_dir, CONFIG_NAME)
    write_atomic(path, to_yaml(cfg).encode())
    return path
