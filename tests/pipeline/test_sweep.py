"""Sweeps: a grid of trainings over data prepared once; listed by --dry-run and rmat status; a 2x2 run end to end,
its runs shown by MLflow's UI."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from orchestration.records import RecordBook
from tests.headless_chromium import grid_rows, page_text, rendered_dom
from tests.mlflow_server import running_server
from tests.pipeline.conftest import pipeline_yaml, rmat

GRID = ["--sweep", "train.model.pool=mean,attn", "--sweep", "train.optim.lr=0.003,0.001"]
LABELS = ["model.pool=mean optim.lr=0.003", "model.pool=mean optim.lr=0.001",
          "model.pool=attn optim.lr=0.003", "model.pool=attn optim.lr=0.001"]
SMALL = ["train.steps=6", "evaluate.max_docs=2", "evaluate.passkey.distances=[]"]


def points(out: str) -> list[str]:
    """The point lines of a dry run: ``p<n>  <label>  <state>``, without the folder."""
    lines = out.split("sweep: ")[1].splitlines()[1:]
    return ["  ".join(part.strip() for part in line.split("(")[0].split("  ") if part.strip())
            for line in lines if line.startswith("  p")]


def test_dry_run_lists_every_point_with_its_values_and_own_training_folder_and_submits_nothing(tmp_path):
    code, out = rmat("submit", pipeline_yaml(tmp_path), *GRID, "--dry-run")
    assert code == 0, out
    assert out.startswith("sweep: 4 points (2 x 2)\n")
    assert points(out) == [f"p{i}  {label}  to run" for i, label in enumerate(LABELS, start=1)]
    folders = {line.split("(")[-1].rstrip(")") for line in out.splitlines() if line.startswith("  p")}
    assert len(folders) == 4 and all(Path(f).name.startswith("train-") for f in folders)
    stages = [line.split()[0] for line in out.splitlines() if line and not line.startswith((" ", "sweep"))]
    assert stages == ["ingest", "tokenizer", "shards",
                      *(f"{stage}-p{i}" for i in range(1, 5) for stage in ("train", "evaluate", "export"))]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_the_yaml_sweep_section_makes_the_points_and_the_command_line_replaces_a_key(tmp_path):
    config = Path(pipeline_yaml(tmp_path))
    data = yaml.safe_load(config.read_text())
    data["sweep"] = {"train.model.pool": ["mean", "attn"], "train.optim.lr": [0.003, 0.001]}
    config.write_text(yaml.safe_dump(data))
    _, from_yaml = rmat("submit", str(config), "--dry-run")
    assert points(from_yaml) == [f"p{i}  {label}  to run" for i, label in enumerate(LABELS, start=1)]
    _, replaced = rmat("submit", str(config), "--sweep", "train.optim.lr=0.01", "--dry-run")
    assert points(replaced) == ["p1  model.pool=mean optim.lr=0.01  to run",
                                "p2  model.pool=attn optim.lr=0.01  to run"]


@pytest.mark.parametrize(("sweep", "message"), [
    ("data.workers=1,2", "sweep key 'data.workers': a sweep varies the training (keys train....)"),
    ("train.model.nope=1,2", "sweep point p1 (model.nope=1): key 'train.model.nope'"),
    ("train.seed=1,1", "sweep key 'train.seed': give distinct values"),
    ("train.seed", "--sweep 'train.seed': give key=value,value,..."),
    ("train.tracking.log_every=1,2", "sweep points p1 (tracking.log_every=1) and p2 (tracking.log_every=2) train "
                                     "the same config"),
])
def test_a_sweep_that_cannot_be_a_grid_of_trainings_is_refused_naming_its_key(sweep, message, tmp_path, capsys):
    code, _ = rmat("submit", pipeline_yaml(tmp_path), "--sweep", sweep, "--dry-run")
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> dict:
    """A 2 x 2 sweep run end to end with ``rmat submit --cluster local``."""
    tmp = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = pipeline_yaml(tmp)
        code, out = rmat("submit", config, *SMALL, *GRID, "--cluster", "local")
        assert code == 0, out
    return {"tmp": tmp, "config": config, "run_dir": tmp / "runs" / "t"}


def test_data_prep_runs_once_and_each_point_trains_evaluates_and_exports(swept):
    records = [(r.stage, r.state) for r in RecordBook(swept["run_dir"] / "jobs").all() if r.kind == "stage"]
    expected = ["ingest", "tokenizer", "shards",
                *(f"{stage}-p{i}" for i in range(1, 5) for stage in ("train", "evaluate", "export"))]
    assert records == [(stage, "COMPLETED") for stage in expected]
    assert len(list(swept["run_dir"].glob("train-*/final_eval.json"))) == 4


def test_status_lists_each_point_complete_with_its_mlflow_run(swept):
    from mlflow.tracking import MlflowClient

    code, out = rmat("status", str(swept["run_dir"]))
    assert code == 0
    lines = out.split("sweep points (4)\n")[1].splitlines()
    client = MlflowClient(f"sqlite:///{swept['run_dir']}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id], "tags.`rmat.kind` = 'train'")
    by_name = {r.info.run_name: r.info.run_id for r in runs}
    assert [line.split()[:2] for line in lines] == [[f"p{i}", label.split()[0]] for i, label in enumerate(LABELS, 1)]
    for line, label in zip(lines, LABELS, strict=True):
        assert f"{label}  complete  mlflow run {by_name[f't train {label}']}" in line, out


def test_compare_by_pipeline_name_shows_the_four_points_differing_in_the_swept_keys(swept, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out = rmat("compare", str(swept["run_dir"]), "--out", str(tmp_path))
    assert code == 0, out
    numbers = json.loads((tmp_path / "compare.json").read_text())
    assert sorted(r["name"] for r in numbers["runs"]) == sorted(f"t train {label}" for label in LABELS)
    assert numbers["differing_params"] == ["model.pool", "optim.lr", "run_dir", "tracking.run_name"]


def test_the_mlflow_ui_lists_each_points_run_with_its_val_loss(swept, tmp_path):
    from mlflow.tracking import MlflowClient

    shutil.copy(swept["run_dir"] / "mlflow.db", tmp_path / "server.db")  # the view set below stays out of the sweep
    with running_server("sqlite", str(tmp_path)) as (url, _):
        client = MlflowClient(url)
        exp = client.get_experiment_by_name("t").experiment_id
        trainings = "tags.`rmat.kind` = 'train'"
        expected = {r.info.run_name: str(r.data.metrics["val/loss"]) for r in client.search_runs([exp], trainings)}
        # The runs table shows no metric until one is chosen, and folds child runs under their parent unless sorted
        # on something other than time: a shared view (the experiment tag the UI's Share button writes) picks the
        # runs, the column and the order from the URL.
        view = {"searchFilter": trainings, "selectedColumns": ["metrics.`val/loss`"],
                "orderByKey": "metrics.`val/loss`", "orderByAsc": True}
        client.set_experiment_tag(exp, "mlflow.sharedViewState.sweep", json.dumps(view))
        page = f"{url}/#/experiments/{exp}/runs?viewStateShareKey=sweep"
        deadline = time.monotonic() + 60
        while True:  # the page fetches its runs after it loads; a slow machine may need several looks
            dom = rendered_dom(page, tmp_path / "chromium", max(deadline - time.monotonic(), 10))
            rows = grid_rows(dom)
            listed = {name: row.get("val/loss") for row in rows for name in expected
                      if row.get("Run Name", "").endswith(name)}
            if (listed == expected and len(rows) == len(expected)) or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert sorted(expected) == sorted(f"t train {label}" for label in LABELS)
    assert listed == expected and len(rows) == len(expected), page_text(dom)


def test_a_resubmission_skips_complete_points_and_redoes_only_what_a_point_lost(swept):
    config = swept["config"]
    assert rmat("submit", config, *SMALL, *GRID, "--cluster", "local")[1].endswith(
        "nothing to submit: every stage is complete\n")
    _, dry = rmat("submit", config, *SMALL, *GRID, "--dry-run")
    p3 = next(line for line in dry.splitlines() if line.startswith("  p3"))
    (Path(p3.split("(")[-1].rstrip(")")) / "final_eval.json").unlink()  # p3 loses its evaluation
    code, dry = rmat("submit", config, *SMALL, *GRID, "--cluster", "local", "--dry-run")
    assert code == 0, dry
    assert [line.split("  ")[-1] for line in points(dry)] == ["complete", "complete", "to run", "complete"]
    to_run = [line.split()[0] for line in dry.splitlines()
              if line and not line.startswith((" ", "sweep")) and "complete, skipped" not in line]
    assert to_run == ["evaluate-p3", "export-p3"]


def test_sweeping_the_segment_length_of_data_with_passkey_samples_is_refused(tmp_path, capsys):
    code, _ = rmat("submit", pipeline_yaml(tmp_path), "data.shard.passkey.per_shard=4",
                   "--sweep", "train.model.segment_len=64,128", "--dry-run")
    assert code == 2 and "sweep key 'train.model.segment_len': the points share the data" in capsys.readouterr().err
