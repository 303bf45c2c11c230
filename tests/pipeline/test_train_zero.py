"""Two processes over gloo, real DeepSpeed ZeRO engines, real shards: training learns and is tracked."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist

from pipeline.config import load_config
from pipeline.train.checkpoint import load_model
from pipeline.train.config import TrainConfig
from pipeline.train.evaluate import evaluate
from pipeline.train.loader import open_split, read_documents
from tests.pipeline.conftest import read_jsonl, run_train

STEPS = 40


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def trained(request, shards, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp(f"zero{request.param}"))
    out = run_train(run_dir, shards, f"engine.zero_stage={request.param}", f"steps={STEPS}", "eval.every=20")
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


def test_two_process_training_lowers_validation_loss(trained):
    evals = read_jsonl(os.path.join(trained, "evals.jsonl"))
    assert [e["step"] for e in evals] == [0, 20, STEPS]
    first, last = evals[0]["val/loss"], evals[-1]["val/loss"]
    assert last < first - 1.0, (first, last)


def test_validation_reports_each_domain_and_position_bucket(trained):
    final = read_jsonl(os.path.join(trained, "evals.jsonl"))[-1]
    assert {"val/code/loss", "val/code/ppl", "val/documents/loss", "val/documents/ppl"} <= set(final)
    assert final["val/pos_00_0-32/loss"] > 0 and final["val/pos_01_32-64/loss"] > 0
    assert abs(final["val/ppl"] - 2.718281828 ** final["val/loss"]) < 1e-6 * final["val/ppl"]


def test_run_is_one_mlflow_run_with_config_tags_and_every_point(trained):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{trained}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("rmat").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.d_model"] == "64" and run.data.params["engine.zero_stage"] in ("2", "3")
    assert run.data.tags["world_size"] == "2" and len(run.data.tags["data_manifest_sha256"]) == 64
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
    assert {"perf/mfu", "perf/tokens_per_s", "perf/peak_rss_mb", "train/grad_norm", "train/lr"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "final_metrics.json"} <= artifacts


def test_every_checkpoint_folder_holds_the_config_that_wrote_it(trained):
    folder = os.path.join(trained, "checkpoints", f"step_{STEPS:08d}")
    cfg = load_config(TrainConfig, os.path.join(folder, "config.yaml"))
    assert cfg.steps == STEPS and cfg.run_dir == trained and cfg.model.d_model == 64


def test_the_final_checkpoint_reads_back_as_a_plain_model_with_the_loss_training_reported(trained, shards):
    model = load_model(trained)  # fp32 weights out of DeepSpeed's ZeRO-2 or ZeRO-3 layout
    cfg = load_config(TrainConfig, os.path.join(trained, "checkpoints", f"step_{STEPS:08d}", "config.yaml"))
    info = open_split(shards, "val")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        metrics = evaluate(model, read_documents(info, cfg.eval.max_docs), cfg.model, cfg.eval.batch_size,
                           cfg.eval.bucket_tokens, info.bos_id, info.eos_id, torch.float32, torch.device("cpu"))
    finally:
        dist.destroy_process_group()
    reported = read_jsonl(os.path.join(trained, "evals.jsonl"))[-1]["val/loss"]
    assert abs(metrics["val/loss"] - reported) < 1e-5 * reported


def test_recomputing_each_segment_in_the_backward_trains_the_same_losses(trained, tmp_path):
    zero = load_config(TrainConfig, os.path.join(trained, "checkpoints", f"step_{STEPS:08d}", "config.yaml"))
    out = run_train(str(tmp_path), zero.data.shards, f"engine.zero_stage={zero.engine.zero_stage}", f"steps={STEPS}",
                    "eval.every=20", "engine.activation_checkpointing=true")
    assert out.returncode == 0, out.stderr[-3000:]
    losses = [r["loss"] for r in read_jsonl(os.path.join(trained, "losses.jsonl"))]
    assert [r["loss"] for r in read_jsonl(os.path.join(tmp_path, "losses.jsonl"))] == losses


def test_a_run_started_from_another_runs_weights_evaluates_at_step_0_to_its_final_val_loss(trained, tmp_path):
    zero = load_config(TrainConfig, os.path.join(trained, "checkpoints", f"step_{STEPS:08d}", "config.yaml"))
    out = run_train(str(tmp_path), zero.data.shards, f"engine.zero_stage={zero.engine.zero_stage}", "steps=1",
                    "eval.every=1", f"init_from={trained}")
    assert out.returncode == 0, out.stderr[-3000:]
    started = read_jsonl(os.path.join(tmp_path, "evals.jsonl"))[0]
    final = read_jsonl(os.path.join(trained, "evals.jsonl"))[-1]["val/loss"]
    assert started["step"] == 0 and abs(started["val/loss"] - final) < 1e-5 * final


def test_init_from_a_folder_without_a_checkpoint_is_refused_naming_it(shards, tmp_path):
    out = run_train(str(tmp_path / "run"), shards, f"init_from={tmp_path}", "steps=1")
    assert out.returncode != 0
    assert f"init_from='{tmp_path}': no checkpoint there" in out.stderr


def test_init_from_a_run_of_another_model_is_refused_naming_the_keys(trained, tmp_path):
    zero = load_config(TrainConfig, os.path.join(trained, "checkpoints", f"step_{STEPS:08d}", "config.yaml"))
    out = run_train(str(tmp_path), zero.data.shards, "model.d_model=32", f"init_from={trained}", "steps=1")
    assert out.returncode != 0
    assert "holds another model (model.d_model differ)" in out.stderr
