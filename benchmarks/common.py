"""Shared measuring helpers for the benchmarks."""

from __future__ import annotations

import glob
import json
import multiprocessing as mp
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def median_time(fn: Callable[[], object], budget_s: float, min_runs: int = 3, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``fn`` (seconds) on ``clock`` (default: wall time), run after ``warmup`` runs
    until ``budget_s`` wall seconds have passed and at least ``min_runs`` runs were timed: a fixed
    budget, not a count of repeats, and the median, not the best, so that a shared machine's
    swings even out. ``time.thread_time`` times only the CPU this thread spent, for work that
    runs in one thread: the time other jobs held the core is then left out."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = clock()
        fn()
        times.append(clock() - start)
    return float(np.median(times))


def matmul_peak_gflops(n: int = 2048, budget_s: float = 3.0,
                       clock: Callable[[], float] = time.perf_counter) -> float:
    """This machine's fp32 matmul throughput with torch's current thread count, timed on ``clock``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = median_time(lambda: a @ b, budget_s, warmup=2, clock=clock)
    return 2 * n ** 3 / seconds / 1e9


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print(" | ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def stdlib_byte_documents(max_files: int, max_file_bytes: int) -> list[np.ndarray]:
    """The first bytes of the standard library's own modules (tests left out), one document per file."""
    root = sysconfig.get_path("stdlib")
    skip = (os.sep + "site-packages" + os.sep, os.sep + "test" + os.sep, os.sep + "tests" + os.sep)
    paths = sorted(p for p in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
                   if not any(s in p for s in skip))
    docs = []
    for path in paths[:max_files]:
        with open(path, "rb") as f:
            data = f.read(max_file_bytes)
        if data:
            docs.append(np.frombuffer(data, dtype=np.uint8).astype(np.int64))
    return docs


def parse_variant(spec: str) -> tuple[str, dict]:
    """``name:key=value,...`` as (name, overrides); values that are JSON (numbers, true, null, [0]) are
    parsed as JSON, the others kept as strings."""
    name, _, items = spec.partition(":")
    overrides = {}
    for item in filter(None, items.split(",")):
        key, _, value = item.partition("=")
        overrides[key] = _json_or_text(value)
    return name, overrides


def _json_or_text(value: str) -> object:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def rmat_train(config: dict, config_path: Path) -> float:
    """Run `rmat train` on ``config`` in its own process; seconds it took."""
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", str(config_path)], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"rmat train failed ({config_path}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return time.perf_counter() - start


def run_resumable(points: list[dict], key: Callable[[dict], Hashable], train: Callable[[dict], dict],
                  results: Path, jobs: int, report: Callable[[dict], None] | None = None,
                  train_missing: bool = True) -> list[dict]:
    """Train every point not already in ``results`` (one JSON record per finished point), ``jobs``
    processes at a time; returns the records of ``points`` in their order. Each record is appended
    as its point finishes, so a stopped run loses only the points in flight and a rerun skips the rest.
    With ``train_missing`` false nothing is trained: the records of the points already there."""
    results.parent.mkdir(parents=True, exist_ok=True)
    done = {key(r): r for r in map(json.loads, results.read_text().splitlines())} if results.exists() else {}
    todo = [p for p in points if key(p) not in done]
    print(f"{len(points)} points, {len(points) - len(todo)} already in {results}", flush=True)
    if not train_missing:
        return [done[key(p)] for p in points if key(p) in done]
    with mp.get_context("fork").Pool(jobs) as pool:
        for r in pool.imap_unordered(train, todo):
            done[key(r)] = r
            with results.open("a") as f:
                f.write(json.dumps(r) + "\n")
            if report is not None:
                report(r)
    return [done[key(p)] for p in points]
