"""A tracking server that hangs for 30 s mid-run neither slows training nor loses a point."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time

import pytest

from tests.mlflow_server import BACKENDS, running_server
from tests.pipeline.conftest import REPO, read_jsonl, train_command

# The step times before the outage are the baseline: as many seconds of them as the outage
# lasts, since a median over a few seconds swings by a third on 2 shared cores.
OUTAGE_S, BASELINE_S, WARMUP, JITTER_S = 30.0, 30.0, 50, 0.030


@pytest.fixture(params=BACKENDS)
def mlflow_server(request, tmp_path):
    """A real MLflow tracking server on a real database, one worker, loopback port."""
    with running_server(request.param, str(tmp_path)) as (url, server):
        yield url, server


def _wait_for_steps(log: str, n: int, proc: subprocess.Popen) -> None:
    while not (os.path.exists(log) and len(read_jsonl(log)) >= n):
        assert proc.poll() is None, "training ended early"
        time.sleep(0.05)


def _outbox_empty(run_dir: str) -> bool:
    folder = os.path.join(run_dir, "mlflow_outbox")
    return os.path.isdir(folder) and not [f for f in os.listdir(folder) if f.endswith(".jsonl")]


def _summary(name: str, times: list[float]) -> str:
    p99 = sorted(times)[int(0.99 * (len(times) - 1))]
    return (f"{name}: {len(times)} steps, median {statistics.median(times) * 1e3:.1f} ms, "
            f"p99 {p99 * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms")


def test_frozen_tracking_server_neither_stalls_training_nor_loses_points(mlflow_server, shards, tmp_path):
    url, server = mlflow_server
    run_dir = str(tmp_path / "run")
    log = os.path.join(run_dir, "losses.jsonl")
    # Far more steps than the test needs, so that any machine outlasts the outage; SIGTERM ends the run.
    with open(tmp_path / "train.err", "w") as err:
        train = subprocess.Popen(
            train_command(run_dir, shards, "steps=1000000", "checkpoint.every=0", "eval.every=0",
                          "tracking.flush_seconds=1", nproc=1),
            cwd=REPO, env={**os.environ, "MLFLOW_TRACKING_URI": url}, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True)
        _wait_for_steps(log, WARMUP, train)
        time.sleep(BASELINE_S)
        os.killpg(server.pid, signal.SIGSTOP)  # the server hangs: connections open, no answers
        frozen_from = len(read_jsonl(log))
        time.sleep(OUTAGE_S)
        frozen_to = len(read_jsonl(log))
        os.killpg(server.pid, signal.SIGCONT)
        deadline = time.monotonic() + 180
        while not _outbox_empty(run_dir):  # the writer catches up while training goes on
            assert train.poll() is None and time.monotonic() < deadline, "the backlog never drained"
            time.sleep(0.2)
        _wait_for_steps(log, len(read_jsonl(log)) + 100, train)
        train.send_signal(signal.SIGTERM)
        assert train.wait(timeout=300) == 0, (tmp_path / "train.err").read_text()[-3000:]

    records = read_jsonl(log)
    last_step = records[-1]["step"]
    times = [r["step_time_s"] for r in records]
    median = statistics.median(times[WARMUP:])
    before, during, after = times[WARMUP:frozen_from], times[frozen_from:frozen_to], times[frozen_to:]
    report = "; ".join([_summary("before", before), _summary("outage", during), _summary("catch-up", after),
                        f"median of all steps {median * 1e3:.1f} ms"])
    print(report)
    assert len(during) > 100, report
    # Neither the outage nor the catch-up after it may stall a step: a training that waited on the
    # tracker would wait out its request timeout (seconds), a hundred steps' time. The bounds leave
    # room for what 2 cores shared with the server, its database and this test do to a 40 ms step
    # (medians 1.0-1.25x the baseline's, single steps 2-3x the median, measured in passing runs):
    # speed itself is measured by the benchmarks, not here.
    for window in (during, after):
        assert statistics.median(window) < 1.5 * statistics.median(before), report
        assert max(window) < 4 * median + JITTER_S, report

    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("rmat").experiment_id])
    assert run.info.status == "KILLED"  # stopped by SIGTERM before its last step
    for key in ("train/loss", "perf/step_time_s"):
        steps = {m.step for m in client.get_metric_history(run.info.run_id, key)}
        assert steps == set(range(1, last_step + 1)), f"{key}: {last_step - len(steps)} points missing"
    assert _outbox_empty(run_dir)
