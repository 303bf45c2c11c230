"""The pipeline as a list of stages in dependency order: data prep, training, evaluation, export.

Each stage's module (pipeline/stages/) says from its outputs whether it is complete
(manifests and unit sidecars, training's final metrics and the manifest hash it trained
on, the evaluation report, the export's export.json), never from job history, so a stage whose output was damaged
or deleted is submitted again, and one whose output is whole is skipped however it was made.
"""

from __future__ import annotations

from data_prep.publish import remote_folder
from pipeline.lineage import lineage_of
from pipeline.pipeline_config import PipelineConfig
from pipeline.stages import Stage, evaluate, export, prep, train


def build_graph(cfg: PipelineConfig, cluster: str, parent_run_id: str = "") -> list[Stage]:
    """Every stage in dependency order, with its completeness read from disk; their runs are children of
    the submission's run ``parent_run_id`` (none for "")."""
    lineage = lineage_of(cfg, parent_run_id)
    data = prep.stages(cfg, cluster, lineage)
    shards = data[-1].output  # the local shard folder, or its published copy when data.publish_to is set
    t = train.train_config(cfg, remote_folder(cfg.data.publish_to, shards) if cfg.data.publish_to else shards,
                           lineage)
    training = train.stage(cfg, t)
    evaluation = evaluate.stage(cfg, t, training.complete)
    return [*data, training, evaluation, export.stage(cfg, t, evaluation.complete)]
