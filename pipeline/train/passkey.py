"""Passkey retrieval (the Landmark-attention protocol) at a distance counted in segments.

A sample (data_prep/passkey.py) is held-out text with "The pass key is N. Remember it. N
is the pass key." at a random place of its first segment, and "What is the pass key? The
pass key is N" ending its last segment, ``distance`` segments later. The model reads the
sample segment by segment with its memory carried, and, as the baseline beside it, with
the memory emptied before every segment; a sample counts as retrieved when greedy
prediction gives every token of N. Past distance 0 only the memory can carry N to the question.
The same distances are also read with the key after segments of text (``lead``), where the
Landmark protocol puts it: anywhere in a long context.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from data_prep.passkey import PasskeySample, filler_stream, make_sample


@torch.no_grad()
def retrieved(model: nn.Module, samples: list[PasskeySample], segment_len: int, reset: bool) -> int:
    """How many samples (all of one distance) the model completes with their exact pass key."""
    tokens = torch.from_numpy(np.stack([s.tokens for s in samples])).to(_device(model))
    rows, n_segments = tokens.shape[0], (tokens.shape[1] - 1) // segment_len
    state = model.init_state(rows)
    for i in range(n_segments):
        inputs = tokens[:, i * segment_len:(i + 1) * segment_len]
        logits, state = model(inputs, model.init_state(rows) if reset else state)
    hits = 0
    for r, sample in enumerate(samples):
        a = sample.answer_len
        guess = logits[r, segment_len - a:].argmax(-1)
        hits += int(torch.equal(guess, tokens[r, -a:]))
    return hits


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def passkey_metrics(model: nn.Module, docs: list[np.ndarray], encode: Callable[[str], list[int]],
                    distances: list[int], samples: int, seed: int, segment_len: int, bos_id: int, eos_id: int,
                    with_reset: bool) -> dict[str, float]:
    """``passkey/d<dd>/accuracy`` per distance (and ``..._reset``, memory emptied), summed over ranks.

    ``..._after_text`` reads the same distance with the key after max(distances) - d segments of
    text: every such sample is as long as the longest, the key at a random segment of it, as the
    Landmark protocol hides it, so the key is written into a memory that already holds text (a
    model trained only on keys in a document's first segment can fail there). Every rank draws
    the same samples from ``seed`` and reads its share of them.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    filler, rng = filler_stream(docs, eos_id, bos_id), np.random.default_rng(seed)
    modes = [("", False, False), ("_after_text", False, True)] + ([("_reset", True, False)] if with_reset else [])
    hits = torch.zeros(len(distances), len(modes), dtype=torch.float64, device=_device(model))  # NCCL: on GPU
    for i, distance in enumerate(distances):
        try:
            drawn = [make_sample(filler, encode, distance, segment_len, bos_id, rng) for _ in range(samples)]
            led = [make_sample(filler, encode, distance, segment_len, bos_id, rng, lead=max(distances) - distance)
                   for _ in range(samples)]
        except ValueError as e:
            raise ValueError(f"{e}, or set evaluate.passkey.distances=[]") from e
        for m, (_, reset, after_text) in enumerate(modes):
            mine = (led if after_text else drawn)[rank::world]
            hits[i, m] = retrieved(model, mine, segment_len, reset) if mine else 0
    dist.all_reduce(hits)
    out = {}
    for i, distance in enumerate(distances):
        for m, (suffix, _, _) in enumerate(modes):
            out[f"passkey/d{distance:02d}/accuracy{suffix}"] = float(hits[i, m]) / samples
    return out
