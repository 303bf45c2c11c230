"""Shared fixtures: real byte-token shards and a way to run ``rmat train`` as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from data_prep.byte_shards import write_byte_shards

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "train", "tiny.yaml")


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
