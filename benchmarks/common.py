"""Shared measuring helpers for the benchmarks."""

from __future__ import annotations

import glob
import os
import sysconfig
import time
from collections.abc import Callable

import numpy as np
import torch


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Minimum wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul throughput with torch's current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = best_time(lambda: a @ b, repeats, warmup=2)
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
