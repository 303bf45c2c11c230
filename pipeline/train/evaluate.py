"""Validation inside training: loss and perplexity per domain and per position bucket, and
what the memory is worth (the same documents read with the memory reset, and with another's).

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
from pipeline.streams import IGNORE_INDEX, Spans, segment_window

DOMAINS = ("documents", "code", "dialogue")


def segment_batch(docs: list[np.ndarray], index: int, segment_len: int, bos_id: int, eos_id: int,
                  rows: int, spans: list[Spans] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets [rows, S] of segment ``index`` of each document (targets outside a
    document's loss spans left out); missing rows are padding."""
    inputs = np.full((rows, segment_len), eos_id, dtype=np.int64)
    targets = np.full((rows, segment_len), IGNORE_INDEX, dtype=np.int64)
    for r, doc in enumerate(docs):
        if index * segment_len < len(doc) + 1:  # the document still has targets here
            inputs[r], targets[r], _ = segment_window(doc, index * segment_len, segment_len, bos_id, eos_id,
                                                      None if spans is None else spans[r])
    return torch.from_numpy(inputs), torch.from_numpy(targets)


MODES = ("carried", "reset", "foreign")


@torch.no_grad()
def evaluate(engine, docs: list[tuple[np.ndarray, str, Spans]], model_cfg: RMATConfig, rows: int, bucket_tokens: int,
             bos_id: int, eos_id: int, dtype: torch.dtype, device: torch.device, max_tokens: int = 0
             ) -> dict[str, float]:
    """Val metrics summed over all ranks: ``val/loss``, ``val/ppl``, per domain, per position bucket.

    ``max_tokens`` > 0 reads only the segments that begin within each document's first
    ``max_tokens`` tokens: a few long books otherwise cost more than every other document.

    Position buckets are log-spaced in units of ``bucket_tokens`` (0: the segment length):
    the first unit, the second, the 3rd-4th, the 5th-8th, ... so that a book gives a
    handful of metrics, named ``val/pos_<bb>_<first token>-<end token>/loss`` to sort.

    With a memory, every segment is also read with the memory emptied before it
    (``reset``) and with another document's memory (``foreign``), so that
    ``val/<domain>/memory_benefit`` = loss(reset) - loss(carried) past the first segment
    says how much the memory carries, and loss(foreign) whether it carries this document.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    s = model_cfg.segment_len
    bucket = bucket_tokens or s
    limit = math.ceil(max_tokens / s) if max_tokens else math.inf  # segments read per document
    longest = min(max(len(d) for d, _, _ in docs), limit * s)
    n_buckets = int(position_bucket(torch.tensor(longest), bucket)) + 1
    modes = MODES if model_cfg.has_memory else MODES[:1]
    acc = _Totals(len(modes), n_buckets)
    engine.eval()
    group_size = rows * world
    for start in range(0, len(docs), group_size):
        group = docs[start:start + group_size]
        mine = group[rank::world]
        n_segments = min(max(math.ceil((len(d) + 1) / s) for d, _, _ in group), limit)
        empty = MemoryState.empty(len(model_cfg.memory_layers), rows, model_cfg.memory_slots, model_cfg.d_model,
                                  device=device, dtype=dtype)
        state = empty
        others = _other_rows(len(mine), rows)
        for i in range(n_segments):
            inputs, targets = segment_batch([d for d, _, _ in mine], i, s, bos_id, eos_id, rows,
                                            [spans for _, _, spans in mine])
            inputs, counted = inputs.to(device), targets != IGNORE_INDEX
            starts = {"carried": state, "reset": empty, "foreign": state.select_rows(others)}
            for m, mode in enumerate(modes):
                logits, next_state = engine(inputs, starts[mode])
                if mode == "carried":
                    state = next_state
                if mode == "foreign" and len(mine) < 2:
                    continue  # one document has no other's memory to read (the forward still ran: ZeRO-3)
                nll = F.cross_entropy(logits.float().flatten(0, 1), targets.to(device).flatten(),
                                      ignore_index=IGNORE_INDEX, reduction="none").view(rows, s).double().cpu()
                acc.add(m, nll, counted, [DOMAINS.index(domain) for _, domain, _ in mine],
                        position_bucket(torch.arange(i * s, (i + 1) * s), bucket), past_first=i > 0)
    engine.train()
    # NCCL reduces only tensors on the GPU; gloo takes either.
    totals = acc.flat.to(device)
    dist.all_reduce(totals)
    acc.flat.copy_(totals.cpu())
    return acc.metrics(modes, bucket)


def position_bucket(positions: torch.Tensor, unit: int) -> torch.Tensor:
    """The log-spaced bucket of each token position: unit j = position // unit goes to bit_length(j)."""
    return torch.frexp(torch.div(positions, unit, rounding_mode="floor").double()).exponent.long()


def bucket_name(b: int, unit: int) -> str:
    """``pos_<bb>_<first>-<end>``: bucket b covers units [2^(b-1), 2^b) (bucket 0: the first unit)."""
    lo, hi = (0, 1) if b == 0 else (1 << (b - 1), 1 << b)
    return f"pos_{b:02d}_{lo * unit}-{hi * unit}"


def _other_rows(n_docs: int, rows: int) -> torch.Tensor:
    """Row r reads the memory of row r + 1 among the rows holding a document (padding rows keep theirs)."""
    order = torch.arange(rows)
    order[:n_docs] = torch.roll(order[:n_docs], -1)
    return order


class _Totals:
    """Loss sums and token counts per mode, per domain (all positions and past the first
    segment) and per position bucket, in one flat tensor for a single all-reduce."""

    def __init__(self, n_modes: int, n_buckets: int) -> None:
        nd = len(DOMAINS)
        self.flat = torch.zeros(n_modes * (4 * nd + 2 * n_buckets), dtype=torch.float64)
        per_mode = self.flat.view(n_modes, -1)
        self.domain_sum, self.domain_count = per_mode[:, :nd], per_mode[:, nd:2 * nd]
        self.past_sum, self.past_count = per_mode[:, 2 * nd:3 * nd], per_mode[:, 3 * nd:4 * nd]
        self.bucket_sum = per_mode[:, 4 * nd:4 * nd + n_buckets]
        self.bucket_count = per_mode[:, 4 * nd + n_buckets:]

    def add(self, mode: int, nll: torch.Tensor, counted: torch.Tensor, domains: list[int],
            buckets: torch.Tensor, past_first: bool) -> None:
        for r, d in enumerate(domains):
            loss_r, mask = nll[r][counted[r]], counted[r]
            self.domain_sum[mode, d] += loss_r.sum()
            self.domain_count[mode, d] += mask.sum()
            if past_first:
                self.past_sum[mode, d] += loss_r.sum()
                self.past_count[mode, d] += mask.sum()
            self.bucket_sum[mode].index_add_(0, buckets[mask], loss_r)
            self.bucket_count[mode].index_add_(0, buckets[mask], torch.ones_like(loss_r))

    def metrics(self, modes: tuple[str, ...], bucket: int) -> dict[str, float]:
        loss = float(self.domain_sum[0].sum() / self.domain_count[0].sum().clamp(min=1))
        out = {"val/loss": loss, "val/ppl": math.exp(min(loss, 50.0))}
        for d, name in enumerate(DOMAINS):
            if self.domain_count[0, d] > 0:
                dl = float(self.domain_sum[0, d] / self.domain_count[0, d])
                out[f"val/{name}/loss"], out[f"val/{name}/ppl"] = dl, math.exp(min(dl, 50.0))
            if len(modes) > 1 and self.past_count[0, d] > 0:
                past = self.past_sum[:, d] / self.past_count[:, d]
                for m, mode in enumerate(modes):
                    if self.past_count[m, d] > 0:
                        out[f"val/{name}/loss_past_first_segment_{mode}"] = float(past[m])
                out[f"val/{name}/memory_benefit"] = float(past[modes.index("reset")] - past[0])
        for m, mode in enumerate(modes):
            suffix = "" if mode == "carried" else f"_{mode}"
            for b in range(self.bucket_sum.shape[1]):
                if self.bucket_count[m, b] > 0:
                    out[f"val/{bucket_name(b, bucket)}/loss{suffix}"] = \
                        float(self.bucket_sum[m, b] / self.bucket_count[m, b])
        return out
