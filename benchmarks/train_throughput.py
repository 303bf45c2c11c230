"""Training throughput: the real `rmat train` loop against bare PyTorch on the same batches.

Measures, on the quickstart-size model (configs/train/small.yaml) and real byte-token
shards of the Python standard library:

1. tokens/s and MFU of `rmat train` (1 process, DeepSpeed ZeRO-0, one thread);
2. the loop's overhead over the bare model forward+backward (+ AdamW step) of the same
   batches in a plain PyTorch loop (target: at most 10%);
3. the step time of DeepSpeed ZeRO-2 against plain torch DDP, 2 processes over gloo.

Usage: python benchmarks/train_throughput.py [--steps 60]
Step times are medians after a warm-up, so that a busy shared machine skews them least.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data_prep.byte_shards import write_byte_shards  # noqa: E402
from model import RMAT  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.tbptt import window_loss  # noqa: E402
from pipeline.train.config import TrainConfig  # noqa: E402
from pipeline.train.engine import lr_factor, measure_peak_tflops  # noqa: E402
from pipeline.train.loader import TrainLoader, open_split  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "train", "small.yaml")
WARMUP = 10


def rmat_train(shards: str, run_dir: str, steps: int, nproc: int, zero: int) -> dict:
    """Run the real command; median step time and the last step's metrics."""
    cmd = [sys.executable, "-m", "pipeline.cli", "train", CONFIG, f"data.shards={shards}", f"run_dir={run_dir}",
           f"steps={steps}", f"engine.zero_stage={zero}", "engine.threads_per_proc=1", "checkpoint.every=0",
           "eval.every=0", "eval.max_docs=8", "--nproc", str(nproc)]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(run_dir, "losses.jsonl")) as f:
        times = [json.loads(line)["step_time_s"] for line in f][WARMUP:]
    with open(os.path.join(run_dir, "final_metrics.json")) as f:
        final = json.load(f)
    return {"step_s": statistics.median(times), "final": final}


def batches(cfg: TrainConfig, shards: str, rank: int, world: int, steps: int) -> list:
    """The windows the loader gives this rank, materialized so that every loop sees the same data."""
    loader = TrainLoader(open_split(shards, "train"), rank, world, cfg.data.batch_size, 1,
                         cfg.model.segment_len, cfg.seed)
    return [loader.window(0, cfg.data.tbptt_segments) for _ in range(steps)]


class Window(nn.Module):
    """A whole TBPTT window as one forward, so that DDP sees one forward per backward."""

    def __init__(self, model: RMAT) -> None:
        super().__init__()
        self.model = model

    def forward(self, segments, state):
        return window_loss(self.model, segments, state)


def bare_loop(cfg: TrainConfig, windows: list, with_optimizer: bool) -> float:
    """Median seconds per step of plain PyTorch: forward+backward (and clipping + AdamW)."""
    torch.manual_seed(cfg.seed)
    model = RMAT(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2))
    state, times = model.init_state(windows[0][0].inputs.shape[0]), []
    for step, segments in enumerate(windows):
        start = time.perf_counter()
        loss, state, _ = window_loss(model, segments, state)
        loss.backward()
        if with_optimizer:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            for group in opt.param_groups:
                group["lr"] = cfg.optim.lr * lr_factor(step, cfg)
            opt.step()
        opt.zero_grad(set_to_none=True)
        state = state.detach()
        loss.item()
        times.append(time.perf_counter() - start)
    return statistics.median(times[WARMUP:])


def _ddp_worker(rank: int, cfg: TrainConfig, shards: str, steps: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://127.0.0.1:{port}")
    torch.manual_seed(cfg.seed)
    model = nn.parallel.DistributedDataParallel(Window(RMAT(cfg.model)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2))
    windows = batches(cfg, shards, rank, 2, steps)
    state, times = model.module.model.init_state(windows[0][0].inputs.shape[0]), []
    for segments in windows:
        start = time.perf_counter()
        loss, state, n = model(segments, state)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state = state.detach()
        totals = torch.tensor([loss.item() * n, n], dtype=torch.float64)
        dist.all_reduce(totals)  # the same global-loss reduction the rmat loop does
        times.append(time.perf_counter() - start)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(statistics.median(times[WARMUP:]), f)
    dist.destroy_process_group()


def ddp_step(cfg: TrainConfig, shards: str, steps: int, tmp: str) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(tmp, "ddp.json")
    mp.spawn(_ddp_worker, args=(cfg, shards, steps, port, out), nprocs=2)
    with open(out) as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, CONFIG)
    tmp = tempfile.mkdtemp(prefix="rmat-bench-")
    shards = write_byte_shards(os.path.join(tmp, "shards"), {"train": (4, 40), "val": (1, 8)}, max_bytes=16_000)
    peak = measure_peak_tflops(torch.device("cpu"), seconds=1.0)
    flops = RMAT(cfg.model).flops_per_token()
    tokens_per_step = cfg.data.batch_size * cfg.data.tbptt_segments * cfg.model.segment_len

    one = rmat_train(shards, os.path.join(tmp, "zero0"), args.steps, 1, 0)
    windows = batches(cfg, shards, 0, 1, args.steps)
    fwd_bwd = bare_loop(cfg, windows, with_optimizer=False)
    fwd_bwd_opt = bare_loop(cfg, windows, with_optimizer=True)
    zero2 = rmat_train(shards, os.path.join(tmp, "zero2"), args.steps, 2, 2)
    ddp = ddp_step(cfg, shards, args.steps, tmp)

    def row(name: str, seconds: float, procs: int = 1) -> str:
        tok_s = tokens_per_step / seconds
        mfu = tok_s * flops / (peak * 1e12 * procs)
        return f"| {name:<44} | {seconds * 1e3:8.1f} | {tok_s:9.0f} | {mfu * 100:5.1f}% |"

    print(f"\nquickstart-size RMAT: {RMAT(cfg.model).num_params() / 1e6:.2f} M parameters, "
          f"{tokens_per_step} tokens/step, {flops / 1e6:.1f} MFLOP/token, "
          f"peak {peak * 1e3:.1f} GFLOP/s per thread (fp32 matmul), median of {args.steps - WARMUP} steps\n")
    print("| loop (1 thread per process)                  | ms/step  | tokens/s  | MFU    |")
    print("| -------------------------------------------- | -------- | --------- | ------ |")
    print(row("bare forward+backward", fwd_bwd))
    print(row("bare forward+backward+clip+AdamW", fwd_bwd_opt))
    print(row("rmat train, 1 proc, ZeRO-0", one["step_s"]))
    print(row("torch DDP, 2 procs (gloo)", ddp, 2))
    print(row("rmat train, 2 procs, ZeRO-2 (gloo)", zero2["step_s"], 2))
    print(f"\nloop overhead over bare fwd+bwd:           {one['step_s'] / fwd_bwd - 1:+.1%}")
    print(f"loop overhead over bare fwd+bwd+AdamW:     {one['step_s'] / fwd_bwd_opt - 1:+.1%}  (target <= +10%)")
    print(f"ZeRO-2 / DDP step time, 2 procs:           {zero2['step_s'] / ddp:.2f}x")
    print(f"rmat train's own report (1 proc): {one['final']['perf/tokens_per_s']:.0f} tokens/s, "
          f"MFU {one['final']['perf/mfu'] * 100:.1f}%, peak RSS {one['final']['perf/peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
