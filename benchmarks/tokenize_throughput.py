"""Tokenize+shard throughput against bare SentencePiece encoding of the same documents.

    python benchmarks/tokenize_throughput.py [CONFIG] [overrides...]

Prepares ingest and tokenizer for CONFIG (default configs/data/quickstart.yaml, output in a
temporary folder), then in one run measures:
  bare       sp.encode(all documents, num_threads=1) in this process
  stage x1   the tokenize+shard stage (read JSONL, encode, write tars + sidecars + manifest), 1 worker
  stage x2   the same with 2 worker processes
  ceiling    two copies of a pure CPU loop against one: what 2 processes can give on this machine
Targets: stage x1 >= 90% of bare; stage x2 speed-up >= 90% of the ceiling.
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

import sentencepiece as spm  # noqa: E402

from data_prep.config import PrepConfig  # noqa: E402
from data_prep.executor import LocalExecutor  # noqa: E402
from data_prep.ingest import SPLITS  # noqa: E402
from data_prep.prep import layout, run_prep  # noqa: E402
from data_prep.tokenize_shard import run_shards  # noqa: E402
from pipeline.config import load_config  # noqa: E402

LOOP = 90_000_000  # about 2 s: long enough that the ceiling is not noise


def cpu_loop(n: int = LOOP) -> int:
    total = 0
    for i in range(n):
        total += i & 7
    return total


def cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):
    wall, cpu = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, time.perf_counter() - wall, cpu_seconds() - cpu


def ceiling() -> tuple[float, float, float]:
    """(one loop seconds, two concurrent loops seconds, speed-up of two processes)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(cpu_loop, [1000, 1000])  # start the workers before timing
        _, one, _ = timed(lambda: pool.map(cpu_loop, [LOOP]))
        _, two, _ = timed(lambda: pool.map(cpu_loop, [LOOP, LOOP]))
    return one, two, 2 * one / two


def main(argv: list[str]) -> None:
    config = argv[0] if argv and "=" not in argv[0] else "configs/data/quickstart.yaml"
    overrides = [a for a in argv if "=" in a]
    with tempfile.TemporaryDirectory() as tmp:
        cfg: PrepConfig = load_config(PrepConfig, config, [f"out_dir={tmp}",
                                                           *overrides])
        run_prep(cfg, stage=None, log=lambda *_: None)
        where = layout(cfg)
        ingest_folder, tok_folder, tok, plan = where.ingest.folder, where.tokenizer, where.tokenizer_info, where.shards
        texts = []
        for split in SPLITS:
            with open(os.path.join(ingest_folder, f"{split}.jsonl"), "rb") as f:
                texts += [json.loads(line)["text"] for line in f]
        sp = spm.SentencePieceProcessor(model_file=os.path.join(tok_folder, "spm.model"))
        ids, bare_wall, bare_cpu = timed(lambda: sp.encode(texts, num_threads=1))
        tokens = sum(len(x) for x in ids)
        rows = [("bare encode", bare_wall, bare_cpu)]
        for workers in (1, 2):
            _, wall, cpu = timed(lambda w=workers: run_shards(cfg, plan, LocalExecutor(w), tok_folder, tok, force=True))
            rows.append((f"stage x{workers}", wall, cpu))
        one, two, ceil = ceiling()

    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts)} documents, {mb:.1f} MB, {tokens:,} tokens, {len(plan.units)} shards, "
          f"{tok['model_type']} vocab {tok['vocab_size']}, {os.cpu_count()} CPUs")
    print(f"{'run':<12}{'wall s':>8}{'cpu s':>8}{'M tok/s':>9}{'tok/cpu-s':>11}")
    for name, wall, cpu in rows:
        print(f"{name:<12}{wall:>8.2f}{cpu:>8.2f}{tokens / wall / 1e6:>9.3f}{tokens / cpu / 1e6:>10.3f}M")
    bare, s1, s2 = (tokens / r[1] for r in rows)
    print(f"ceiling: one CPU loop {one:.2f} s, two at once {two:.2f} s -> 2 processes give {ceil:.2f}x")
    print(f"stage x1 / bare          = {s1 / bare:.2f}   (target >= 0.90)")
    print(f"stage x2 / stage x1      = {s2 / s1:.2f}x  vs ceiling {ceil:.2f}x -> {s2 / s1 / ceil:.2f} (target >= 0.90)")


if __name__ == "__main__":
    main(sys.argv[1:])
