"""``rmat compare`` over runs logged with MlflowClient: which runs, the diff, the numbers, the report, the errors."""

from __future__ import annotations

import socket
import statistics
import time

import pytest

from pipeline.compare.plots import downsample
from pipeline.compare.summary import interpolate
from tests.pipeline.compare_helpers import history, log_run, png_size, report_numbers, training_points
from tests.pipeline.conftest import rmat

BASE = {"model.pool": "mean", "optim.lr": "0.003", "steps": "20", "seed": "0"}


@pytest.fixture
def store(tmp_path):
    """An embedded store with experiment ``sweep``: (URI, client, experiment id)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("sweep")


def compare(capsys, *args: str) -> tuple[int, str, str]:
    code, out = rmat("compare", *args)
    return code, out, capsys.readouterr().err


def test_the_config_diff_names_exactly_the_params_that_differ(store, capsys):
    uri, client, exp = store
    ids = [log_run(client, exp, "a", BASE, training_points(20, 100, 10)),
           log_run(client, exp, "b", {**BASE, "model.pool": "attn"}, training_points(20, 100, 10)),
           log_run(client, exp, "c", {**BASE, "model.pool": "attn", "optim.lr": "0.001", "extra": "1"},
                   training_points(20, 100, 10))]
    code, out, err = compare(capsys, *ids, "--tracking-uri", uri)
    assert code == 0, err
    config = out.split("config: ")[1].split("\n\n")[0].splitlines()
    assert config[0].startswith("3 of 5 params differ")
    assert [line.split()[0] for line in config[2:]] == ["extra", "model.pool", "optim.lr"]
    assert config[2].split()[1:] == ["-", "-", "1"] and config[3].split()[1:] == ["mean", "attn", "attn"]
    _, everything, _ = compare(capsys, *ids, "--tracking-uri", uri, "--all")
    shown = everything.split("config: ")[1].split("\n\n")[0].splitlines()[2:]
    assert [line.split()[0] for line in shown] == ["extra", "model.pool", "optim.lr", "seed", "steps"]


def test_final_best_and_per_domain_val_losses_equal_the_points_in_the_store(store, capsys, tmp_path):
    uri, client, exp = store
    points = training_points(30, 100, 10)
    points["val/loss"][-1] = (30, 9.0)  # the last evaluation is not the best
    run_id = log_run(client, exp, "a", BASE, points)
    code, out, err = compare(capsys, run_id, "--tracking-uri", uri, "--out", str(tmp_path / "r"))
    assert code == 0, err
    (run,) = report_numbers(tmp_path / "r")["runs"]
    for name, key in (("loss", "val/loss"), ("code", "val/code/loss"), ("documents", "val/documents/loss")):
        stored = history(client, run_id, key)
        assert run["val_final"][name] == stored[-1][1]
        assert run["val_best"][name] == min(v for _, v in stored)
    assert run["val_final"]["loss"] == 9.0 and run["val_best"]["loss"] < 9.0
    assert f"{run['val_best']['loss']:.4f}" in out.split("val loss, best")[1].splitlines()[0]


def test_throughput_wall_time_steps_and_tokens_are_those_the_run_logged(store, capsys, tmp_path):
    uri, client, exp = store
    run_id = log_run(client, exp, "a", BASE, training_points(20, 100, 10), wall_s=125.0)
    assert compare(capsys, run_id, "--tracking-uri", uri, "--out", str(tmp_path / "r"))[0] == 0
    (run,) = report_numbers(tmp_path / "r")["runs"]
    assert run["tokens_per_s"] == statistics.median(v for _, v in history(client, run_id, "perf/tokens_per_s"))
    assert run["mfu"] == statistics.median(v for _, v in history(client, run_id, "perf/mfu"))
    assert run["wall_time_s"] == 125.0 and run["status"] == "FINISHED"
    assert run["steps"] == 20 and run["tokens"] == history(client, run_id, "train/tokens")[-1][1]
    assert run["position_loss"] == {"pos_00_0-32": history(client, run_id, "val/pos_00_0-32/loss")[-1][1],
                                    "pos_01_32-64": history(client, run_id, "val/pos_01_32-64/loss")[-1][1]}


def test_runs_of_unequal_length_compare_at_the_largest_token_budget_every_run_reached(store, capsys, tmp_path):
    uri, client, exp = store
    long_run = log_run(client, exp, "long", BASE, training_points(40, 100, 10))  # 4,000 tokens
    short_run = log_run(client, exp, "short", BASE, training_points(20, 150, 10, scale=1.1))  # 3,000 tokens
    assert compare(capsys, long_run, short_run, "--tracking-uri", uri, "--out", str(tmp_path / "r"))[0] == 0
    numbers = report_numbers(tmp_path / "r")
    assert numbers["budget"] == {"train_tokens": 3000.0, "val_tokens": 3000.0}
    at_long, at_short = (r["at_budget"] for r in numbers["runs"])
    # The long run evaluated at 2,000 and 3,000 tokens; the short one last at 3,000.
    assert at_long["val/loss"] == dict(history(client, long_run, "val/loss"))[30]
    assert at_short["val/loss"] == dict(history(client, short_run, "val/loss"))[20]
    assert at_short["val/code/loss"] == dict(history(client, short_run, "val/code/loss"))[20]
    # train loss: the mean over the last 5% of the budget (tokens 2,850 to 3,000)
    long_train = dict(history(client, long_run, "train/loss"))
    assert at_long["train/loss"] == pytest.approx(statistics.fmean([long_train[29], long_train[30]]))
    short_train = dict(history(client, short_run, "train/loss"))
    assert at_short["train/loss"] == pytest.approx(statistics.fmean([short_train[19], short_train[20]]))


def test_the_value_between_two_evaluations_is_interpolated_on_tokens():
    curve = [(0.0, 5.0), (1000.0, 4.0), (2000.0, 2.0)]
    assert interpolate(curve, 1500.0) == 3.0
    assert interpolate(curve, 2000.0) == 2.0
    assert interpolate(curve, 2500.0) is None


def test_a_long_curve_is_averaged_down_and_keeps_its_ends():
    curve = [(float(i), float(i % 2)) for i in range(100_000)]
    small = downsample(curve, 500)
    assert len(small) == 500
    assert small[0][0] == pytest.approx(99.5) and small[-1][0] == pytest.approx(99_899.5)
    assert {round(v, 6) for _, v in small} == {0.5}  # step-to-step noise gone, the level kept


def test_gaps_and_duplicate_steps_are_named_with_the_run_metric_and_steps(store, capsys):
    uri, client, exp = store
    clean = log_run(client, exp, "clean", BASE, training_points(20, 100, 10))
    broken = log_run(client, exp, "broken", BASE, training_points(20, 100, 10, skip=(5, 6)),
                     duplicate=("val/loss", 10))
    code, out, err = compare(capsys, clean, "--tracking-uri", uri)
    assert code == 0 and "every run holds exactly one point per step per metric" in out
    code, out, err = compare(capsys, clean, broken, "--tracking-uri", uri)
    notes = out.split("\nnotes\n")[1]
    assert f"run {broken[:8]} (broken): val/loss holds several points at 1 step(s): 10" in notes
    for key in ("train/loss", "train/tokens", "perf/mfu", "perf/tokens_per_s"):
        assert f"run {broken[:8]} (broken): {key} has no point at 2 step(s): 5, 6" in notes
    assert f"run {clean[:8]}" not in notes and "every run holds" not in notes


def test_a_run_in_progress_and_a_run_without_metrics_are_compared_with_what_they_have(store, capsys, tmp_path):
    uri, client, exp = store
    done = log_run(client, exp, "done", BASE, training_points(20, 100, 10))
    running = {k: v for k, v in training_points(12, 100, 10).items() if not k.startswith("val/")}
    running_id = log_run(client, exp, "running", BASE, running, status="RUNNING")
    empty = log_run(client, exp, "empty", BASE, {}, status="FAILED")
    code, out, err = compare(capsys, done, running_id, empty, "--tracking-uri", uri, "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert f"run {running_id[:8]} (running): in progress (RUNNING)" in out
    assert f"run {running_id[:8]} (running): has no val/loss" in out
    assert f"run {empty[:8]} (empty): has no train/loss, train/tokens, val/loss, perf/tokens_per_s, perf/mfu" in out
    numbers = report_numbers(tmp_path / "r")
    assert numbers["budget"] == {"train_tokens": None, "val_tokens": None}  # a run has no tokens axis
    assert numbers["runs"][1]["wall_time_s"] > 0 and numbers["runs"][2]["steps"] is None


def test_an_experiment_and_an_mlflow_filter_select_the_runs(store, capsys, tmp_path):
    uri, client, exp = store
    mean = log_run(client, exp, "mean", BASE, training_points(10, 100, 5))
    attn = [log_run(client, exp, f"attn{i}", {**BASE, "model.pool": "attn", "seed": str(i)},
                    training_points(10, 100, 5)) for i in range(2)]
    code, out, err = compare(capsys, "--experiment", "sweep", "--filter", "params.`model.pool` = 'attn'",
                             "--tracking-uri", uri, "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert [r["run_id"] for r in report_numbers(tmp_path / "r")["runs"]] == attn
    assert mean[:8] not in out
    code, out, err = compare(capsys, "--experiment", "sweep", "--tracking-uri", uri)
    assert code == 0 and all(run_id[:8] in out for run_id in [mean, *attn])


def test_the_report_folder_holds_both_plots_a_markdown_report_embedding_them_and_the_numbers(store, capsys,
                                                                                             tmp_path):
    uri, client, exp = store
    ids = [log_run(client, exp, "a", BASE, training_points(3000, 100, 500)),  # long: drawn downsampled
           log_run(client, exp, "b", {**BASE, "model.pool": "attn"}, training_points(20, 100, 10))]
    out_dir = tmp_path / "report"
    code, out, err = compare(capsys, *ids, "--tracking-uri", uri, "--out", str(out_dir))
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["compare.json", "loss_vs_tokens.png", "position_loss.png",
                                                         "report.md"]
    assert png_size(out_dir / "loss_vs_tokens.png") == (1200, 450)
    assert png_size(out_dir / "position_loss.png") == (600, 450)
    report = (out_dir / "report.md").read_text()
    assert "](loss_vs_tokens.png)" in report and "](position_loss.png)" in report
    assert "| model.pool | mean | attn |" in report
    numbers = report_numbers(out_dir)
    assert numbers["differing_params"] == ["model.pool"] and numbers["tracking_uri"] == uri
    assert [r["run_id"] for r in numbers["runs"]] == ids


def test_an_unknown_run_id_is_a_one_line_error_naming_it_and_the_store(store, capsys):
    uri, _, _ = store
    code, _, err = compare(capsys, "0" * 32, "--tracking-uri", uri)
    assert code == 1 and err.count("\n") == 1
    assert f"run {'0' * 32} is not in {uri}" in err


def test_a_missing_embedded_store_is_refused_not_created(tmp_path, capsys):
    code, _, err = compare(capsys, "0" * 32, "--tracking-uri", f"sqlite:///{tmp_path}/none.db")
    assert code == 1 and f"no MLflow store at {tmp_path}/none.db" in err
    assert not (tmp_path / "none.db").exists()


def test_a_name_that_is_neither_a_run_id_nor_a_pipeline_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = compare(capsys, "abc123")
    assert code == 1 and "'abc123' is neither an MLflow run id (32 hex digits) nor a submitted pipeline" in err


def test_run_ids_without_a_store_ask_for_one(capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = compare(capsys, "0" * 32)
    assert code == 1 and "pass --tracking-uri or set MLFLOW_TRACKING_URI" in err


@pytest.mark.parametrize("server", ["refuses connections", "accepts and never answers"])
def test_a_tracking_server_that_does_not_answer_is_a_one_line_error_within_the_timeout(server, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if server == "accepts and never answers":
            s.listen(8)  # the kernel completes connections; nobody reads or answers
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        start = time.monotonic()
        code, _, err = compare(capsys, "0" * 32, "--tracking-uri", url, "--timeout", "2")
        elapsed = time.monotonic() - start
    assert code == 1 and err.count("\n") == 1, err
    assert f"MLflow at {url} did not answer within 2 s" in err
    assert elapsed < 2 + 3, elapsed  # one request, no retries (MLflow's defaults wait minutes)
