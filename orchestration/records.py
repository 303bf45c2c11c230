"""Job records: which job ran what, where its logs are, how it ended.

A run's records live in one folder, one small JSON file per job, each written under a
temporary name and renamed into place: the submitting command and the jobs it started
(a stage's driver submits its own unit arrays) write concurrently without a shared file.
A job's state comes from SLURM accounting through submitit; jobs without accounting
(local processes, debug) carry the state their submitter saw them end with.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import submitit

from orchestration.launcher import SCHEDULED

KINDS = ("stage", "units")  # a stage's own job, or an array task of the units that stage's job submitted


@dataclass
class JobRecord:
    """One submitted job (or one task of a job array)."""

    stage: str
    job_id: str
    cluster: str
    folder: str  # submitit's folder of the job: pickles and logs
    kind: str  # one of KINDS
    what: str = ""  # for people: "units 0-3 of 12, attempt 1", or what the stage does
    submitted: float = 0.0
    state: str = ""  # final state, for clusters without accounting

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"job kind {self.kind!r}: choose one of {', '.join(KINDS)}")

    @property
    def accounted(self) -> bool:
        """Whether the cluster's accounting knows the job's state (else the record carries it)."""
        return self.cluster in SCHEDULED

    @property
    def name(self) -> str:
        return f"{self.submitted:.6f}-{self.stage}-{self.job_id}".replace("/", "_")

    def job(self) -> submitit.Job:
        """A submitit handle on the job, for its state and its log files."""
        return submitit.SlurmJob(folder=self.folder, job_id=self.job_id)

    def logs(self) -> tuple[str, str]:
        """(stdout, stderr) paths of the job's first task."""
        paths = submitit.core.utils.JobPaths(self.folder, job_id=self.job_id, task_id=0)
        return str(paths.stdout), str(paths.stderr)


class RecordBook:
    """The records of one run, in one folder."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def add(self, stage: str, job: submitit.Job, cluster: str, kind: str, what: str = "") -> JobRecord:
        """Record a job just submitted."""
        record = JobRecord(stage=stage, job_id=str(job.job_id), cluster=cluster, folder=str(job.paths.folder),
                           kind=kind, what=what, submitted=time.time())
        self.write(record)
        return record

    def write(self, record: JobRecord) -> None:
        """Write (or overwrite) a record atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / f"{record.name}.json", json.dumps(asdict(record), indent=1).encode())

    def all(self) -> list[JobRecord]:
        """Every record, oldest first."""
        if not self.folder.is_dir():
            return []
        records = [JobRecord(**json.loads(p.read_text())) for p in self.folder.glob("*.json")]
        return sorted(records, key=lambda r: r.submitted)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` under a temporary name beside ``path``, then rename it into place.

    The same scheme as data_prep.atomic (orchestration imports nothing of data_prep): a
    reader, here ``RecordBook.all`` or an array driver, never sees half a file.
    """
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def states(records: list[JobRecord]) -> dict[str, str]:
    """Job id -> state: recorded final states, else one accounting query (sacct) for all SLURM jobs."""
    out = {r.job_id: r.state for r in records if r.state}
    live = [r for r in records if not r.state and r.accounted]
    if live:
        jobs = [r.job() for r in live]
        # One sacct call answers for every job; the shared watcher's cache may predate array tasks' ends.
        jobs[0].watcher.clear()
        jobs[0].get_info(mode="force")
        out.update({r.job_id: j.watcher.get_state(r.job_id, mode="cache") for r, j in zip(live, jobs, strict=True)})
    for r in records:
        out.setdefault(r.job_id, "UNKNOWN")
    return out


def last_error(record: JobRecord, lines: int = 1) -> str:
    """The last non-empty lines of the job's stderr: where a failure says what went wrong."""
    try:
        text = Path(record.logs()[1]).read_text(errors="replace")
    except OSError:
        return ""
    # srun's own closing line ("srun: error: n1: task 0: Exited ...") says less than the exception above it
    tail = [line for line in text.splitlines() if line.strip() and not line.startswith("srun: ")]
    return "\n".join(tail[-lines:])
