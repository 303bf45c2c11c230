"""Runs read from any MLflow tracking store through MLflow's own client.

A store that does not answer must fail in seconds with one line that names it, never
hang: every HTTP request gets ``timeout_s`` (MLflow's ``MLFLOW_HTTP_REQUEST_TIMEOUT``)
and no retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``; its default of 7 with backoff
waits minutes on a refused connection). A missing embedded (sqlite) store is refused
before MLflow would create an empty one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, TypeVar

from pipeline.train.tracking import KIND_TAG

T = TypeVar("T")
HISTORY_THREADS = 8  # metric histories are one request each: a server answers several at once


class CompareError(RuntimeError):
    """What ``rmat compare`` cannot do, in one line naming the run, key or URI and what to do."""


class Point(NamedTuple):
    step: int
    value: float
    timestamp: int


@dataclass
class RunData:
    """One run as the store holds it: identity, status, params and every metric's points in step order."""

    run_id: str
    name: str
    experiment: str
    status: str
    start_ms: int
    end_ms: Optional[int]
    params: dict[str, str]
    history: dict[str, list[Point]]


@dataclass
class RunQuery:
    """Which runs: these ids, or those of ``experiment`` that match ``filter`` (MLflow's search syntax)."""

    run_ids: list[str] = field(default_factory=list)
    experiment: str = ""
    filter: str = ""


class Store:
    """An MLflow tracking store, read only; every failure becomes a ``CompareError`` naming the URI."""

    def __init__(self, uri: str, timeout_s: float) -> None:
        from mlflow.tracking import MlflowClient

        if uri.startswith("sqlite:///") and not os.path.isfile(uri.removeprefix("sqlite:///")):
            raise CompareError(f"no MLflow store at {uri.removeprefix('sqlite:///')}; pass --tracking-uri "
                               "or set MLFLOW_TRACKING_URI to the store that holds the runs")
        self.uri, self.timeout_s = uri, timeout_s
        self.client = MlflowClient(uri)

    def find(self, query: RunQuery) -> list:
        """The MLflow runs the query names, in the order given (run ids) or, of an experiment's, the trainings
        oldest first."""
        if query.run_ids:
            return [self._ask(f"run {run_id}", self.client.get_run, run_id) for run_id in query.run_ids]
        experiment = self._ask(f"experiment {query.experiment!r}", self.client.get_experiment_by_name,
                               query.experiment)
        if experiment is None:
            raise CompareError(f"no experiment {query.experiment!r} in {self.uri}; name one the store holds "
                               "(mlflow experiments search) or pass --tracking-uri")
        what = f"runs of experiment {query.experiment!r}" + (f" with filter {query.filter!r}" if query.filter else "")
        # A pipeline's experiment also holds its submissions' and data-prep stages' runs: not trainings.
        runs = [r for r in self._ask(what, self._search, experiment.experiment_id, query.filter)
                if r.data.tags.get(KIND_TAG, "train") == "train"]
        if not runs:
            raise CompareError(f"no {what} in {self.uri}")
        return sorted(runs, key=lambda r: r.info.start_time)

    def read(self, runs: list) -> list[RunData]:
        """Every metric's full history of each run (requests in parallel), with the run's identity and params."""
        names = {r.info.experiment_id: "" for r in runs}
        for exp_id in names:
            names[exp_id] = self._ask(f"experiment {exp_id}", self.client.get_experiment, exp_id).name
        wanted = [(r.info.run_id, key) for r in runs for key in sorted(r.data.metrics)]
        with ThreadPoolExecutor(HISTORY_THREADS) as pool:
            histories = list(pool.map(lambda rk: self._history(*rk), wanted))
        by_run: dict[str, dict[str, list[Point]]] = {r.info.run_id: {} for r in runs}
        for (run_id, key), points in zip(wanted, histories, strict=True):
            by_run[run_id][key] = points
        return [RunData(r.info.run_id, r.info.run_name or r.info.run_id, names[r.info.experiment_id], r.info.status,
                        r.info.start_time, r.info.end_time, dict(r.data.params), by_run[r.info.run_id])
                for r in runs]

    def _search(self, experiment_id: str, filter_string: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], filter_string, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _history(self, run_id: str, key: str) -> list[Point]:
        metrics = self._ask(f"metric {key} of run {run_id}", self.client.get_metric_history, run_id, key)
        return sorted((Point(m.step, m.value, m.timestamp) for m in metrics), key=lambda p: (p.step, p.timestamp))

    def _ask(self, what: str, call: Callable[..., T], *args) -> T:
        from mlflow.exceptions import MlflowException

        try:
            return call(*args)
        except MlflowException as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, OSError):  # requests' errors (timeouts, refused connections) are OSErrors
                raise CompareError(f"MLflow at {self.uri} did not answer within {self.timeout_s:g} s "
                                   f"({type(cause).__name__}); check that the server is up, or pass another "
                                   "--tracking-uri (or MLFLOW_TRACKING_URI)") from None
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise CompareError(f"{what} is not in {self.uri}; check the id, or pass the --tracking-uri "
                                   "of the store that holds it") from None
            raise CompareError(f"{what} in {self.uri}: {_first_line(e.message)}") from None


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]
