"""The pipeline as a list of stages in dependency order: data prep, then training, evaluation and export
(once per sweep point).

Each stage's module (pipeline/stages/) says from its outputs whether it is complete
(manifests and unit sidecars, training's final metrics and the manifest hash it trained
on, the evaluation report, the export's export.json), never from job history, so a stage whose output was damaged
or deleted is submitted again, and one whose output is whole is skipped however it was made.
"""

from __future__ import annotations

from dataclasses import replace

from data_prep.publish import remote_folder
from pipeline.config import ConfigError
from pipeline.lineage import Lineage, lineage_of
from pipeline.pipeline_config import PipelineConfig
from pipeline.stages import Stage, evaluate, export, prep, train
from pipeline.sweep import POINT_STAGES, SweepPoint, grid, point_config


def build_graph(cfg: PipelineConfig, cluster: str, parent_run_id: str = "") -> list[Stage]:
    """Every stage in dependency order, with its completeness read from disk: data prep once, then
    each sweep point's training, evaluation and export. Their runs are children of the submission's
    run ``parent_run_id`` (none for "")."""
    lineage = lineage_of(cfg, parent_run_id)
    data = prep.stages(cfg, cluster, lineage)
    shards = data[-1].output  # the local shard folder, or its published copy when data.publish_to is set
    if cfg.data.publish_to:
        shards = remote_folder(cfg.data.publish_to, shards)
    graph, trained_by = [*data], {}
    for point in grid(cfg):
        stages = point_stages(point_config(cfg, point), shards, lineage, point)
        folder = stages[0].output
        if folder in trained_by:
            raise ConfigError(f"sweep points p{trained_by[folder].index} ({trained_by[folder].label}) and "
                              f"p{point.index} ({point.label}) train the same config; give distinct values")
        trained_by[folder] = point
        graph += stages
    return graph


def point_stages(cfg: PipelineConfig, shards: str, lineage: Lineage, point: SweepPoint) -> list[Stage]:
    """A point's train, evaluate and export stages, named for the point, each after the one before."""
    t = train.train_config(cfg, shards, lineage, point.label)
    training = train.stage(cfg, t)
    evaluation = evaluate.stage(cfg, t, training.complete)
    stages = [training, evaluation, export.stage(cfg, t, evaluation.complete)]
    return [replace(s, name=point.stage(s.name), after=[point.stage(a) if a in POINT_STAGES else a for a in s.after])
            for s in stages]
