"""The data-prep stages (ingest, tokenizer, shards): one job each, whose units run as job arrays.

data_prep owns their outputs and says whether each is complete (``data_prep.prep.prep_status``):
unit sidecars and manifests, never job history. Each stage's job is a run of the pipeline's
MLflow store (``pipeline/lineage.py``) holding what it wrote (``pipeline/prep_lineage.py``).
"""

from __future__ import annotations

import os

from data_prep.config import PrepConfig
from data_prep.prep import prep_status, run_prep
from orchestration.array import ArrayExecutor, ArraySettings
from orchestration.launcher import Launcher
from orchestration.records import RecordBook
from orchestration.resources import Resources
from pipeline.config import flatten, to_dict
from pipeline.lineage import Lineage, stage_run
from pipeline.pipeline_config import PipelineConfig
from pipeline.stages import Stage


def run(cfg: PrepConfig, stage: str, cluster: str, logs: str, records: str, units: Resources,
        array: ArraySettings, lineage: Lineage) -> str:
    """One data-prep stage's job, tracked as a run of the pipeline's store; its units run as job arrays of
    the same cluster. Returns the stage's summary."""
    from pipeline.prep_lineage import log_stage_output

    executor = ArrayExecutor(Launcher(cluster, logs), units, stage, array, RecordBook(records))
    with stage_run(lineage, stage, flatten(to_dict(cfg))) as tracked:
        result = run_prep(cfg, stage=stage, executor=executor)
        if tracked is not None:
            log_stage_output(tracked, cfg, stage, result.folders[stage])
    return result.summaries[stage]


def stages(cfg: PipelineConfig, cluster: str, lineage: Lineage) -> list[Stage]:
    """Ingest, tokenizer and shards, each after the one before, complete as data_prep reads its output."""
    logs, records = os.path.join(cfg.run_dir, "logs"), os.path.join(cfg.run_dir, "jobs")
    out: list[Stage] = []
    for status in prep_status(cfg.data):
        args = (cfg.data, status.name, cluster, logs, records, cfg.slurm.units, cfg.slurm.array, lineage)
        out.append(Stage(status.name, run, args, cfg.slurm.prep, [out[-1].name] if out else [],
                         complete=status.complete, detail=status.detail, output=status.folder))
    return out
