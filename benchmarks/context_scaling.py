"""Forward+backward time per token as the context grows: RMAT against full attention.

RMAT streams the context through segments with its memory carried (TBPTT windows of
``--window`` segments); the baseline is the same width and depth with causal global
attention over the whole context in one segment. Both run in this one process. The RMAT
points (every length of the default and of each variant) take turns over ``--rounds``
rounds, so that the machine's drift falls on every length alike; full attention then runs
once per length (minutes at 32k). Achieved GFLOP/s are set against the measured fp32
matmul peak. Each ``--variant name:key=value,...`` times an RMAT with those config
overrides beside the default, point for point (a candidate default's cost, measured in the
same run). A last section times a training step at d_model 512 (`--train-d-model`).

    python benchmarks/context_scaling.py [--max-context 32768] [--baseline-budget 240]
    python benchmarks/context_scaling.py --variant summaries:mem_tokens_per_chunk=0,mem_slots=32,token_shift=false,\
        mem_heads=null,mem_head_dim=null,mem_layers=null    # the chunk summaries the defaults held before
    python benchmarks/context_scaling.py --one-thread    # one thread, its CPU time: other jobs' load left out
    python benchmarks/context_scaling.py --smoke     # CI: seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import matmul_peak_gflops, median_time, parse_variant, print_table  # noqa: E402

from model import RMAT, RMATConfig  # noqa: E402


def rmat_config(args: argparse.Namespace, **overrides) -> RMATConfig:
    base = dict(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, n_heads=args.d_model // 64,
                segment_len=args.segment, chunk_len=args.chunk, mem_slots=args.mem_slots)
    base.update(overrides)
    return RMATConfig(**base)


def streamed_fwd_bwd(model: RMAT, tokens: torch.Tensor, window: int) -> None:
    """One pass over tokens [B, N]: segments with carried memory, one backward per window."""
    s = model.cfg.segment_len
    state = model.init_state(tokens.shape[0])
    n_segments = tokens.shape[1] // s
    for w in range(0, n_segments, window):
        loss = 0.0
        for i in range(w, min(w + window, n_segments)):
            seg = tokens[:, i * s:(i + 1) * s]
            logits, state = model(seg, state)
            loss = loss + logits.float().logsumexp(-1).mean()
        loss.backward()
        state = state.detach()
    model.zero_grad(set_to_none=True)


def rmat_times_per_token(models: dict[str, RMAT], contexts: list[int], window: int, budget_s: float,
                         rounds: int, clock: Callable[[], float]) -> dict[str, list[float]]:
    """Median seconds per token of every (model, context) point.

    The points take turns, ``rounds`` times ``budget_s / rounds`` seconds each (at least one pass),
    and each reports the median of all its passes: a load that comes and goes on a shared machine
    then falls on every length alike, instead of on whichever length ran at that moment and
    reading as a slope in context length.
    """
    vocab = next(iter(models.values())).cfg.vocab_size
    tokens = {n: torch.randint(0, vocab, (1, n)) for n in contexts}
    passes = {(name, n): (lambda m=model, t=tokens[n]: streamed_fwd_bwd(m, t, window))
              for name, model in models.items() for n in contexts}
    times: dict[tuple[str, int], list[float]] = {key: [] for key in passes}
    for r in tqdm(range(rounds), desc="rounds over every RMAT point", disable=rounds == 1):
        for key, run in passes.items():
            times[key].append(median_time(run, budget_s / rounds, min_runs=1, warmup=1 if r == 0 else 0, clock=clock))
    return {name: [float(np.median(times[name, n])) / n for n in contexts] for name in models}


def full_attention_time_per_token(base: RMAT, n: int, clock: Callable[[], float]) -> float:
    """One forward+backward of causal global attention over all n tokens in one segment (minutes at 32k)."""
    tokens = torch.randint(0, base.cfg.vocab_size, (1, n))
    return median_time(lambda: streamed_fwd_bwd(base, tokens, 1), budget_s=0.0, min_runs=1, clock=clock) / n


def context_scaling(args: argparse.Namespace, peak: float, clock: Callable[[], float]) -> None:
    models = {"RMAT": RMAT(rmat_config(args))}
    models.update({name: RMAT(rmat_config(args, **overrides)) for name, overrides in args.variant})
    contexts = [1024 * 2 ** i for i in range(20) if 1024 * 2 ** i <= args.max_context]
    times = rmat_times_per_token(models, contexts, args.window, args.budget, args.rounds, clock)
    rmat_flops = models["RMAT"].flops_per_token()
    rows, baseline_alive = [], True
    for i, n in enumerate(contexts):
        t_rmat = times["RMAT"][i]
        g_rmat = rmat_flops / t_rmat / 1e9
        base_cells = ["-", "-", "-", "-"]
        t_base = None
        if baseline_alive:
            base = RMAT(rmat_config(args, paths=["global"], mem_slots=0, segment_len=n, chunk_len=n))
            start = time.perf_counter()
            try:
                t_base = full_attention_time_per_token(base, n, clock)
            except RuntimeError as e:  # out of memory
                print(f"baseline stopped at {n} tokens: {e}")
                baseline_alive = False
            else:
                g_base = base.flops_per_token() / t_base / 1e9
                base_cells = [f"{t_base * 1e6:.1f}", f"{t_base / t_rmat:.2f}x", f"{g_base:.1f}",
                              f"{100 * g_base / peak:.0f}%"]
                baseline_alive = (time.perf_counter() - start) * 4 < args.baseline_budget
        variant_cells = []
        for name in list(models)[1:]:
            t = times[name][i]
            variant_cells += [f"{t * 1e6:.1f}", f"{t / t_rmat:.2f}x", f"{t_base / t:.2f}x" if t_base else "-"]
        rows.append([f"{n}", f"{t_rmat * 1e6:.1f}", f"{g_rmat:.1f}", f"{100 * g_rmat / peak:.0f}%", *base_cells,
                     *variant_cells])
        print(f"context {n}: " + ", ".join(rows[-1][1:]), flush=True)
    print()
    variant_headers = [h for name in list(models)[1:] for h in (f"{name} us/tok", f"{name} / RMAT",
                                                                 f"{name} speedup")]
    print_table(["context", "RMAT us/tok", "RMAT GFLOP/s", "RMAT %peak", "full us/tok", "RMAT speedup",
                 "full GFLOP/s", "full %peak", *variant_headers], rows)
    for name, per_token in times.items():
        spread = max(per_token) / min(per_token) - 1
        print(f"\n{name} time per token, slowest vs fastest context: +{100 * spread:.1f}% (target: within 10%)")


def train_step_efficiency(args: argparse.Namespace, peak: float, clock: Callable[[], float]) -> None:
    cfg = RMATConfig(vocab_size=args.vocab, d_model=args.train_d_model, n_layers=4, n_heads=args.train_d_model // 64,
                     segment_len=512, chunk_len=128)
    model = RMAT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, cfg.vocab_size, (args.train_batch, 2 * cfg.segment_len))

    def step() -> None:
        streamed_fwd_bwd(model, tokens, window=2)
        opt.step()

    seconds = median_time(step, args.budget, clock=clock)
    n = tokens.numel()
    achieved = model.flops_per_token() * n / seconds / 1e9
    print(f"\ntraining step at d_model {cfg.d_model} ({model.num_params() / 1e6:.1f} M params, {n} tokens/step, "
          f"TBPTT over 2 segments): {seconds:.2f} s, {n / seconds:.0f} tok/s, {achieved:.1f} GFLOP/s = "
          f"{100 * achieved / peak:.0f}% of the matmul peak (target: at least 50%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-context", type=int, default=32768)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--segment", type=int, default=256)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--mem-slots", type=int, default=None, help="the FIFO's entries (default: the model's, 10 segments)")
    p.add_argument("--window", type=int, default=4, help="TBPTT window in segments")
    p.add_argument("--variant", type=parse_variant, action="append", default=[],
                   help="name:key=value,... an RMAT with these config overrides, timed beside the default")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--budget", type=float, default=20.0, help="seconds of runs per RMAT point, all rounds (median)")
    p.add_argument("--rounds", type=int, default=5, help="turns the RMAT points take to share out the budget")
    p.add_argument("--baseline-budget", type=float, default=600.0,
                   help="stop the baseline once its next length would likely take longer than this (s)")
    p.add_argument("--train-d-model", type=int, default=512, help="width of the timed training step")
    p.add_argument("--one-thread", action="store_true",
                   help="torch on one thread, each point timed in the CPU time of that thread (time.thread_time), "
                        "which leaves out the time other jobs held the core")
    p.add_argument("--smoke", action="store_true", help="1k and 2k tokens, a small model, short budgets")
    args = p.parse_args()
    if args.smoke:
        args.max_context, args.d_model, args.vocab, args.train_d_model, args.train_batch = 2048, 128, 512, 128, 1
        args.budget, args.baseline_budget, args.rounds = 0.2, 60.0, 2
    clock = time.perf_counter
    if args.one_thread:
        torch.set_num_threads(1)
        clock = time.thread_time
    torch.manual_seed(0)
    peak = matmul_peak_gflops(clock=clock)
    timed_on = "the CPU time of that thread" if args.one_thread else "wall time"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, timed on {timed_on}, "
          f"fp32 matmul peak {peak:.1f} GFLOP/s")
    context_scaling(args, peak, clock)
    train_step_efficiency(args, peak, clock)


if __name__ == "__main__":
    main()
