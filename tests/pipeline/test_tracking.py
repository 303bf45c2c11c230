"""Points logged while MLflow cannot be reached wait on disk and reach MLflow at the next start;
no kill leaves the embedded store unable to open."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

from pipeline.train.tracking import RunSpec, Tracker, deliver
from tests.pipeline.conftest import REPO


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
    assert up.pending() == 0  # no point file left; the run spec and the sent record stay

    from mlflow.tracking import MlflowClient

    history = MlflowClient(store).get_metric_history(up.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 102))
    assert {m.step: m.value for m in history}[4] == 0.25


def test_close_waits_for_a_sender_still_starting_up(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(RunSpec(store, "rmat", str(tmp_path), None, "starved", flush_seconds=0.1))
    tracker.log(1, {"train/loss": 1.0})
    os.kill(tracker._sender.pid, signal.SIGSTOP)  # a sender starved of CPU, as on a busy machine
    assert tracker.run_id is None  # stopped before its first try of the store
    threading.Timer(6.0, os.kill, (tracker._sender.pid, signal.SIGCONT)).start()
    assert tracker.close(timeout_s=3) is True  # the 3 s count from its first try, not from the close

    from mlflow.tracking import MlflowClient

    assert [m.step for m in MlflowClient(store).get_metric_history(tracker.run_id, "train/loss")] == [1]


def half_migrated_store(path: str) -> None:
    """What a process killed among the store's migrations leaves (seen in kill loops): the schema of a
    later revision under the version number of an earlier one, a table of the next one missing, no run."""
    # In a process of its own: MLflow keeps the store it opened per URI, and this one would go on
    # reading the broken file after the tracker moved it aside.
    create = "import sys; from mlflow.tracking import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"
    subprocess.run([sys.executable, "-c", create, f"sqlite:///{path}"], check=True, capture_output=True, timeout=300)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE alembic_version SET version_num = '181f10493468'")
        db.execute("DROP TABLE experiment_tags")
        db.commit()


def test_a_store_a_kill_left_half_migrated_and_holding_no_run_is_rebuilt(tmp_path):
    store = tmp_path / "mlflow.db"
    half_migrated_store(str(store))
    tracker = Tracker(RunSpec(f"sqlite:///{store}", "rmat", str(tmp_path), None, "rebuilt", flush_seconds=0.1))
    for step in range(1, 6):
        tracker.log(step, {"train/loss": 1.0 / step})
    assert tracker.close(timeout_s=120) is True

    from mlflow.tracking import MlflowClient

    history = MlflowClient(f"sqlite:///{store}").get_metric_history(tracker.run_id, "train/loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3, 4, 5]
    assert len(list(tmp_path.glob("mlflow.db.broken-*"))) == 1  # moved aside, not deleted


def test_the_store_appears_only_once_created_and_a_kill_during_its_creation_leaves_none(tmp_path):
    store = tmp_path / "mlflow.db"
    probe = ("import sys, time; from pipeline.train.tracking import RunSpec, Tracker; "
             f"Tracker(RunSpec('sqlite:///{store}', 'rmat', {str(tmp_path)!r}, None, 'killed', flush_seconds=0.1)); "
             "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", probe], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not (files := list(tmp_path.glob("mlflow.db*"))):
            assert proc.poll() is None and time.monotonic() < deadline, "the sender never began the store"
            time.sleep(0.005)
        assert [f.name for f in files if ".tmp-" not in f.name] == []  # MLflow migrates a temporary file
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the training and its sender, among the migrations
        proc.wait()
    assert not store.exists()
    tracker = Tracker(RunSpec(f"sqlite:///{store}", "rmat", str(tmp_path), None, "after", flush_seconds=0.1))
    tracker.log(1, {"train/loss": 1.0})
    assert tracker.close(timeout_s=120) is True and tracker.run_id is not None


def test_points_a_training_could_not_send_are_delivered_with_its_run_by_the_next_stage(tmp_path):
    store = tmp_path / "blocked" / "mlflow.db"
    store.parent.write_text("")  # a file where the store's folder should be: no store while the training runs
    spec = RunSpec(f"sqlite:///{store}", "rmat", str(tmp_path), None, "late", {"a": 1}, {"t": "x"},
                   flush_seconds=0.1, request_timeout_s=2)
    tracker = Tracker(spec)
    for step in range(1, 11):
        tracker.log(step, {"train/loss": 1.0 / step})
    assert tracker.close(status="FINISHED", timeout_s=60) is False and tracker.run_id is None
    store.parent.unlink()

    run_id = deliver(str(tmp_path))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1"} and run.data.tags["t"] == "x"
    history = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 11))
    assert not [n for n in os.listdir(tmp_path / "mlflow_outbox") if n.endswith(".jsonl")]
    assert deliver(str(tmp_path)) == run_id and client.get_run(run_id).info.status == "FINISHED"  # left as it was
