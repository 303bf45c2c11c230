"""Per-token decoding latency after prompts of 1k, 8k and 32k tokens: RMAT (torch eager and onnxruntime)
against a full-attention transformer of the same width and depth.

RMAT reads the prompt segment by segment (O(S + M) state), so its latency per new token
should not depend on the prompt's length; full attention keeps a key/value cache of the
whole prompt, so its latency grows with it. Each point decodes one token at a time for a
fixed budget of seconds, shared out over rounds in which the points take turns, and
reports the median (benchmarks/common.median_time); one thread everywhere, so each step
runs in the calling thread and is timed twice: its wall time, and the CPU time the thread
spent (``time.thread_time``), which leaves out the time other jobs held the core: on a
shared machine the wall time of one step swings by 1.6x, its CPU time much less. The RMAT
prompt is really read; the baseline's cache is filled with zeros up to the prompt's
length (the time of a step does not depend on what the cache holds).

    python benchmarks/generate_latency.py [--budget 5] [--rounds 5] [--lengths 1024,8192,32768]
    python benchmarks/generate_latency.py --model mem_tokens_per_chunk=0,mem_slots=32,token_shift=false,\
        mem_heads=null,mem_head_dim=null,mem_layers=null      # the chunk summaries the defaults held before
    python benchmarks/generate_latency.py --smoke     # a tiny model, seconds: what the test runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median_time, parse_variant, print_table  # noqa: E402

from model import RMAT, RMATConfig  # noqa: E402
from model.onnx_graphs import export_onnx  # noqa: E402
from pipeline.inference import OnnxDecoder, TorchDecoder  # noqa: E402

CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
DECODERS = ("torch", "onnx", "full")
FULL = RMATConfig()  # the default model: d_model 256, 4 layers, S 256, C 64, M 2,600 in layer 0, vocabulary 8192
SMOKE = RMATConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, segment_len=16, chunk_len=4)


def rmat_stepper(decoder, prompt: np.ndarray):
    """After reading ``prompt`` [1, T], a call that decodes one more token."""
    decoder.prefill(prompt)
    token = np.zeros(1, dtype=np.int64)
    return lambda: decoder.step(token)


def full_attention_stepper(cfg: RMATConfig, length: int, margin: int):
    """A call that decodes one token by causal attention over a cache of ``length`` tokens (and growing)."""
    model = RMAT(replace(cfg, paths=["global"], mem_slots=0, segment_len=length + margin,
                         chunk_len=length + margin)).eval()
    box = [replace(model.init_cache(1), pos=length)]
    token = torch.zeros(1, dtype=torch.long)

    def step() -> None:
        _, box[0] = model.step(token, box[0])

    return step


def measure(cfg: RMATConfig, lengths: list[int], budget: float, rounds: int) -> list[dict]:
    """Median seconds per token of every (length, decoder) point.

    The points take turns, ``rounds`` times ``budget / rounds`` seconds each, and each
    reports the median of its rounds' medians: a load that comes and goes on a shared
    machine then falls on every point alike instead of on whichever ran at that moment.
    """
    torch.manual_seed(0)
    model = RMAT(cfg).eval()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "config.json").write_text(json.dumps(asdict(cfg)))
        export_onnx(model, folder)
        steppers = {}
        for length in lengths:
            prompt = rng.integers(0, cfg.vocab_size, (1, length))
            steppers[length, "torch"] = rmat_stepper(TorchDecoder(model), prompt)
            steppers[length, "onnx"] = rmat_stepper(OnnxDecoder(folder, threads=1), prompt)
            # Room for every token the rounds decode at a few ms each.
            steppers[length, "full"] = full_attention_stepper(cfg, length, margin=int(budget * 2000) + 64)
        times: dict[tuple, list[float]] = {(*key, clock): [] for key in steppers for clock in CLOCKS}
        for _ in range(rounds):
            for key, step in steppers.items():
                for clock, read in CLOCKS.items():
                    times[(*key, clock)].append(median_time(step, budget / rounds / len(CLOCKS), min_runs=5,
                                                            warmup=2, clock=read))
    return [{"prompt": length, **{f"{name}_{clock}": float(np.median(times[length, name, clock]))
                                  for name in DECODERS for clock in CLOCKS}}
            for length in lengths]


def spread(rows: list[dict], key: str) -> float:
    """Largest over smallest latency across prompt lengths, minus one: 0.15 is 15%."""
    values = [r[key] for r in rows]
    return max(values) / min(values) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=5.0, help="seconds of decoding per point, all rounds")
    parser.add_argument("--lengths", default="1024,8192,32768", help="prompt lengths in tokens")
    parser.add_argument("--rounds", type=int, default=5, help="turns the points take to share out the budget")
    parser.add_argument("--model", type=lambda spec: parse_variant(":" + spec)[1], default={},
                        help="key=value,... overrides of the timed RMAT's config (the default, or --smoke's)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model and short prompts (seconds)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg, lengths, budget = FULL, [int(x) for x in args.lengths.split(",")], args.budget
    if args.smoke:
        cfg, lengths, budget = SMOKE, [32, 128], 0.05
    cfg = replace(cfg, **args.model)
    rows = measure(cfg, lengths, budget, 1 if args.smoke else args.rounds)
    print("CPU ms per token (wall ms in brackets)")
    print_table(["prompt tokens", "RMAT torch", "RMAT onnxruntime", "full attention"],
                [[str(r["prompt"]), *(f"{r[f'{name}_cpu'] * 1e3:.2f} ({r[f'{name}_wall'] * 1e3:.2f})"
                                      for name in DECODERS)] for r in rows])
    for clock in CLOCKS:
        print(f"spread across lengths ({clock}): torch {spread(rows, f'torch_{clock}'):.0%}, "
              f"onnxruntime {spread(rows, f'onnx_{clock}'):.0%}, full attention {spread(rows, f'full_{clock}'):.0%}")


if __name__ == "__main__":
    main()
