"""A pipeline submitted as local processes keeps all its runs in one MLflow store, with lineage:
a parent run for the submission, a child run per data-prep stage and for training, one dataset between them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.lineage import Lineage, stage_run
from pipeline.train.files import manifest_hash
from tests.mlflow_server import free_port
from tests.pipeline.conftest import pipeline_yaml, rmat

PREP = ("ingest", "tokenizer", "shards")


@pytest.fixture(scope="module")
def submitted(tmp_path_factory) -> dict:
    """The test pipeline run once with ``rmat submit --cluster local``: its folder, store and runs by name."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("lineage")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = pipeline_yaml(tmp)
        code, out = rmat("submit", config, "--cluster", "local")
        assert code == 0, out
        resubmitted = rmat("submit", config, "--cluster", "local")
    run_dir = tmp / "runs" / "t"
    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    experiment = client.get_experiment_by_name("t")
    runs = client.search_runs([experiment.experiment_id])
    return {"tmp": tmp, "run_dir": run_dir, "client": client, "runs": {r.info.run_name: r for r in runs},
            "resubmitted": resubmitted}


def test_every_run_of_the_pipeline_is_in_one_store_beside_its_jobs(submitted):
    assert sorted(submitted["runs"]) == sorted(["t", *(f"t {s}" for s in PREP), "t train"])
    (train_dir,) = submitted["run_dir"].glob("train-*")
    assert not (train_dir / "mlflow.db").exists()


def test_the_submission_is_the_parent_of_every_stage_run(submitted):
    runs = submitted["runs"]
    parent = runs["t"]
    assert parent.info.status == "FINISHED" and parent.data.tags["rmat.kind"] == "pipeline"
    assert {a.path for a in submitted["client"].list_artifacts(parent.info.run_id)} == {"pipeline.yaml"}
    for name in [*(f"t {s}" for s in PREP), "t train"]:
        assert runs[name].data.tags["mlflow.parentRunId"] == parent.info.run_id, name
        assert runs[name].info.status == "FINISHED", name
    assert [runs[f"t {s}"].data.tags["rmat.stage"] for s in PREP] == list(PREP)


def test_the_shards_run_outputs_the_dataset_the_training_run_takes_as_input(submitted):
    runs, tmp = submitted["runs"], submitted["tmp"]
    (shards,) = (tmp / "data").glob("shards-*")
    digest = manifest_hash(json.loads((shards / "manifest.json").read_text()))
    (output,) = runs["t shards"].inputs.dataset_inputs
    (used,) = runs["t train"].inputs.dataset_inputs
    assert output.dataset.name == used.dataset.name == shards.name
    assert output.dataset.digest == used.dataset.digest == digest[:36]
    assert json.loads(output.dataset.source) == json.loads(used.dataset.source) == {"uri": f"file://{shards}"}
    assert json.loads(used.dataset.profile)["sha256"] == digest
    assert [(t.key, t.value) for t in output.tags] == [("mlflow.data.context", "output")]
    assert [(t.key, t.value) for t in used.tags] == [("mlflow.data.context", "training")]


def test_data_prep_runs_hold_the_tokenizer_and_the_stages_figures(submitted):
    client, runs = submitted["client"], submitted["runs"]
    tokenizer = {a.path for a in client.list_artifacts(runs["t tokenizer"].info.run_id, "tokenizer")}
    assert tokenizer == {"tokenizer/spm.model", "tokenizer/spm.vocab", "tokenizer/tokenizer.json"}
    for stage, figure in (("ingest", "ingest.png"), ("shards", "shards.png")):
        folder = Path(client.download_artifacts(runs[f"t {stage}"].info.run_id, figure, str(submitted["tmp"])))
        assert folder.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stage
    assert runs["t ingest"].data.params["tokenizer.vocab_size"] == "400"


def test_evaluation_and_export_land_in_the_training_run_of_the_same_store(submitted):
    train = submitted["runs"]["t train"]
    assert "final/test/loss" in train.data.metrics and "train/tokens" in train.data.metrics
    models = submitted["client"].search_logged_models([train.info.experiment_id])
    assert [(m.name, m.source_run_id) for m in models] == [("model", train.info.run_id)]


def test_compare_by_pipeline_name_finds_its_training_run_only(submitted, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out = rmat("compare", str(submitted["run_dir"]))
    assert code == 0, out
    assert out.startswith(f"1 run(s) from sqlite:///{submitted['run_dir']}/mlflow.db")
    assert "t train" in out


def test_a_resubmission_with_nothing_to_do_adds_no_run(submitted):
    code, out = submitted["resubmitted"]
    assert code == 0 and out.endswith("nothing to submit: every stage is complete\n")
    assert len(submitted["runs"]) == 5


def test_a_store_that_does_not_answer_leaves_a_stage_untracked_with_a_warning(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    said: list[str] = []
    with stage_run(Lineage(url, "t", str(tmp_path), timeout_s=1), "ingest", {}, said.append) as run:
        ran = True
    assert ran and run is None
    assert said[0].startswith(f"rmat: warning: MLflow at {url} did not take the run 't ingest' ("), said
