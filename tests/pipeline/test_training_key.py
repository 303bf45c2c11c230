"""The pipeline's training: its run folder is keyed by what determines the model; its MLflow run says what it is."""

from __future__ import annotations

from pipeline.lineage import lineage_of
from pipeline.pipeline_config import load_pipeline
from pipeline.stages.train import train_config
from pipeline.train.config import TrainConfig
from tests.pipeline.conftest import pipeline_yaml


def training(config: str, *overrides: str, shards: str = "/data/shards-x") -> TrainConfig:
    cfg = load_pipeline(config, list(overrides))
    return train_config(cfg, shards, lineage_of(cfg))


def test_the_training_run_is_named_after_its_pipeline_and_tracked_in_its_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    t = training(pipeline_yaml(tmp_path))
    assert t.tracking.run_name == "t train" and t.tracking.experiment == "t"
    assert t.tracking.tracking_uri == f"sqlite:///{tmp_path}/runs/t/mlflow.db"


def test_where_and_under_which_name_a_training_is_logged_leaves_its_run_folder_alone(tmp_path):
    config = pipeline_yaml(tmp_path)
    logged_elsewhere = training(config, "train.tracking.experiment=other", "train.tracking.log_every=5",
                                "train.tracking.tracking_uri=http://127.0.0.1:1")
    assert logged_elsewhere.run_dir == training(config).run_dir


def test_what_determines_the_model_or_its_data_moves_the_run_folder(tmp_path):
    config = pipeline_yaml(tmp_path)
    base = training(config).run_dir
    assert training(config, "train.model.pool=attn").run_dir != base
    assert training(config, shards="/data/shards-y").run_dir != base
