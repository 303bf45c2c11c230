"""MLflow tracking that can never slow or stop training.

The training loop only puts points on a queue. A background thread creates (or
resumes) the run and sends the points in batches with ``MlflowClient.log_batch``;
when the tracking server is down or hangs, short timeouts make the call fail fast
and the points go to a local JSONL spill file, which is replayed, oldest first,
as soon as the server answers again, or at the next start.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterable
from typing import Optional

SPILL = "mlflow_spill.jsonl"
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
MAX_PARAMS_PER_BATCH = 100


def tracking_uri(configured: str, run_dir: str) -> str:
    """The config's URI, else $MLFLOW_TRACKING_URI, else an embedded sqlite store in the run folder."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(run_dir)}/mlflow.db"


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
        self.spill_path = os.path.join(run_dir, SPILL)
        self._run_id, self._resumed = run_id, run_id is not None
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._client = None
        self._artifacts: list[str] = []
        self.sent = self.spilled = 0
        self._thread = threading.Thread(target=self._work, name="mlflow-writer", daemon=True)
        self._thread.start()

    @property
    def run_id(self) -> Optional[str]:
        """The MLflow run id, once the writer has reached the server (None before)."""
        return self._run_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Queue one point per metric; never blocks, never raises for the tracker's sake."""
        now = int(time.time() * 1000)
        self._queue.put([(k, float(v), now, step) for k, v in metrics.items()])

    def close(self, artifacts: Iterable[str] = (), timeout_s: float = 30.0) -> bool:
        """Flush, upload ``artifacts`` and mark the run finished, waiting at most ``timeout_s``.

        Returns whether everything reached MLflow; what did not stays in the spill file.
        """
        self._artifacts = list(artifacts)
        self._stop.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive() and not os.path.exists(self.spill_path)

    # ---- the writer thread -----------------------------------------------------------

    def _work(self) -> None:
        while True:
            stopping = self._stop.wait(self.flush_seconds)
            self._flush(self._drain())
            if stopping:
                self._finish()
                return

    def _drain(self) -> list[tuple]:
        points: list[tuple] = []
        while True:
            try:
                points.extend(self._queue.get_nowait())
            except queue.Empty:
                return points

    def _flush(self, points: list[tuple]) -> None:
        try:
            self._connect()
            self._replay()
            self._send(points)
        except Exception:  # any failure of the tracker (network, server, database) means: keep it for later
            self._spill(points)

    def _connect(self) -> None:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        if self._run_id is None:
            self._run_id = self._create_run()
        elif self._resumed:
            self._client.update_run(self._run_id, status="RUNNING")
            self._resumed = False

    def _create_run(self) -> str:
        from mlflow.entities import Param, RunTag

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
            self._client.log_batch(run.info.run_id, params=params[i:i + MAX_PARAMS_PER_BATCH],
                                   tags=[RunTag("mlflow.runName", self.run_name)] if i == 0 else [])
        return run.info.run_id

    def _send(self, points: list[tuple]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, v, ts, step) for k, v, ts, step in points]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self._client.log_batch(self._run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
            self.sent += len(metrics[i:i + MAX_METRICS_PER_BATCH])

    def _spill(self, points: list[tuple]) -> None:
        if not points:
            return
        with open(self.spill_path, "a") as f:
            f.writelines(json.dumps(p) + "\n" for p in points)
        self.spilled += len(points)

    def _replay(self) -> None:
        if not os.path.exists(self.spill_path):
            return
        with open(self.spill_path) as f:
            points = [tuple(json.loads(line)) for line in f if line.strip()]
        self._send(points)
        # A kill between the send and this removal replays the points again: a duplicate, never a loss.
        os.remove(self.spill_path)

    def _finish(self) -> None:
        try:
            self._connect()
            self._replay()
            for path in self._artifacts:
                self._client.log_artifact(self._run_id, path)
            self._client.set_terminated(self._run_id, "FINISHED")
        except Exception:  # the points are in the spill file; the next start replays them
            return
