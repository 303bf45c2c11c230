"""Helpers of the pipeline-on-SLURM tests: a tiny real corpus, its pipeline config, waiting for jobs."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path

import yaml

from orchestration.launcher import FINISHED
from orchestration.records import RecordBook, states
from pipeline.cli import main

STDLIB = sysconfig.get_path("stdlib")


def tiny_corpus(root: Path) -> Path:
    """A few real source files: json and email modules of the standard library."""
    code = root / "corpus" / "code"
    code.mkdir(parents=True)
    for package, names in (("json", ("decoder.py", "encoder.py", "scanner.py", "__init__.py")),
                           ("email", ("charset.py", "header.py", "utils.py", "errors.py"))):
        for name in names:
            shutil.copy(os.path.join(STDLIB, package, name), code / f"{package}_{name}")
    return root / "corpus"


def write_pipeline(root: Path, sources: list[dict], name: str = "tiny", **sections) -> Path:
    """A pipeline YAML over ``sources`` with a small tokenizer and shards of a few kB."""
    config = {
        "name": name,
        "work_dir": str(root / "runs"),
        "data": {"out_dir": str(root / "data"), "sources": sources,
                 "ingest": {"val_fraction": 0.2, "test_fraction": 0.2},
                 "tokenizer": {"vocab_size": 400, "num_threads": 1},
                 "shard": {"target_shard_bytes": 8000}},
        "slurm": {"array": {"max_tasks": 2, "retries": 0, "poll_s": 1}},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def code_source(corpus: Path) -> dict:
    return {"name": "code", "kind": "code", "domain": "code", "urls": [str(corpus / "code")], "files_per_unit": 2}


def rmat(*args: str) -> tuple[int, str]:
    """Run the ``rmat`` command in this process; (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def wait_until_finished(run_dir: Path, timeout_s: float = 180) -> dict[str, str]:
    """Poll accounting until every job of the run has ended; job id -> state."""
    deadline = time.time() + timeout_s
    while True:
        records = RecordBook(run_dir / "jobs").all()
        state = states(records)
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        if records and not queued and all(s.split()[0] in FINISHED for s in state.values()):
            return state
        stuck = [job for job, s in state.items() if s.split()[0] not in FINISHED]
        assert time.time() < deadline, (f"jobs still not finished after {timeout_s} s: {state}, queue {queued}\n"
                                        + log_tails(run_dir, stuck))
        time.sleep(1)


def log_tails(run_dir: Path, job_ids: list[str], lines: int = 20) -> str:
    """The last lines of each task's logs of these jobs: what a stuck job was doing."""
    tails = []
    for job_id in job_ids:
        for log in sorted((run_dir / "logs").glob(f"*/{job_id}_*_log.*")):
            text = log.read_text(errors="replace").replace("\r", "\n").splitlines()
            tails.append(f"--- {log.relative_to(run_dir)}\n" + "\n".join(text[-lines:]))
    return "\n".join(tails)
