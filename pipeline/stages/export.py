"""The export stage: the final checkpoint as an exported folder (safetensors + ONNX), logged to MLflow as a model.

Its output is ``<training run>/export/<checkpoint tag>``; the stage is complete when the
``export.json`` of the folder for the final checkpoint exists and names that checkpoint.
The folder is exported under a temporary name, logged to the training's MLflow run, and
only then renamed into place, so a complete stage means the model is logged too.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

from data_prep.atomic import read_json, tmp_path
from model.export_layout import EXPORT
from pipeline.pipeline_config import PipelineConfig
from pipeline.stages import Stage
from pipeline.train.config import TrainConfig
from pipeline.train.files import checkpoint_root, latest_meta

FORMATS = ("safetensors", "onnx")


def export_folder(t: TrainConfig, tag: str) -> str:
    return os.path.join(t.run_dir, "export", tag)


def complete(t: TrainConfig) -> bool:
    """The export of the training's final (``latest``) checkpoint is in place and names it."""
    meta = latest_meta(t.run_dir) if os.path.isdir(checkpoint_root(t.run_dir)) else None
    info = read_json(os.path.join(export_folder(t, meta["tag"]), EXPORT)) if meta else None
    return bool(info and info.get("checkpoint") == meta["tag"])


def run(t: TrainConfig) -> Optional[str]:
    """The export job: export, log to MLflow, then rename into place; returns a summary."""
    # torch, onnx and MLflow only where a job exports: `rmat status` reads `complete` and must stay fast
    from pipeline.export import export_run
    from pipeline.serving import log_exported_model
    from pipeline.train.engine import set_threads

    set_threads(0, 1)  # the cores the job asked for
    meta = latest_meta(t.run_dir)
    if meta is None:
        raise FileNotFoundError(f"{t.run_dir}: no checkpoint to export; run the train stage first")
    final = export_folder(t, meta["tag"])
    staging = tmp_path(final)
    shutil.rmtree(staging, ignore_errors=True)  # what a killed attempt left
    os.makedirs(os.path.dirname(final), exist_ok=True)
    export_run(t.run_dir, staging, meta["tag"], FORMATS)
    uri = log_exported_model(staging, t.run_dir, t.tracking.tracking_uri)
    os.rename(staging, final)
    return f"exported {meta['tag']} to {final}, logged as {uri}"


def stage(cfg: PipelineConfig, t: TrainConfig, evaluated: bool) -> Stage:
    """The export after evaluation; complete only while the evaluation is (``evaluated``)."""
    done = evaluated and complete(t)
    meta = latest_meta(t.run_dir) if os.path.isdir(checkpoint_root(t.run_dir)) else None
    output = export_folder(t, meta["tag"]) if meta else os.path.join(t.run_dir, "export")
    detail = "done" if done else f"{'+'.join(FORMATS)} of the final checkpoint into {output}"
    return Stage("export", run, (t,), cfg.slurm.export, ["evaluate"], complete=done, detail=detail, output=output)
