"""Tokenize+shard throughput against bare SentencePiece encoding of the same documents.

    python benchmarks/tokenize_throughput.py [CONFIG] [overrides...] [--budget SECONDS]

For CONFIG (default configs/data/quickstart.yaml) and for configs/data/books.yaml (four
documents of 0.9-1.3 MB: long documents), prepares ingest and tokenizer in a temporary
folder, then times (median over a fixed budget, benchmarks/common.median_time):
  bare lines  sp.encode(every line of every document, num_threads=1): the speed ceiling
  bare docs   sp.encode(every document whole, num_threads=1)
  stage x1    the tokenize+shard stage (read JSONL, encode, write tars + sidecars + manifest), 1 worker
  stage x2    the same with 2 worker processes (CONFIG only)
  ceiling     two copies of a pure CPU loop against one: what 2 processes can give on this machine
Targets: stage x1 >= 90% of bare lines (on both corpora); stage x2 speed-up >= 90% of the ceiling.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sentencepiece as spm  # noqa: E402
from common import median_time  # noqa: E402

from data_prep.config import PrepConfig  # noqa: E402
from data_prep.executor import LocalExecutor  # noqa: E402
from data_prep.ingest import SPLITS  # noqa: E402
from data_prep.prep import layout, run_prep  # noqa: E402
from data_prep.tokenize_shard import run_shards  # noqa: E402
from pipeline.config import load_config  # noqa: E402

LOOP = 90_000_000  # about 2 s: long enough that the ceiling is not noise
BOOKS = "configs/data/books.yaml"


def cpu_loop(n: int = LOOP) -> int:
    total = 0
    for i in range(n):
        total += i & 7
    return total


def cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, budget: float) -> tuple[float, float]:
    """(median wall seconds of one call over ``budget`` seconds, CPU seconds per call)."""
    cpu, calls = cpu_seconds(), [0]

    def counted():
        calls[0] += 1
        fn()

    wall = median_time(counted, budget)
    return wall, (cpu_seconds() - cpu) / calls[0]


def ceiling() -> tuple[float, float, float]:
    """(one loop seconds, two concurrent loops seconds, speed-up of two processes)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(cpu_loop, [1000, 1000])  # start the workers before timing
        start = time.perf_counter()
        pool.map(cpu_loop, [LOOP])
        one = time.perf_counter() - start
        start = time.perf_counter()
        pool.map(cpu_loop, [LOOP, LOOP])
        two = time.perf_counter() - start
    return one, two, 2 * one / two


def measure(config: str, overrides: list[str], workers: tuple[int, ...], budget: float) -> dict:
    """Rows of (name, wall s, cpu s) for one corpus, and its size."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg: PrepConfig = load_config(PrepConfig, config, [f"out_dir={tmp}", *overrides])
        run_prep(cfg, stage=None, log=lambda *_: None)
        where = layout(cfg)
        tok_folder, tok, plan = where.tokenizer, where.tokenizer_info, where.shards
        texts = []
        for split in SPLITS:
            with open(os.path.join(where.ingest.folder, f"{split}.jsonl"), "rb") as f:
                texts += [json.loads(line)["text"] for line in f]
        lines = [line for text in texts for line in text.split("\n")]
        sp = spm.SentencePieceProcessor(model_file=os.path.join(tok_folder, "spm.model"))
        tokens = sum(len(x) for x in sp.encode(texts, num_threads=1))
        rows = [("bare lines", *timed(lambda: sp.encode(lines, num_threads=1), budget)),
                ("bare docs", *timed(lambda: sp.encode(texts, num_threads=1), budget))]
        for w in workers:
            rows.append((f"stage x{w}", *timed(
                lambda w=w: run_shards(cfg, plan, LocalExecutor(w), tok_folder, tok, force=True), budget)))
    return {"config": config, "documents": len(texts), "mb": sum(len(t.encode()) for t in texts) / 1e6,
            "longest_kb": max(len(t.encode()) for t in texts) / 1e3, "tokens": tokens, "shards": len(plan.units),
            "tokenizer": f"{tok['model_type']} vocab {tok['vocab_size']}", "rows": rows}


def report(m: dict) -> dict[str, float]:
    """Print one corpus's table; its speeds in tokens/s by row name."""
    print(f"\n{m['config']}: {m['documents']} documents, {m['mb']:.1f} MB (longest {m['longest_kb']:.0f} kB), "
          f"{m['tokens']:,} tokens, {m['shards']} shards, {m['tokenizer']}, {os.cpu_count()} CPUs")
    print(f"{'run':<12}{'wall s':>8}{'cpu s':>8}{'M tok/s':>9}{'tok/cpu-s':>11}")
    speeds = {}
    for name, wall, cpu in m["rows"]:
        speeds[name] = m["tokens"] / wall
        print(f"{name:<12}{wall:>8.2f}{cpu:>8.2f}{m['tokens'] / wall / 1e6:>9.3f}{m['tokens'] / cpu / 1e6:>10.3f}M")
    print(f"stage x1 / bare lines    = {speeds['stage x1'] / speeds['bare lines']:.2f}   (target >= 0.90)")
    return speeds


def main(argv: list[str]) -> None:
    budget = float(argv[argv.index("--budget") + 1]) if "--budget" in argv else 10.0
    argv = [a for i, a in enumerate(argv) if a != "--budget" and (i == 0 or argv[i - 1] != "--budget")]
    config = argv[0] if argv and "=" not in argv[0] else "configs/data/quickstart.yaml"
    overrides = [a for a in argv if "=" in a]
    mixed = report(measure(config, overrides, (1, 2), budget))
    report(measure(BOOKS, [], (1,), budget))
    one, two, ceil = ceiling()
    s1, s2 = mixed["stage x1"], mixed["stage x2"]
    print(f"\nceiling: one CPU loop {one:.2f} s, two at once {two:.2f} s -> 2 processes give {ceil:.2f}x")
    print(f"{config}: stage x2 / stage x1 = {s2 / s1:.2f}x vs ceiling {ceil:.2f}x -> {s2 / s1 / ceil:.2f} "
          "(target >= 0.90)")


if __name__ == "__main__":
    main(sys.argv[1:])
