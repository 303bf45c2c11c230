"""Validation inside training: loss and perplexity per domain and per position bucket.

Every document is read from an empty memory, segment by segment with the memory
carried, as a deployed model would read it. Documents are dealt to ranks in a plan
every rank computes alike, so all ranks run the same number of forwards (ZeRO-3
gathers parameters collectively) and one all-reduce sums the results.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from model import MemoryState, RMATConfig
from pipeline.streams import IGNORE_INDEX, segment_window

DOMAINS = ("documents", "code", "dialogue")


def segment_batch(docs: list[np.ndarray], index: int, segment_len: int, bos_id: int, eos_id: int,
                  rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets [rows, S] of segment ``index`` of each document; missing rows are padding."""
    inputs = np.full((rows, segment_len), eos_id, dtype=np.int64)
    targets = np.full((rows, segment_len), IGNORE_INDEX, dtype=np.int64)
    for r, doc in enumerate(docs):
        if index * segment_len < len(doc) + 1:  # the document still has targets here
            inputs[r], targets[r], _ = segment_window(doc, index * segment_len, segment_len, bos_id, eos_id)
    return torch.from_numpy(inputs), torch.from_numpy(targets)


@torch.no_grad()
def evaluate(engine, docs: list[tuple[np.ndarray, str]], model_cfg: RMATConfig, rows: int, bucket_tokens: int,
             bos_id: int, eos_id: int, dtype: torch.dtype, device: torch.device) -> dict[str, float]:
    """Val metrics summed over all ranks: ``val/loss``, ``val/ppl``, per domain, per position bucket."""
    rank, world = dist.get_rank(), dist.get_world_size()
    s = model_cfg.segment_len
    bucket = bucket_tokens or s
    n_buckets = max(math.ceil((len(d) + 1) / bucket) for d, _ in docs)
    # [domain sums, domain counts, bucket sums, bucket counts]
    totals = torch.zeros(2 * len(DOMAINS) + 2 * n_buckets, dtype=torch.float64)
    engine.eval()
    group_size = rows * world
    for start in range(0, len(docs), group_size):
        group = docs[start:start + group_size]
        mine = group[rank::world]
        n_segments = max(math.ceil((len(d) + 1) / s) for d, _ in group)
        state = MemoryState.empty(model_cfg.n_layers, rows, model_cfg.mem_slots, model_cfg.d_model,
                                  device=device, dtype=dtype)
        for i in range(n_segments):
            inputs, targets = segment_batch([d for d, _ in mine], i, s, bos_id, eos_id, rows)
            logits, state = engine(inputs.to(device), state)
            nll = F.cross_entropy(logits.float().flatten(0, 1), targets.to(device).flatten(),
                                  ignore_index=IGNORE_INDEX, reduction="none").view(rows, s).double().cpu()
            counted = targets != IGNORE_INDEX
            position = torch.arange(i * s, (i + 1) * s) // bucket
            for r, (_, domain) in enumerate(mine):
                d = DOMAINS.index(domain)
                loss_r, mask = nll[r][counted[r]], counted[r]
                totals[d] += loss_r.sum()
                totals[len(DOMAINS) + d] += mask.sum()
                b = position[mask]
                base = 2 * len(DOMAINS)
                totals[base:base + n_buckets].index_add_(0, b, loss_r)
                totals[base + n_buckets:].index_add_(0, b, torch.ones_like(loss_r))
    engine.train()
    dist.all_reduce(totals)
    return _metrics(totals, n_buckets, bucket)


def _metrics(totals: torch.Tensor, n_buckets: int, bucket: int) -> dict[str, float]:
    nd = len(DOMAINS)
    sums, counts = totals[:nd], totals[nd:2 * nd]
    loss = float(sums.sum() / counts.sum().clamp(min=1))
    out = {"val/loss": loss, "val/ppl": math.exp(min(loss, 50.0))}
    for d, name in enumerate(DOMAINS):
        if counts[d] > 0:
            dl = float(sums[d] / counts[d])
            out[f"val/{name}/loss"], out[f"val/{name}/ppl"] = dl, math.exp(min(dl, 50.0))
    b_sums, b_counts = totals[2 * nd:2 * nd + n_buckets], totals[2 * nd + n_buckets:]
    for b in range(n_buckets):
        if b_counts[b] > 0:
            out[f"val/pos_{b * bucket}-{(b + 1) * bucket}/loss"] = float(b_sums[b] / b_counts[b])
    return out
