"""MLflow tracking that can never slow or stop training.

The training loop only puts points on a queue. A background writer thread moves
them to an outbox of small JSONL files in the run folder, then sends the outbox,
oldest file first, with ``MlflowClient.log_batch`` and deletes each file once
MLflow has it. When the tracking server is down or hangs, short timeouts make the
send fail fast and the files wait for the next try, or for the next start. At a
checkpoint the loop moves the queue to the outbox itself, so every point of every
step a checkpoint covers survives a kill.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Iterable
from typing import Optional

OUTBOX = "mlflow_outbox"
RUN_ID_FILE = "mlflow_run_id"
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
OUTBOX_FILE = re.compile(r"^(\d{10})\.jsonl$")


def tracking_uri(configured: str, run_dir: str) -> str:
    """The config's URI, else $MLFLOW_TRACKING_URI, else an embedded sqlite store in the run folder."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(run_dir)}/mlflow.db"


def saved_run_id(run_dir: str) -> Optional[str]:
    """The MLflow run this run folder already created, if any."""
    path = os.path.join(run_dir, RUN_ID_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


def forget_unfinished_attempt(run_dir: str) -> None:
    """A fresh start: drop the unsent points and the run id of an attempt that left no checkpoint."""
    shutil.rmtree(os.path.join(run_dir, OUTBOX), ignore_errors=True)
    if os.path.exists(os.path.join(run_dir, RUN_ID_FILE)):
        os.remove(os.path.join(run_dir, RUN_ID_FILE))


class Tracker:
    """One MLflow run fed from a background writer thread (use from rank 0 only)."""

    def __init__(self, uri: str, experiment: str, run_dir: str, run_id: Optional[str], run_name: str,
                 params: dict[str, object], tags: dict[str, str], flush_seconds: float = 2.0,
                 request_timeout_s: int = 5) -> None:
        # Read by MLflow on every request: fail within seconds instead of retrying for minutes.
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(request_timeout_s)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        self.uri, self.experiment, self.run_dir, self.run_name = uri, experiment, run_dir, run_name
        self.params, self.tags, self.flush_seconds = params, tags, flush_seconds
        self.outbox = os.path.join(run_dir, OUTBOX)
        os.makedirs(self.outbox, exist_ok=True)
        self._run_id, self._resumed = run_id, run_id is not None
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._seq = max(self._pending_files(), default=-1) + 1
        self._stop = threading.Event()
        self._client = None
        self._artifacts: list[str] = []
        self._status = "FINISHED"
        self.sent = 0
        self._thread = threading.Thread(target=self._work, name="mlflow-writer", daemon=True)
        self._thread.start()

    @property
    def run_id(self) -> Optional[str]:
        """The MLflow run id, once the writer has reached the tracking store (None before)."""
        return self._run_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Queue one point per metric; never blocks, never raises for the tracker's sake."""
        now = int(time.time() * 1000)
        self._queue.put([(k, float(v), now, step) for k, v in metrics.items()])

    def persist(self) -> None:
        """Move every queued point to the outbox on disk (milliseconds; no network)."""
        points: list[tuple] = []
        while True:
            try:
                points.extend(self._queue.get_nowait())
            except queue.Empty:
                break
        if not points:
            return
        with self._lock:
            path = os.path.join(self.outbox, f"{self._seq:010d}.jsonl")
            self._seq += 1
            with open(path + ".tmp", "w") as f:
                f.writelines(json.dumps(p) + "\n" for p in points)
            os.replace(path + ".tmp", path)

    def pending(self) -> int:
        """Outbox files not yet in MLflow."""
        return len(self._pending_files())

    def close(self, artifacts: Iterable[str] = (), status: str = "FINISHED", timeout_s: float = 30.0) -> bool:
        """Send what is left, upload ``artifacts``, set the run's ``status``; wait at most ``timeout_s``.

        Returns whether everything reached MLflow; what did not stays in the outbox for the next start.
        """
        self._artifacts, self._status = list(artifacts), status
        self._stop.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive() and self.pending() == 0

    # ---- the writer thread -----------------------------------------------------------

    def _pending_files(self) -> list[int]:
        return sorted(int(m.group(1)) for name in os.listdir(self.outbox) if (m := OUTBOX_FILE.match(name)))

    def _work(self) -> None:
        while True:
            stopping = self._stop.wait(self.flush_seconds)
            self.persist()
            try:
                self._connect()
                self._send_outbox()
                if stopping:
                    self._finish()
            except Exception:  # any tracker failure (network, server, database): the outbox keeps the points
                pass
            if stopping:
                return

    def _connect(self) -> None:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        if self._run_id is None:
            self._run_id = self._create_run()
            tmp = os.path.join(self.run_dir, RUN_ID_FILE + ".tmp")
            with open(tmp, "w") as f:
                f.write(self._run_id)
            os.replace(tmp, os.path.join(self.run_dir, RUN_ID_FILE))
        elif self._resumed:
            self._client.update_run(self._run_id, status="RUNNING")
            self._resumed = False

    def _create_run(self) -> str:
        from mlflow.entities import Param

        exp = self._client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:"):
                location = "file://" + os.path.abspath(os.path.join(self.run_dir, "mlartifacts"))
            exp_id = self._client.create_experiment(self.experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        run = self._client.create_run(exp_id, run_name=self.run_name,
                                      tags={k: str(v) for k, v in self.tags.items()})
        params = [Param(k, str(v)[:6000]) for k, v in self.params.items()]
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            self._client.log_batch(run.info.run_id, params=params[i:i + MAX_PARAMS_PER_BATCH])
        return run.info.run_id

    def _send_outbox(self) -> None:
        from mlflow.entities import Metric

        for seq in self._pending_files():
            path = os.path.join(self.outbox, f"{seq:010d}.jsonl")
            with open(path) as f:
                metrics = [Metric(*json.loads(line)) for line in f if line.strip()]
            for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                self._client.log_batch(self._run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
            # A kill (or a timed-out request that the server still carries out) before this removal
            # sends the file again: a duplicate point, never a lost one.
            os.remove(path)
            self.sent += len(metrics)

    def _finish(self) -> None:
        for path in self._artifacts:
            self._client.log_artifact(self._run_id, path)
        self._client.set_terminated(self._run_id, self._status)
