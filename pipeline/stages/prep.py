"""The data-prep stages (ingest, tokenizer, shards): one job each, whose units run as job arrays.

data_prep owns their outputs and says whether each is complete (``data_prep.prep.prep_status``):
unit sidecars and manifests, never job history.
"""

from __future__ import annotations

import os

from data_prep.config import PrepConfig
from data_prep.prep import prep_status, run_prep
from orchestration.array import ArrayExecutor, ArraySettings
from orchestration.launcher import Launcher
from orchestration.records import RecordBook
from orchestration.resources import Resources
from pipeline.pipeline_config import PipelineConfig
from pipeline.stages import Stage


def run(cfg: PrepConfig, stage: str, cluster: str, logs: str, records: str, units: Resources,
        array: ArraySettings) -> str:
    """One data-prep stage's job; its units run as job arrays of the same cluster. Returns the stage's summary."""
    executor = ArrayExecutor(Launcher(cluster, logs), units, stage, array, RecordBook(records))
    return run_prep(cfg, stage=stage, executor=executor).summaries[stage]


def stages(cfg: PipelineConfig, cluster: str) -> list[Stage]:
    """Ingest, tokenizer and shards, each after the one before, complete as data_prep reads its output."""
    logs, records = os.path.join(cfg.run_dir, "logs"), os.path.join(cfg.run_dir, "jobs")
    out: list[Stage] = []
    for status in prep_status(cfg.data):
        args = (cfg.data, status.name, cluster, logs, records, cfg.slurm.units, cfg.slurm.array)
        out.append(Stage(status.name, run, args, cfg.slurm.prep, [out[-1].name] if out else [],
                         complete=status.complete, detail=status.detail, output=status.folder))
    return out
