"""MLflow tracking that can never slow or stop training.

The training loop only puts points on a queue. A thread moves them, every few seconds,
to an outbox of small JSONL files in the run folder (milliseconds, no network). A
separate, niced sender process creates or resumes the MLflow run and sends the
outbox, oldest file first, with ``MlflowClient.log_batch``, deleting each file once
MLflow has it. Being a process, the MLflow client never competes with training for
the GIL or stops it for a garbage collection. When the tracking server is down or
hangs, short timeouts make a send fail fast and the files wait for the next try, or
for the next start (a resumed training, or the pipeline's evaluate stage, which sends
them itself). At a checkpoint the loop moves the queue to the outbox itself, so every
point of every step a checkpoint covers survives a kill.

Exactly one point per step and metric, whatever was killed: a resumed training redoes
the steps after its checkpoint, and logs again only the points that neither reached
MLflow (``sent.json``, the last step sent per metric) nor wait in the outbox. A fresh
start that abandons an attempt without a checkpoint marks that attempt's run KILLED.
The embedded sqlite store is created under a temporary name and renamed into place, so
a kill during its (seconds-long) migrations never leaves a store that cannot open.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Optional

from data_prep.atomic import write_atomic

OUTBOX = "mlflow_outbox"
RUN_ID_FILE = "mlflow_run_id"
CLOSE_FILE = "close.json"  # in the outbox: the training is over, finish the run
SPEC_FILE = "run_spec.json"  # in the outbox: how to create the run, for whoever sends the outbox next
SENT_FILE = "sent.json"  # in the outbox: per metric, the last step MLflow has
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000
MAX_DIGEST = 36  # characters of a dataset digest MLflow stores
KIND_TAG = "rmat.kind"  # what a run is: "train", or a pipeline's "pipeline" (its submission) or "prep" (a stage)
MAX_FILES_PER_FLUSH = 5  # while training: a backlog goes out a few files per flush, not in one burst
OUTBOX_FILE = re.compile(r"^(\d{10})\.jsonl$")


def tracking_uri(configured: str, run_dir: str) -> str:
    """The config's URI, else $MLFLOW_TRACKING_URI, else an embedded sqlite store in the run folder."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(run_dir)}/mlflow.db"


def git_commit() -> str:
    """The commit of the code that runs (tagged on every run), or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def saved_run_id(run_dir: str) -> Optional[str]:
    """The MLflow run this run folder already created, if any."""
    path = os.path.join(run_dir, RUN_ID_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


class TrackedRun:
    """The MLflow run a training feeds, as checkpoint state: a resumed training continues its run."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir, self.run_id = run_dir, None

    def state_dict(self) -> dict[str, Optional[str]]:
        # The sender creates the run and saves its id in the run folder: the newest word on it.
        return {"run_id": saved_run_id(self.run_dir) or self.run_id}

    def load_state_dict(self, state: dict[str, Optional[str]]) -> None:
        # The run may have been created after this checkpoint was written.
        self.run_id = state["run_id"] or saved_run_id(self.run_dir)


def forget_unfinished_attempt(run_dir: str) -> Optional[str]:
    """A fresh start: drop the unsent points and the run id of an attempt that left no checkpoint.

    Returns that attempt's MLflow run id, if it made one: the new run's sender marks it KILLED.
    """
    abandoned = saved_run_id(run_dir)
    shutil.rmtree(os.path.join(run_dir, OUTBOX), ignore_errors=True)
    if os.path.exists(os.path.join(run_dir, RUN_ID_FILE)):
        os.remove(os.path.join(run_dir, RUN_ID_FILE))
    return abandoned


def logged_steps(outbox: str) -> dict[str, int]:
    """Per metric, the last step already logged: sent to MLflow (``sent.json``) or waiting in the outbox."""
    last = dict(_read_json(os.path.join(outbox, SENT_FILE)) or {})
    if not os.path.isdir(outbox):
        return last
    for name in pending_files(outbox):
        last = logged_steps_of(_read_points(os.path.join(outbox, name)), last)
    return last


def logged_steps_of(points: Iterable[tuple], last: dict[str, int]) -> dict[str, int]:
    """``last`` (metric -> last step) moved on by ``points`` (key, value, time, step)."""
    out = dict(last)
    for key, _value, _time, step in points:
        out[key] = max(step, out.get(key, step))
    return out


def pending_files(outbox: str) -> list[str]:
    """The outbox's point files, oldest first."""
    return sorted(name for name in os.listdir(outbox) if OUTBOX_FILE.match(name))


@dataclass
class RunSpec:
    """What the sender process needs to create (or resume) the run and reach the store."""

    uri: str
    experiment: str
    run_dir: str
    run_id: Optional[str]
    run_name: str
    params: dict[str, object] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    flush_seconds: float = 2.0
    request_timeout_s: int = 5
    abandoned_run_id: Optional[str] = None  # a run an earlier attempt left RUNNING: marked KILLED
    parent_run_id: Optional[str] = None  # the pipeline submission this run belongs to
    dataset: Optional[dict] = None  # ``folder_dataset``: the data the run trains on, logged as its input


class Tracker:
    """One MLflow run fed through an on-disk outbox by a sender process (use from rank 0 only)."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.outbox = os.path.join(spec.run_dir, OUTBOX)
        os.makedirs(self.outbox, exist_ok=True)
        stale = os.path.join(self.outbox, CLOSE_FILE)
        if os.path.exists(stale):
            os.remove(stale)
        _atomic_text(os.path.join(self.outbox, SPEC_FILE), json.dumps(asdict(spec)))
        # Steps a killed attempt logged past its checkpoint are redone now: their points are logged once.
        self._logged = logged_steps(self.outbox)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._seq = max((int(OUTBOX_FILE.match(n).group(1)) for n in pending_files(self.outbox)), default=-1) + 1
        self._stop = threading.Event()
        self._mover = threading.Thread(target=self._move, name="mlflow-outbox", daemon=True)
        self._mover.start()
        # spawn: a fresh interpreter, so the sender shares no lock or thread state with training.
        context = multiprocessing.get_context("spawn")
        self._tried = context.Event()  # set once the sender has tried the store: reached it or failed to
        self._sender = context.Process(target=run_sender, args=(spec, os.getpid(), self._tried),
                                       name="mlflow-sender", daemon=True)
        self._sender.start()

    @property
    def run_id(self) -> Optional[str]:
        """The MLflow run id, once the sender has reached the tracking store (None before)."""
        return self.spec.run_id or saved_run_id(self.spec.run_dir)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Queue one point per metric not logged at this step before; never blocks or raises for the tracker."""
        now = int(time.time() * 1000)
        points = [(k, float(v), now, step) for k, v in metrics.items() if step > self._logged.get(k, -1)]
        if points:
            self._queue.put(points)

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
            _atomic_text(path, "".join(json.dumps(p) + "\n" for p in points))

    def pending(self) -> int:
        """Outbox files not yet in MLflow."""
        return len(pending_files(self.outbox))

    def close(self, artifacts: Iterable[str] = (), status: str = "FINISHED", timeout_s: float = 30.0,
              startup_timeout_s: float = 300.0) -> bool:
        """Send what is left, upload ``artifacts``, set the run's ``status``; wait at most ``timeout_s``.

        The ``timeout_s`` counts from the sender's first try of the store: a sender still starting
        up (importing MLflow, migrating a new sqlite store: a minute and more on a busy machine,
        where the niced sender gets little CPU) is waited for up to ``startup_timeout_s``, while
        one that tried and could not reach its store is given ``timeout_s`` only.
        Returns whether everything reached MLflow; what did not stays in the outbox for the next start.
        """
        self._stop.set()
        self._mover.join()
        self.persist()
        request = {"artifacts": [os.path.abspath(a) for a in artifacts], "status": status}
        _atomic_text(os.path.join(self.outbox, CLOSE_FILE), json.dumps(request))
        self._wait_for_first_try(startup_timeout_s)
        self._sender.join(timeout_s)
        if self._sender.is_alive():
            self._sender.terminate()
            return False
        return self._sender.exitcode == 0 and self.pending() == 0

    def _wait_for_first_try(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while self._sender.is_alive() and time.monotonic() < deadline:
            if self._tried.wait(0.5):
                return

    def _move(self) -> None:
        while not self._stop.wait(self.spec.flush_seconds):
            self.persist()


def _atomic_text(path: str, text: str) -> None:
    # No fsync: outbox files are written every few seconds beside training; a file lost in a
    # power cut costs its points, never a half-read file.
    write_atomic(path, text.encode(), durable=False)


def _read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _read_points(path: str) -> list[tuple]:
    with open(path) as f:
        return [tuple(json.loads(line)) for line in f if line.strip()]


class TrackerUnreachable(RuntimeError):
    """The tracking store could not take what waits in the outbox; it stays there for the next try."""


def deliver(run_dir: str) -> str:
    """Send what a training left in its outbox, in this process; returns the MLflow run id.

    Creates the run if the training never reached MLflow, sends every waiting point, and
    finishes the run as the training asked when it closed. The pipeline's evaluate stage
    calls this first, so that a tracker outage during training delays the run's metrics
    and never leaves the pipeline unable to finish. Raises ``TrackerUnreachable``, naming
    the store and the outbox, if the store cannot take them (retry once it is back).
    """
    outbox = os.path.join(run_dir, OUTBOX)
    spec = _read_json(os.path.join(outbox, SPEC_FILE))
    if spec is None:
        run_id = saved_run_id(run_dir)
        if run_id is None:
            raise FileNotFoundError(f"{run_dir}: the training never started its tracker (no {OUTBOX}/{SPEC_FILE} "
                                    "and no run id); rerun it")
        return run_id
    sender = _Sender(RunSpec(**spec))
    sender.resumed = False  # no training resumes here: the run keeps the status the training gave it
    close = _read_json(os.path.join(outbox, CLOSE_FILE))
    try:
        sender.connect()
        sender.send(None)
        if close is not None:
            sender.finish(close["artifacts"], close["status"])
    except Exception as e:
        raise TrackerUnreachable(f"MLflow at {spec['uri']} did not take the training's points ({e}); they wait "
                                 f"in {outbox}: rerun once it answers") from e
    return sender.run_id


@contextlib.contextmanager
def request_limits(timeout_s: float) -> Iterator[None]:
    """MLflow's HTTP requests time out after ``timeout_s`` and are not retried, inside this block only.

    MLflow's defaults (120 s, 7 retries with backoff) keep a caller waiting minutes on a
    server that is down; its variables are read at every request.
    """
    limits = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(timeout_s))), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    before = {k: os.environ.get(k) for k in limits}
    os.environ.update(limits)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def folder_dataset(url: str, sha256: str) -> dict:
    """A data folder as an MLflow dataset: named after the folder, ``sha256`` (of its manifest) as digest, cut to
    MLflow's 36 characters (whole in the profile), the folder's URL as source. Data prep logs its shard folder
    as its output and training as its input, so both name the same dataset."""
    if "://" not in url:
        url = "file://" + os.path.abspath(url)
    return {"name": os.path.basename(url.rstrip("/")), "digest": sha256[:MAX_DIGEST],
            "source_type": "local" if url.startswith("file://") else url.split("://")[0],
            "source": json.dumps({"uri": url}), "profile": json.dumps({"sha256": sha256})}


def dataset_input(dataset: dict, context: str):
    """``dataset`` (as ``folder_dataset`` gives it) as MLflow's input entity, tagged with ``context``."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    return DatasetInput(Dataset(**dataset), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def experiment_id(client, name: str, uri: str, artifacts_dir: str) -> str:
    """Experiment ``name``'s id, created if missing (an embedded store's with artifacts in ``artifacts_dir``)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = "file://" + os.path.abspath(artifacts_dir) if uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=location)


def ensure_sqlite_store(uri: str) -> None:
    """An embedded sqlite store that opens: created under a temporary name, then renamed into place.

    MLflow creates a store by running dozens of migrations on the file itself, over
    seconds; a process killed among them left a file every later open failed on ("table
    ... already exists"). One left so by an earlier version, which holds no run, is moved
    aside (``NAME.broken-TIME``) and created again; one that holds runs is never touched.
    """
    path = uri.removeprefix("sqlite:///")
    if os.path.exists(path):
        problem = _schema_problem(path)
        if problem is None:
            return
        if _count_runs(path):
            raise TrackerUnreachable(f"{path}: the MLflow store does not open ({problem}) and holds runs; "
                                     "repair or move it, then rerun")
        os.replace(path, f"{path}.broken-{int(time.time())}")
    tmp = f"{path}.tmp-{os.getpid()}"  # data_prep.atomic's temporary mark: a killed creator's file is removed
    if os.path.exists(tmp):
        os.remove(tmp)
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{tmp}").search_experiments(max_results=1)  # creates the tables: every migration
    os.replace(tmp, path)


def _schema_problem(path: str) -> Optional[str]:
    """None if the sqlite file holds MLflow's whole schema at its newest revision, else what is wrong.

    Checked on an engine of its own: MLflow keeps one store per URI in a process, and one
    opened on the broken file would go on reading it after the file was replaced.
    """
    import sqlalchemy
    from mlflow.store.db.utils import _all_tables_exist, _verify_schema  # what MLflow checks when it opens a store

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        if not _all_tables_exist(engine):
            return "some of MLflow's tables are missing"
        _verify_schema(engine)
    except Exception as e:  # MLflow raises SQLAlchemy's and its own errors alike
        return str(e).splitlines()[0][:300]
    finally:
        engine.dispose()
    return None


def _count_runs(path: str) -> int:
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


# ---- the sender process ------------------------------------------------------------------


def run_sender(spec: RunSpec, parent_pid: int, tried: multiprocessing.synchronize.Event) -> None:
    """Send the outbox until asked to close (or until the training process is gone).

    Sets ``tried`` once it has tried the store the first time, whether it reached it or not.
    Exits 0 when every point reached MLflow and the run got its final status, 1 otherwise,
    without the interpreter's teardown: every write is committed by then, and tearing down
    MLflow's modules in a niced process took 12 s of a busy machine's close.
    """
    os.nice(10)  # on a busy machine, training gets the CPU first
    # Read by MLflow on every request: fail within seconds instead of retrying for minutes.
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(spec.request_timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    code = _send_until_closed(_Sender(spec), parent_pid, tried)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _send_until_closed(sender: _Sender, parent_pid: int, tried: multiprocessing.synchronize.Event) -> int:
    while True:
        close = _read_close(sender.outbox)
        try:
            sender.connect()
            sender.send(None if close else MAX_FILES_PER_FLUSH)
            if close is not None:
                sender.finish(close["artifacts"], close["status"])
                return 0
        except Exception:  # any tracker failure (network, server, database): the outbox keeps the points
            if close is not None:
                return 1
        finally:
            tried.set()
        if os.getppid() != parent_pid:  # training was killed: the next start sends the rest
            return 1
        time.sleep(sender.spec.flush_seconds)


def log_params(client, run_id: str, params: dict[str, object]) -> None:
    """Every param, in batches MLflow takes, each value cut to MLflow's limit."""
    from mlflow.entities import Param

    batch = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()]
    for i in range(0, len(batch), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=batch[i:i + MAX_PARAMS_PER_BATCH])


def _read_close(outbox: str) -> Optional[dict]:
    return _read_json(os.path.join(outbox, CLOSE_FILE))


class _Sender:
    """The MLflow side: create or resume the run, send outbox files, finish the run."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec, self.outbox = spec, os.path.join(spec.run_dir, OUTBOX)
        self.run_id = spec.run_id or saved_run_id(spec.run_dir)
        self.resumed = self.run_id is not None
        self.client = None

    def connect(self) -> None:
        if self.client is None:
            from mlflow.tracking import MlflowClient

            if self.spec.uri.startswith("sqlite:///"):
                ensure_sqlite_store(self.spec.uri)
            self.client = MlflowClient(self.spec.uri)
        if self.spec.abandoned_run_id is not None:
            self.client.set_terminated(self.spec.abandoned_run_id, "KILLED")
            self.spec.abandoned_run_id = None
        if self.run_id is None:
            self.run_id = self._create_run()
            _atomic_text(os.path.join(self.spec.run_dir, RUN_ID_FILE), self.run_id)
        elif self.resumed:
            self.client.update_run(self.run_id, status="RUNNING")
            self.resumed = False

    def _create_run(self) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        spec = self.spec
        exp_id = experiment_id(self.client, spec.experiment, spec.uri, os.path.join(spec.run_dir, "mlartifacts"))
        tags = {k: str(v) for k, v in spec.tags.items()}
        if spec.parent_run_id:
            tags[MLFLOW_PARENT_RUN_ID] = spec.parent_run_id
        run_id = self.client.create_run(exp_id, run_name=spec.run_name, tags=tags).info.run_id
        log_params(self.client, run_id, spec.params)
        if spec.dataset is not None:
            self.client.log_inputs(run_id, [dataset_input(spec.dataset, "training")])
        return run_id

    def send(self, max_files: Optional[int]) -> None:
        from mlflow.entities import Metric

        for name in pending_files(self.outbox)[:max_files]:
            path = os.path.join(self.outbox, name)
            points = _read_points(path)
            metrics = [Metric(*p) for p in points]
            for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                self.client.log_batch(self.run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
            # Recorded before the file goes, so that the steps it held count as logged whichever
            # survives a kill. A kill before the removal sends the file again: the same points (key,
            # value, time, step), which MLflow's SQL stores keep once.
            sent = logged_steps_of(points, _read_json(os.path.join(self.outbox, SENT_FILE)) or {})
            _atomic_text(os.path.join(self.outbox, SENT_FILE), json.dumps(sent))
            os.remove(path)

    def finish(self, artifacts: list[str], status: str) -> None:
        for path in artifacts:
            self.client.log_artifact(self.run_id, path)
        self.client.set_terminated(self.run_id, status)
        os.remove(os.path.join(self.outbox, CLOSE_FILE))
