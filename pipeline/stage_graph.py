"""The pipeline as a graph of stages, each with its job, resources, dependencies and completeness.

Completeness is read from the stages' outputs (manifests and unit sidecars, training's
final metrics and the manifest hash it trained on, the evaluation report), never from
job history, so a stage whose output was damaged or deleted is submitted again, and one
whose output is whole is skipped however it was made.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from data_prep.atomic import read_done
from data_prep.ingest import ingest_done, plan_ingest
from data_prep.tokenize_shard import plan_shards, shards_folder, shards_status
from data_prep.tokenizer import tokenizer_done, tokenizer_folder, tokenizer_key
from orchestration.distributed import DistributedCall
from orchestration.resources import Resources
from pipeline.final_eval import evaluation_complete, report_path, run_evaluation
from pipeline.pipeline_config import PipelineConfig
from pipeline.stage_jobs import prep_stage
from pipeline.train_stage import run_training, train_config, training_complete


@dataclass
class Stage:
    """One node of the graph: a job to submit unless ``complete``."""

    name: str
    fn: Callable[..., Any]
    args: tuple
    resources: Resources
    after: list[str] = field(default_factory=list)  # stages that must succeed first
    complete: bool = False
    detail: str = ""  # what is done or missing, for people
    output: str = ""  # the stage's output folder


def build_graph(cfg: PipelineConfig, cluster: str) -> list[Stage]:
    """Every stage in dependency order, with its completeness read from disk."""
    run = cfg.run_dir
    logs, records = os.path.join(run, "logs"), os.path.join(run, "jobs")

    def prep(stage: str, after: list[str]) -> Stage:
        args = (cfg.data, stage, cluster, logs, records, cfg.slurm.units, cfg.slurm.array)
        return Stage(stage, prep_stage, args, cfg.slurm.prep, after)

    ingest, tokenizer, shards = prep("ingest", []), prep("tokenizer", ["ingest"]), prep("shards", ["tokenizer"])
    _read_prep_outputs(cfg, ingest, tokenizer, shards)
    return [ingest, tokenizer, shards, *_model_stages(cfg, shards.output)]


def _model_stages(cfg: PipelineConfig, shards: str) -> list[Stage]:
    """Training on ``shards`` (nodes x tasks ranks, requeued after a preemption), then its evaluation."""
    t = train_config(cfg, shards)
    train = Stage("train", DistributedCall(run_training, (t,), training_complete, (t,)), (), cfg.slurm.train,
                  ["shards"], complete=training_complete(t), output=t.run_dir)
    train.detail = "done" if train.complete else f"{t.steps} steps into {t.run_dir}"
    e = cfg.evaluate
    evaluate = Stage("evaluate", DistributedCall(run_evaluation, (t, e), evaluation_complete, (t, e)), (),
                     cfg.slurm.evaluate, ["train"], output=report_path(t))
    evaluate.complete = train.complete and evaluation_complete(t, e)
    evaluate.detail = "done" if evaluate.complete else f"splits {', '.join(e.splits)} into {report_path(t)}"
    return [train, evaluate]


def _read_prep_outputs(cfg: PipelineConfig, ingest: Stage, tokenizer: Stage, shards: Stage) -> None:
    plan = plan_ingest(cfg.data)
    ingest.output = plan.folder
    ingest.complete = ingest_done(plan.folder) is not None
    units_done = sum(read_done(u.out) is not None for u in plan.units)
    ingest.detail = "done" if ingest.complete else f"{len(plan.units) - units_done} of {len(plan.units)} units to run"
    tokenizer.output = tokenizer_folder(cfg.data, plan.key)
    tok = tokenizer_done(tokenizer.output)
    tokenizer.complete = tok is not None
    tokenizer.detail = "done" if tok else "to train"
    shards.output = shards_folder(cfg.data, plan.key, tokenizer_key(cfg.data, plan.key))
    if not (ingest.complete and tok):
        shards.detail = "units planned once ingest and tokenizer are done"
        return
    splan = plan_shards(cfg.data, plan.folder, plan.key, tokenizer.output, tokenizer_key(cfg.data, plan.key),
                        tok["vocab_size"])
    done, manifest = shards_status(splan)
    shards.complete = done == len(splan.units) and manifest
    missing = len(splan.units) - done
    shards.detail = "done" if shards.complete else (
        f"{missing} of {len(splan.units)} units to run" + ("" if manifest else ", then the manifest"))
