"""Points logged while MLflow cannot be reached wait on disk and reach MLflow at the next start."""

from __future__ import annotations

import os
import socket
import time

from pipeline.train.tracking import RunSpec, Tracker


def _dead_uri() -> str:
    with socket.socket() as s:  # a port nobody listens on: every request is refused at once
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_points_kept_while_unreachable_are_sent_at_the_next_start(tmp_path):
    run_dir = str(tmp_path)
    down = Tracker(RunSpec(_dead_uri(), "rmat", run_dir, None, "outage", {"a": 1}, {"t": "x"}, flush_seconds=0.1,
                           request_timeout_s=2))
    start = time.perf_counter()
    for step in range(1, 101):
        down.log(step, {"train/loss": 1.0 / step})
    assert time.perf_counter() - start < 0.1  # logging never waits for the tracker
    assert down.close(timeout_s=60) is False
    assert down.run_id is None and down.pending() > 0

    store = f"sqlite:///{run_dir}/mlflow.db"
    up = Tracker(RunSpec(store, "rmat", run_dir, None, "outage", {"a": 1}, {"t": "x"}, flush_seconds=0.1))
    up.log(101, {"train/loss": 0.5})
    assert up.close(timeout_s=120) is True
    assert not os.listdir(up.outbox)

    from mlflow.tracking import MlflowClient

    history = MlflowClient(store).get_metric_history(up.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 102))
    assert {m.step: m.value for m in history}[4] == 0.25
