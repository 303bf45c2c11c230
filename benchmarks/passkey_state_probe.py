"""Which part of the memory before a key breaks its recall: the FIFO's entries or the GRU carry.

Passkey samples with the key after ``--lead`` segments of held-out text (the evaluate stage's
``accuracy_after_text``), read by a trained model four ways: with the state the text left
before the key's segment kept, with its GRU carry zeroed, with its FIFO emptied, and with
both emptied (as if the document began at the key's segment). Keys wholly right, per run
directory (models `benchmarks/passkey_pipeline.py` trained: the quickstart's byte model).

    python benchmarks/passkey_state_probe.py RUN_DIR [RUN_DIR ...] --distances 0,1 --lead 8
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import print_table  # noqa: E402
from passkey_pipeline import BOS_ID, EOS_ID, MODEL, encode, filler_documents  # noqa: E402

from data_prep.passkey import PasskeySample, filler_stream, make_sample  # noqa: E402
from model.state import MemoryState  # noqa: E402
from pipeline.train import checkpoint  # noqa: E402

EDITS: dict[str, Callable[[MemoryState], MemoryState]] = {
    "state kept": lambda s: s,
    "carry zeroed": lambda s: replace(s, carry=torch.zeros_like(s.carry)),
    # New slots drop the keys and values the state projected from the old ones (MemoryState.kv).
    "FIFO emptied": lambda s: replace(s, mem=torch.zeros_like(s.mem), valid=torch.zeros_like(s.valid), kv=None),
    "both emptied": lambda s: MemoryState.empty(s.mem.shape[0], s.batch_size, s.mem.shape[2], s.mem.shape[3],
                                                s.mem.device, s.mem.dtype),
}


@torch.no_grad()
def read_with_edit(model: torch.nn.Module, tokens: torch.Tensor, segment_len: int, at: int,
                   edit: Callable[[MemoryState], MemoryState]) -> torch.Tensor:
    """The last segment's logits after reading ``tokens`` [B, n * segment_len + 1] segment by segment, the
    state edited before segment ``at``."""
    state = model.init_state(tokens.shape[0])
    for i in range((tokens.shape[1] - 1) // segment_len):
        if i == at:
            state = edit(state)
        logits, state = model(tokens[:, i * segment_len:(i + 1) * segment_len], state)
    return logits


def retrieved_with_edit(model: torch.nn.Module, samples: list[PasskeySample], segment_len: int, at: int,
                        edit: Callable[[MemoryState], MemoryState]) -> float:
    """Share of samples whose key greedy prediction gives wholly, the state edited before segment ``at``."""
    tokens = torch.from_numpy(np.stack([s.tokens for s in samples]))
    logits, a = read_with_edit(model, tokens, segment_len, at, edit), samples[0].answer_len
    return float((logits[:, segment_len - a:].argmax(-1) == tokens[:, -a:]).all(-1).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories of trained models")
    p.add_argument("--distances", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    p.add_argument("--lead", type=int, default=8, help="segments of text before the key's segment")
    p.add_argument("--samples", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    filler, rows = filler_stream(filler_documents()[1], EOS_ID, BOS_ID), []
    for run in args.runs:
        model = checkpoint.load_model(run).eval()
        for d in args.distances:
            rng = np.random.default_rng(30_000 + d)
            samples = [make_sample(filler, encode, d, MODEL["segment_len"], BOS_ID, rng, lead=args.lead)
                       for _ in range(args.samples)]
            scores = [retrieved_with_edit(model, samples, MODEL["segment_len"], args.lead, e) for e in EDITS.values()]
            rows.append([run, str(d), *(f"{x:.2f}" for x in scores)])
    print(f"\nKey after {args.lead} segments of text, wholly right ({args.samples} samples), the state before "
          f"the key's segment edited\n")
    print_table(["run", "d", *EDITS], rows)


if __name__ == "__main__":
    main()
