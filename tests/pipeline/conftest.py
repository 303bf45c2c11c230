"""Shared fixtures: real byte-token shards, a small pipeline config, and ``rmat`` run as a user would."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
import yaml

from data_prep.byte_shards import write_byte_shards
from pipeline.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "train", "tiny.yaml")
STDLIB = sysconfig.get_path("stdlib")
# Seconds of training on 2 shared cores: 2 processes, one thread each.
TINY_TRAIN = {"model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "segment_len": 32, "chunk_len": 16},
              "data": {"batch_size": 2}, "optim": {"warmup_steps": 2}, "engine": {"threads_per_proc": 1},
              "checkpoint": {"every": 0}, "eval": {"every": 0, "max_docs": 8, "batch_size": 2}, "steps": 20}


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> str:
    """Four train shards of 24 documents, one val shard of 16: stdlib code and license prose."""
    return write_byte_shards(str(tmp_path_factory.mktemp("shards")), {"train": (4, 24), "val": (1, 16)})


def train_command(run_dir: str, shards: str, *overrides: str, nproc: int = 2) -> list[str]:
    """``rmat train`` on the tiny config, one thread per process (the cores are shared)."""
    return [sys.executable, "-m", "pipeline.cli", "train", TINY, f"data.shards={shards}", f"run_dir={run_dir}",
            "engine.threads_per_proc=1", *overrides, "--nproc", str(nproc)]


def run_train(run_dir: str, shards: str, *overrides: str, nproc: int = 2, env: dict | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    out = subprocess.run(train_command(run_dir, shards, *overrides, nproc=nproc), cwd=REPO, capture_output=True,
                         text=True, timeout=timeout, env={**os.environ, **(env or {})})
    return out


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def rmat(*args: str) -> tuple[int, str]:
    """Run the ``rmat`` command in this process; (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def pipeline_yaml(tmp_path, **slurm) -> str:
    """A pipeline over a dozen stdlib modules: a 400-token vocabulary, shards of 8 kB, 20 training steps."""
    code = tmp_path / "corpus"
    code.mkdir()
    for package in ("json", "email"):
        for name in ("decoder.py", "encoder.py", "scanner.py", "charset.py", "header.py", "utils.py"):
            if os.path.exists(os.path.join(STDLIB, package, name)):
                shutil.copy(os.path.join(STDLIB, package, name), code / f"{package}_{name}")
    config = {"name": "t", "work_dir": str(tmp_path / "runs"),
              "data": {"out_dir": str(tmp_path / "data"),
                       "sources": [{"name": "c", "kind": "code", "domain": "code", "urls": [str(code)],
                                    "files_per_unit": 2}],
                       "ingest": {"val_fraction": 0.2, "test_fraction": 0.2},
                       "tokenizer": {"vocab_size": 400, "num_threads": 1}, "shard": {"target_shard_bytes": 8000}},
              # segments of 64 tokens hold the passkey sentences of a 400-piece vocabulary
              "train": {**TINY_TRAIN, "model": {**TINY_TRAIN["model"], "segment_len": 64}},
              "evaluate": {"max_docs": 8, "batch_size": 2, "passkey": {"distances": [1, 2], "samples": 4}},
              "slurm": {"array": {"max_tasks": 2, "retries": 0, "poll_s": 0.2},
                        "train": {"tasks_per_node": 2, "max_requeues": 1}, **slurm}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)
