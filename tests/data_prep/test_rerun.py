"""Rerun safety (docs/design.md, invariant 6): skip finished work, redo the rest, never expose partial files.

The kill tests run `rmat prep` in a subprocess, SIGKILL its whole process group at chosen
moments, rerun it, and compare every byte of the output tree with a clean run.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from dataprep_helpers import small_config, tree_bytes

from data_prep.prep import run_prep
from data_prep.shards import iter_shard, read_manifest
from pipeline.config import to_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def quiet(*_args):
    pass


def mtimes(folder) -> dict[str, int]:
    return {p: os.stat(p).st_mtime_ns for p in glob.glob(f"{folder}/*.tar")}


@pytest.fixture
def clean(corpus, tmp_path):
    """A clean, uninterrupted run: its config, result and output bytes."""
    cfg = small_config(corpus, tmp_path / "clean")
    result = run_prep(cfg, log=quiet)
    return cfg, result, tree_bytes(cfg.out_dir)


def test_a_clean_run_writes_shards_listed_in_a_valid_manifest(clean):
    _cfg, result, _ = clean
    manifest = read_manifest(result.folders["shards"])
    assert len(manifest["shards"]) > 5
    for shard in manifest["shards"]:
        docs = list(iter_shard(os.path.join(result.folders["shards"], shard["path"]), shard["documents"]))
        assert sum(ids.size for _, ids, _ in docs) == shard["tokens"]
        assert all(meta["tokens"] == ids.size for _, ids, meta in docs)
    assert manifest["splits"]["test"]["documents"] >= 1  # macbeth is held out


def test_a_rerun_redoes_nothing(clean):
    cfg, result, before = clean
    stamps = mtimes(result.folders["shards"])
    again = run_prep(cfg, log=quiet)
    assert all("done already" in line for line in again.summaries.values())
    assert mtimes(result.folders["shards"]) == stamps
    assert tree_bytes(cfg.out_dir) == before


def test_a_damaged_shard_is_rebuilt_and_only_it(clean):
    cfg, result, before = clean
    folder = result.folders["shards"]
    damaged = os.path.join(folder, "train-000001.tar")
    with open(damaged, "r+b") as f:
        f.truncate(1024)
    stamps = mtimes(folder)
    run_prep(cfg, log=quiet)
    after = mtimes(folder)
    assert [p for p in after if after[p] != stamps[p]] == [damaged]
    assert tree_bytes(cfg.out_dir) == before


def test_force_redoes_every_shard_with_the_same_bytes(clean):
    cfg, result, before = clean
    stamps = mtimes(result.folders["shards"])
    run_prep(cfg, stage="shards", force=True, log=quiet)
    after = mtimes(result.folders["shards"])
    assert all(after[p] != stamps[p] for p in stamps)
    assert tree_bytes(cfg.out_dir) == before


def test_a_config_change_makes_a_new_folder_and_keeps_the_old(clean):
    cfg, result, before = clean
    changed = dataclasses.replace(cfg, shard=dataclasses.replace(cfg.shard, target_shard_bytes=50_000))
    new = run_prep(changed, log=quiet)
    assert new.folders["shards"] != result.folders["shards"]
    assert new.folders["tokenizer"] == result.folders["tokenizer"]  # upstream stages are reused
    assert {k: v for k, v in tree_bytes(cfg.out_dir).items() if k in before} == before


def test_two_workers_write_the_same_bytes_as_one(clean, corpus, tmp_path):
    _, _, before = clean
    cfg = dataclasses.replace(small_config(corpus, tmp_path / "two"), workers=2)
    run_prep(cfg, log=quiet)
    assert tree_bytes(cfg.out_dir) == before


# --------------------------------------------------------------------------- SIGKILL


def _start(cfg, tmp_path, delay: float) -> subprocess.Popen:
    path = tmp_path / f"{os.path.basename(cfg.out_dir)}.yaml"
    path.write_text(to_yaml(cfg))
    env = dict(os.environ, RMAT_PREP_SAMPLE_DELAY=str(delay))
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "prep", str(path)], cwd=REPO, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60, may_finish: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None and may_finish:
            break
        if proc.poll() is not None:
            raise AssertionError(f"prep exited ({proc.returncode}) before the kill point: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group: pool workers die too
    except ProcessLookupError:  # it finished, workers and all, before the kill point
        assert may_finish
    proc.wait()
    proc.stderr.close()


def _partial_shard(out):
    return [p for p in glob.glob(f"{out}/shards-*/*.tar.tmp-*") if _size(p) > 0]


def _size(path: str) -> int:
    """0 for a file that is gone: a temp shard may be renamed into place between the glob and here."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


KILL_POINTS = {
    "during_ingest": lambda out: glob.glob(f"{out}/ingest-*/units/*.done.json"),
    "after_one_shard": lambda out: glob.glob(f"{out}/shards-*/*.tar.done.json"),
    "mid_shard": _partial_shard,
    "after_three_shards": lambda out: len(glob.glob(f"{out}/shards-*/*.tar.done.json")) >= 3,
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_killed_at_any_point_then_rerun_is_byte_identical(clean, corpus, tmp_path, point):
    _, _, before = clean
    cfg = small_config(corpus, tmp_path / "killed")
    _kill_when(_start(cfg, tmp_path, delay=0.01), lambda: KILL_POINTS[point](cfg.out_dir))
    assert tree_bytes(cfg.out_dir) != before  # it really was cut short
    run_prep(cfg, log=quiet)
    assert tree_bytes(cfg.out_dir) == before


def test_killed_twice_at_random_times_with_two_workers_then_rerun_is_byte_identical(clean, corpus, tmp_path):
    _, _, before = clean
    cfg = dataclasses.replace(small_config(corpus, tmp_path / "random"), workers=2)
    rng = random.Random(os.getpid())
    for _ in range(2):
        proc = _start(cfg, tmp_path, delay=0.01)
        t_kill = time.monotonic() + rng.uniform(0.5, 2.0)
        _kill_when(proc, lambda: time.monotonic() > t_kill, may_finish=True)  # noqa: B023
    run_prep(cfg, log=quiet)
    assert tree_bytes(cfg.out_dir) == before
