"""Memory and time of a TBPTT window as it grows, with each segment's activations kept or recomputed.

A window of k segments backpropagates through the memory of all k, so that a segment's
loss teaches the writes of the k - 1 before it; kept for the backward, its activations grow
with k. With ``engine.activation_checkpointing`` (``window_loss(recompute=True)``) a segment
keeps only its inputs and the memory it passes on, and recomputes its activations in the
backward: one more forward per segment for memory that stays flat in k.

Each point runs in a fresh process, one thread: the quickstart-size model
(configs/train/small.yaml: d_model 128, 2 layers, S 128), 8 rows, forward + backward of one
window, timed for a fixed budget (median); its memory is the process's peak resident set
above what it held before the first window.

    python benchmarks/tbptt_memory.py                       # windows 1 to 32
    python benchmarks/tbptt_memory.py --windows 2,8 --rows 32
    python benchmarks/tbptt_memory.py --smoke               # CI: seconds
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import median_time, print_table  # noqa: E402

from model import RMAT  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.streams import Segment  # noqa: E402
from pipeline.tbptt import window_loss  # noqa: E402
from pipeline.train.config import TrainConfig  # noqa: E402

CONFIG = REPO / "configs" / "train" / "small.yaml"


def resident_bytes() -> int:
    """This process's resident set now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(point: dict) -> dict:
    """Peak memory above the start and median seconds of one window's forward + backward."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = load_config(TrainConfig, str(CONFIG)).model
    model = RMAT(cfg).train()
    s, rows = cfg.segment_len, point["rows"]
    tokens = torch.randint(0, cfg.vocab_size, (rows, point["window"] * s + 1))
    segments = [Segment(inputs=tokens[:, i * s:(i + 1) * s], targets=tokens[:, i * s + 1:(i + 1) * s + 1],
                        reset=torch.zeros(rows, dtype=torch.bool)) for i in range(point["window"])]

    def step(segments: list[Segment] = segments) -> None:
        model.zero_grad(set_to_none=True)
        loss, _, _ = window_loss(model, segments, model.init_state(segments[0].inputs.shape[0]),
                                 recompute=point["recompute"])
        loss.backward()

    # A one-row, one-segment window first: the first recomputation imports ~100 MB of modules,
    # which is not the window's memory and would otherwise count as recomputation's.
    step([Segment(seg.inputs[:1], seg.targets[:1], seg.reset[:1]) for seg in segments[:1]])
    start = resident_bytes()
    seconds = median_time(step, point["budget_s"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {**point, "peak_mb": (peak - start) / 2**20, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--budget-s", type=float, default=5.0, help="seconds each point is timed for")
    p.add_argument("--smoke", action="store_true", help="windows 1 and 2, a short budget")
    args = p.parse_args()
    if args.smoke:
        args.windows, args.rows, args.budget_s = [1, 2], 2, 0.2
    points = [dict(window=k, recompute=r, rows=args.rows, budget_s=args.budget_s)
              for k in args.windows for r in (False, True)]
    # A fresh process per point: a peak resident set only grows, so one process would report its largest.
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        results = {(r["window"], r["recompute"]): r for r in pool.imap(measure, points)}
    rows = []
    for k in args.windows:
        kept, recomputed = results[k, False], results[k, True]
        rows.append([str(k), f"{kept['peak_mb']:.0f}", f"{recomputed['peak_mb']:.0f}",
                     f"{kept['peak_mb'] / max(recomputed['peak_mb'], 1e-9):.1f}x",
                     f"{kept['seconds']:.3f}", f"{recomputed['seconds']:.3f}",
                     f"{recomputed['seconds'] / kept['seconds']:.2f}x"])
    print(f"\nOne TBPTT window of k segments, forward + backward: {args.rows} rows, {CONFIG.name}'s model, "
          f"one thread; peak resident MB above the start, median seconds over {args.budget_s:g} s\n")
    print_table(["k", "MB kept", "MB recomputed", "memory saved", "s kept", "s recomputed", "time cost"], rows)


if __name__ == "__main__":
    main()
