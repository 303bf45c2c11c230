"""The pipeline's training: its run folder is keyed by what determines the model; its MLflow run says what it is."""

from __future__ import annotations

from pipeline.pipeline_config import load_pipeline
from pipeline.stages.train import train_config
from tests.pipeline.conftest import pipeline_yaml


def test_the_training_run_is_named_after_its_pipeline(tmp_path):
    t = train_config(load_pipeline(pipeline_yaml(tmp_path)), "/data/shards-x")
    assert t.tracking.run_name == "t train"


def test_where_and_under_which_name_a_training_is_logged_leaves_its_run_folder_alone(tmp_path):
    config = pipeline_yaml(tmp_path)
    base = train_config(load_pipeline(config), "/data/shards-x").run_dir
    logged_elsewhere = load_pipeline(config, ["train.tracking.experiment=other", "train.tracking.log_every=5",
                                              "train.tracking.tracking_uri=http://127.0.0.1:1"])
    assert train_config(logged_elsewhere, "/data/shards-x").run_dir == base


def test_what_determines_the_model_or_its_data_moves_the_run_folder(tmp_path):
    config = pipeline_yaml(tmp_path)
    base = train_config(load_pipeline(config), "/data/shards-x").run_dir
    assert train_config(load_pipeline(config, ["train.model.pool=attn"]), "/data/shards-x").run_dir != base
    assert train_config(load_pipeline(config), "/data/shards-y").run_dir != base
