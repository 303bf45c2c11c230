"""A pipeline's runs in one MLflow store, with lineage.

The store is the training config's ``tracking.tracking_uri``, else $MLFLOW_TRACKING_URI,
else an embedded one beside the pipeline's jobs (``runs/pipelines/NAME/mlflow.db``); the
experiment is the pipeline's name. Each submission that has work to do is a parent run
named after the pipeline (tag ``rmat.kind=pipeline``, the resolved ``pipeline.yaml`` as an
artifact); each data-prep stage job and the training are its children (``mlflow.parentRunId``).

Like training's tracker, this never stops the work: a store that does not answer within
the training's ``tracking.request_timeout_s`` is a warning, and the stage goes on untracked.
Importing this module loads no MLflow (``rmat status`` builds the stage graph with it).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional, TypeVar

from pipeline.pipeline_config import PipelineConfig
from pipeline.train.tracking import (
    KIND_TAG,
    dataset_input,
    ensure_sqlite_store,
    experiment_id,
    git_commit,
    log_params,
    request_limits,
)

T = TypeVar("T")
STAGE_TAG = "rmat.stage"
STORE = "mlflow.db"


@dataclass
class Lineage:
    """Where a pipeline's runs go, and the submission run they are children of ("" for none)."""

    uri: str
    experiment: str
    artifacts_dir: str  # an embedded store's artifacts
    parent_run_id: str = ""
    timeout_s: float = 5.0


def lineage_of(cfg: PipelineConfig, parent_run_id: str = "") -> Lineage:
    """The pipeline's store and experiment (no MLflow call)."""
    uri = (cfg.train.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
           or f"sqlite:///{os.path.abspath(cfg.run_dir)}/{STORE}")
    return Lineage(uri, cfg.name, os.path.join(os.path.abspath(cfg.run_dir), "mlartifacts"), parent_run_id,
                   cfg.train.tracking.request_timeout_s)


class PipelineRun:
    """One run of the pipeline's store; every call that MLflow refuses is a warning, not an error."""

    def __init__(self, lineage: Lineage, run_id: str, log: Callable[[str], None]) -> None:
        self.lineage, self.run_id, self.log = lineage, run_id, log

    def call(self, what: str, fn: Callable[..., T]) -> Optional[T]:
        """``fn(client)`` within the request limits; None (and a warning naming the store) if it fails."""
        return _tolerant(self.lineage, what, self.log, fn)

    def log_dataset(self, dataset: dict, context: str) -> None:
        self.call(f"dataset {dataset['name']}", lambda c: c.log_inputs(self.run_id, [dataset_input(dataset, context)]))

    def log_files(self, paths: list[str], artifact_path: Optional[str] = None) -> None:
        for path in paths:
            self.call(os.path.basename(path), lambda c, p=path: c.log_artifact(self.run_id, p, artifact_path))

    def log_bytes(self, name: str, data: bytes) -> None:
        """A file of ``data`` named ``name`` as an artifact (a figure made in memory)."""
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, name)
            with open(path, "wb") as f:
                f.write(data)
            self.log_files([path])

    def end(self, status: str) -> None:
        self.call(f"the status {status}", lambda c: c.set_terminated(self.run_id, status))


def start_run(lineage: Lineage, name: str, tags: dict[str, str], params: dict[str, object],
              log: Callable[[str], None] = print) -> Optional[PipelineRun]:
    """A new run in the pipeline's experiment, a child of the submission's run if there is one; None if
    the store did not take it (warned)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    if lineage.parent_run_id:
        tags = {**tags, MLFLOW_PARENT_RUN_ID: lineage.parent_run_id}

    def create(client) -> str:
        if lineage.uri.startswith("sqlite:///"):
            ensure_sqlite_store(lineage.uri)
        exp = experiment_id(client, lineage.experiment, lineage.uri, lineage.artifacts_dir)
        run_id = client.create_run(exp, run_name=name, tags=tags).info.run_id
        log_params(client, run_id, params)
        return run_id

    run_id = _tolerant(lineage, f"the run {name!r}", log, create)
    return None if run_id is None else PipelineRun(lineage, run_id, log)


def start_submission(cfg: PipelineConfig, cluster: str, config_file: str,
                     log: Callable[[str], None] = print) -> Lineage:
    """The submission's parent run (named after the pipeline, holding ``config_file``): the lineage its jobs
    log under. Without a store that answers, the jobs run untracked by it."""
    lineage = lineage_of(cfg)
    tags = {KIND_TAG: "pipeline", "rmat.cluster": cluster, "git_commit": git_commit()}
    run = start_run(lineage, cfg.name, tags, {}, log)
    if run is None:
        return lineage
    run.log_files([config_file])
    lineage.parent_run_id = run.run_id
    return lineage


def end_submission(lineage: Lineage, status: str, log: Callable[[str], None] = print) -> None:
    """The submission's run ends with ``status`` (on a scheduler: once every job is queued)."""
    if lineage.parent_run_id:
        PipelineRun(lineage, lineage.parent_run_id, log).end(status)


@contextlib.contextmanager
def stage_run(lineage: Lineage, stage: str, params: dict[str, object],
              log: Callable[[str], None] = print) -> Iterator[Optional[PipelineRun]]:
    """A data-prep stage's run for the block's duration: FINISHED after it, FAILED if it raises."""
    name = f"{lineage.experiment} {stage}"
    run = start_run(lineage, name, {KIND_TAG: "prep", STAGE_TAG: stage}, params, log)
    try:
        yield run
    except BaseException:
        if run is not None:
            run.end("FAILED")
        raise
    if run is not None:
        run.end("FINISHED")


def _tolerant(lineage: Lineage, what: str, log: Callable[[str], None], fn: Callable[..., T]) -> Optional[T]:
    from mlflow.tracking import MlflowClient

    try:
        with request_limits(lineage.timeout_s):
            return fn(MlflowClient(lineage.uri))
    except Exception as e:  # any tracker failure (network, server, database): the work goes on
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        log(f"rmat: warning: MLflow at {lineage.uri} did not take {what} ({first}); going on without it")
        return None
