"""Units as job arrays: data_prep's Executor protocol on top of submitit.

``run(fn, specs)`` cuts the specs into at most ``max_tasks`` contiguous ranges, submits one
array task per range, and yields ``(index, record)`` as tasks finish. A task runs every unit
of its range even when one fails, saves the records of those that succeeded, then fails
naming the units that did not; only those are submitted again, up to ``retries`` times.
"""

from __future__ import annotations

import pickle
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from orchestration.launcher import Launcher, wait_each
from orchestration.records import JobRecord, RecordBook, last_error, write_atomic
from orchestration.resources import Resources


class UnitsFailed(RuntimeError):
    """Some units still failed after every retry; the message names them and their logs."""


@dataclass
class ArraySettings:
    """How a stage's units become array tasks."""

    max_tasks: int = 4  # array tasks per submission; each runs a contiguous range of units
    retries: int = 1  # times a failed unit is submitted again
    poll_s: float = 2.0  # seconds between accounting queries while waiting

    def __post_init__(self) -> None:
        if self.max_tasks < 1 or self.retries < 0 or self.poll_s <= 0:
            raise ValueError(f"array settings {self}: need max_tasks >= 1, retries >= 0, poll_s > 0")


def ranges(indices: Sequence[int], parts: int) -> list[list[int]]:
    """Split ``indices`` into at most ``parts`` contiguous runs of nearly equal length."""
    parts = min(parts, len(indices))
    size, extra = divmod(len(indices), parts) if parts else (0, 0)
    out, start = [], 0
    for p in range(parts):
        end = start + size + (p < extra)
        out.append(list(indices[start:end]))
        start = end
    return out


def run_range(fn: Callable[[Any], dict], specs: list[Any], indices: list[int], results_path: str) -> int:
    """One array task: every unit of the range; records of the good ones saved, then fail if any failed."""
    done, errors = [], []
    for k, (index, spec) in enumerate(zip(indices, specs, strict=True)):
        try:
            done.append((k, fn(spec)))
        except Exception as e:  # keep going: the other units of the range are independent
            errors.append((index, f"{type(e).__name__}: {e}"))
            traceback.print_exc()
    write_atomic(results_path, pickle.dumps(done))
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(specs)} units failed: "
                           + "; ".join(f"unit {k}: {msg}" for k, msg in errors))
    return len(done)


class ArrayExecutor:
    """Runs units as array tasks of ``launcher``'s cluster; records every task in ``book``."""

    def __init__(self, launcher: Launcher, resources: Resources, stage: str, settings: ArraySettings,
                 book: RecordBook | None = None) -> None:
        self.launcher, self.resources, self.stage = launcher, resources, stage
        self.settings, self.book = settings, book
        self.workers = settings.max_tasks

    def run(self, fn: Callable[[Any], dict], specs: Sequence[Any]) -> Iterator[tuple[int, dict]]:
        """Yield (index into specs, record) for every unit; raise UnitsFailed when retries run out."""
        todo, failures = list(range(len(specs))), []
        for attempt in range(1 + self.settings.retries):
            if not todo:
                return
            failed, failures = [], []
            for job, indices, record, results in self._submit(fn, specs, todo, attempt):
                got = _read_results(results)
                for k, rec in got:
                    yield indices[k], rec
                missing = sorted(set(range(len(indices))) - {k for k, _ in got})
                state = "COMPLETED" if not missing else "FAILED"
                if record is not None and not self.launcher.scheduled:
                    record.state = state
                    self.book.write(record)
                if missing and "CANCELLED" in job.state:
                    # a person or `rmat cancel` stopped it: retrying would undo the cancel
                    raise UnitsFailed(f"{self.stage}: job {job.job_id} was cancelled ({job.state})")
                if missing:
                    failed += [indices[k] for k in missing]
                    failures.append(f"units {[indices[k] for k in missing]} in job {job.job_id}: "
                                    f"{_error(job, record)} (log: {job.paths.stderr})")
            todo = failed
        if todo:
            raise UnitsFailed(f"{self.stage}: {len(todo)} of {len(specs)} units failed after "
                              f"{self.settings.retries} retries: " + " | ".join(failures))

    def _submit(self, fn, specs, todo: list[int], attempt: int):
        """Submit one array over ``todo`` and yield (job, its unit indices, record, results path) as tasks end."""
        parts = ranges(todo, self.settings.max_tasks)
        folder = self.launcher.folder / f"{self.stage}-units"
        folder.mkdir(parents=True, exist_ok=True)
        paths = [str(folder / f"{uuid.uuid4().hex}.records.pkl") for _ in parts]
        args = [(fn, [specs[i] for i in part], part, path) for part, path in zip(parts, paths, strict=True)]
        jobs = self.launcher.submit_array(run_range, args, self.resources, f"{self.stage}-units",
                                          parallelism=self.settings.max_tasks)
        by_job = {}
        for job, part, path in zip(jobs, parts, paths, strict=True):
            what = f"units {part[0]}-{part[-1]} of {len(specs)}, attempt {attempt + 1}"
            record = self.book.add(self.stage, job, self.launcher.cluster, "units", what) if self.book else None
            by_job[id(job)] = (part, record, path)
        try:
            for job in wait_each(jobs, self.settings.poll_s):
                part, record, path = by_job[id(job)]
                yield job, part, record, path
        finally:
            for job in jobs:  # the driver stopped early (error, cancel): leave no task behind
                if not job.done():
                    job.cancel(check=False)


def _read_results(path: str) -> list[tuple[int, dict]]:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        return []  # the task died before saving anything: every unit of it counts as failed


def _error(job, record: JobRecord | None) -> str:
    if record is not None:
        message = last_error(record)
        if message:
            return message
    return f"job ended as {job.state}"
