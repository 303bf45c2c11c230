"""``rmat compare`` against a real ``mlflow server`` (on sqlite and on PostgreSQL), and one that hangs."""

from __future__ import annotations

import os
import signal
import statistics
import time

import pytest

from tests.mlflow_server import BACKENDS, running_server
from tests.pipeline.compare_helpers import history, log_run, png_size, report_numbers, training_points
from tests.pipeline.conftest import rmat

BASE = {"model.pool": "mean", "optim.lr": "0.003"}


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    """(URL, process, client, run ids) of a server holding two runs of unequal length in experiment ``sweep``."""
    from mlflow.tracking import MlflowClient

    with running_server(request.param, str(tmp_path_factory.mktemp("server"))) as (url, proc):
        client = MlflowClient(url)
        exp = client.create_experiment("sweep")
        ids = [log_run(client, exp, "mean", BASE, training_points(40, 100, 10)),
               log_run(client, exp, "attn", {**BASE, "model.pool": "attn"}, training_points(20, 150, 10))]
        yield url, proc, client, ids


def test_compare_reads_a_server_as_it_reads_an_embedded_store(server, tmp_path, capsys):
    url, _, client, ids = server
    code, out = rmat("compare", "--experiment", "sweep", "--filter", "params.`optim.lr` = '0.003'",
                     "--tracking-uri", url, "--out", str(tmp_path))
    assert code == 0, capsys.readouterr().err
    numbers = report_numbers(tmp_path)
    assert [r["run_id"] for r in numbers["runs"]] == ids and numbers["differing_params"] == ["model.pool"]
    for run_id, run in zip(ids, numbers["runs"], strict=True):
        val = history(client, run_id, "val/loss")
        assert run["val_final"]["loss"] == val[-1][1] and run["val_best"]["loss"] == min(v for _, v in val)
        assert run["tokens_per_s"] == statistics.median(v for _, v in history(client, run_id, "perf/tokens_per_s"))
    assert numbers["budget"]["train_tokens"] == history(client, ids[1], "train/tokens")[-1][1]
    assert "every run holds exactly one point per step per metric" in out
    assert png_size(tmp_path / "loss_vs_tokens.png")[0] > 0 and png_size(tmp_path / "position_loss.png")[0] > 0


def test_a_frozen_server_is_a_one_line_error_within_the_timeout(server, capsys):
    url, proc, _, ids = server
    os.killpg(proc.pid, signal.SIGSTOP)  # connections are accepted by the kernel; nothing answers
    try:
        start = time.monotonic()
        code, _ = rmat("compare", *ids, "--tracking-uri", url, "--timeout", "2")
        elapsed = time.monotonic() - start
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and f"MLflow at {url} did not answer within 2 s" in err, err
    assert elapsed < 2 + 3, elapsed
