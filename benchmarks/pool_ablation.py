"""Which memory pool should be the default? Measured, as docs/design.md (the memory) asks.

Two measurements, `mean` against `attn` pooling, same seeds, in one run:

1. Retrieval beyond the segment: ``--pairs`` key-value bigrams sit at random places of
   the first segment; in the second segment the keys are asked again and the model must
   name each one's value. Attention never leaves a segment, so only the memory can carry
   them. (With one pair both pools reach 100%: it takes several to tell them apart.)
2. Loss by position on real text: bytes of the Python standard library, validation
   loss per segment index (tokens 0-S, S-2S, ...) of documents read from an empty memory.

    python benchmarks/pool_ablation.py [--steps 1500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, stdlib_byte_documents  # noqa: E402

from data_prep.byte_shards import BOS_ID, EOS_ID  # noqa: E402
from model import RMAT, RMATConfig  # noqa: E402
from pipeline.streams import BatchStream, RowStream, split_rows  # noqa: E402
from pipeline.tbptt import window_loss  # noqa: E402

VOCAB, FILLER, N_KEYS = 64, 40, 24  # filler and values: ids 0..39; keys: ids 40..63
QUERY_EVERY = 4


def retrieval_batch(batch: int, segment_len: int, pairs: int, gen: torch.Generator):
    """Two segments [B, 2S]: ``pairs`` 'key value' bigrams at random places of segment 0, and in
    segment 1 one of those keys every QUERY_EVERY tokens. At each query the next token must be
    that key's value: only the memory can carry it across the segment boundary, and with
    several pairs in a chunk a summary must keep which value went with which key.

    Returns the tokens, the query positions' targets [B, S / QUERY_EVERY].
    """
    tokens = torch.randint(0, FILLER, (batch, 2 * segment_len), generator=gen)
    keys = torch.stack([torch.randperm(N_KEYS, generator=gen)[:pairs] for _ in range(batch)]) + FILLER
    values = torch.randint(0, FILLER, (batch, pairs), generator=gen)
    slots = torch.stack([torch.randperm(segment_len // 2, generator=gen)[:pairs] for _ in range(batch)]) * 2
    rows = torch.arange(batch)[:, None]
    tokens[rows, slots], tokens[rows, slots + 1] = keys, values
    asked = torch.randint(0, pairs, (batch, segment_len // QUERY_EVERY), generator=gen)
    tokens[:, segment_len + QUERY_EVERY - 1::QUERY_EVERY] = keys.gather(1, asked)
    return tokens, values.gather(1, asked)


def retrieval_accuracy(pool: str, args: argparse.Namespace) -> tuple[float, float]:
    torch.manual_seed(args.seed)
    cfg = RMATConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, segment_len=32, chunk_len=8,
                     mem_slots=8, pool=pool)
    model = RMAT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for _ in range(args.steps):
        tokens, targets = retrieval_batch(32, cfg.segment_len, args.pairs, gen)
        logits = answer_logits(model, tokens)  # [B, queries, V]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        tokens, targets = retrieval_batch(1024, cfg.segment_len, args.pairs, torch.Generator().manual_seed(10_000))
        accuracy = (answer_logits(model, tokens).argmax(-1) == targets).float().mean().item()
    return accuracy, seconds


def answer_logits(model: RMAT, tokens: torch.Tensor) -> torch.Tensor:
    """Logits at the query positions of the second segment: [B, S / QUERY_EVERY, V]."""
    s = model.cfg.segment_len
    _, state = model(tokens[:, :s], model.init_state(tokens.shape[0]))
    logits, _ = model(tokens[:, s:], state)
    return logits[:, QUERY_EVERY - 1::QUERY_EVERY]


def loss_by_position(pool: str, args: argparse.Namespace) -> list[float]:
    torch.manual_seed(args.seed)
    cfg = RMATConfig(vocab_size=258, d_model=64, n_layers=2, n_heads=4, segment_len=64, chunk_len=16,
                     mem_slots=8, pool=pool)
    docs = stdlib_byte_documents(max_files=400, max_file_bytes=4096)
    val, train = docs[:32], docs[32:]
    rows = split_rows(len(train), 16, args.seed)
    stream = BatchStream([RowStream(train, r, cfg.segment_len, BOS_ID, EOS_ID) for r in rows])
    model = RMAT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    state = model.init_state(16)
    for _ in range(args.steps):
        loss, state, _ = window_loss(model, [stream.next_segment() for _ in range(2)], state)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state = state.detach()
    return position_losses(model, val, n_buckets=args.buckets)


@torch.no_grad()
def position_losses(model: RMAT, docs: list[np.ndarray], n_buckets: int) -> list[float]:
    """Mean loss of each segment index over documents long enough to reach it."""
    s = model.cfg.segment_len
    docs = [d for d in docs if len(d) + 1 >= n_buckets * s]
    stream = BatchStream([RowStream(docs, [i], s, BOS_ID, EOS_ID) for i in range(len(docs))])
    state = model.init_state(len(docs))
    losses = []
    for _ in range(n_buckets):
        seg = stream.next_segment()
        logits, state = model(seg.inputs, state, reset=seg.reset)
        losses.append(F.cross_entropy(logits.flatten(0, 1), seg.targets.flatten(), ignore_index=-100).item())
    return losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--pairs", type=int, default=4, help="key-value pairs to retrieve")
    p.add_argument("--buckets", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {}
    for pool in ("mean", "attn"):
        accuracy, seconds = retrieval_accuracy(pool, args)
        results[pool] = (accuracy, seconds, loss_by_position(pool, args))
        print(f"{pool}: retrieval accuracy {accuracy:.3f} ({seconds:.0f} s)", flush=True)
    headers = ["pool", "retrieval acc", *(f"loss seg {i}" for i in range(args.buckets))]
    rows = [[pool, f"{acc:.3f}", *(f"{x:.3f}" for x in losses)] for pool, (acc, _, losses) in results.items()]
    print()
    print_table(headers, rows)
    print(f"\nchance retrieval accuracy: {1 / FILLER:.3f} (or 1/{args.pairs} knowing only which values appeared); "
          f"attn/mean retrieval ratio: "
          f"{results['attn'][0] / max(results['mean'][0], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
