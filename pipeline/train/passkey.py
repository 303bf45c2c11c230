"""Passkey retrieval (the Landmark-attention protocol) at a distance counted in segments.

A sample is held-out text with "The pass key is N. Remember it. N is the pass key." at a
random place of its first segment, and "What is the pass key? The pass key is N" ending
its last segment, ``distance`` segments later. The model reads the sample segment by
segment with its memory carried, and, as the baseline beside it, with the memory emptied
before every segment; a sample counts as retrieved when greedy prediction gives every
token of N. Past distance 0 only the memory can carry N to the question.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = " What is the pass key? The pass key is"
ANSWER = " {key}"


@dataclass
class PasskeySample:
    tokens: np.ndarray  # (distance + 1) * segment_len + 1 ids: BOS first, the answer last
    answer_len: int  # the answer's ids end the sample


def filler_stream(docs: list[np.ndarray], eos_id: int, bos_id: int) -> np.ndarray:
    """Held-out documents end to end, each between BOS and EOS as the model saw documents in training."""
    if not docs:
        raise ValueError("passkey retrieval needs held-out text, and the split has no documents")
    return np.concatenate([np.concatenate([[bos_id], d, [eos_id]]) for d in docs]).astype(np.int64)


def make_sample(filler: np.ndarray, encode: Callable[[str], list[int]], distance: int, segment_len: int,
                bos_id: int, rng: np.random.Generator) -> PasskeySample:
    """A sample whose pass key lies in segment 0 and whose answer ends segment ``distance``."""
    key = int(rng.integers(10_000, 100_000))
    needle, question, answer = (encode(NEEDLE.format(key=key)), encode(QUESTION), encode(ANSWER.format(key=key)))
    n_tokens = (distance + 1) * segment_len + 1
    room = segment_len - 1 - len(needle)  # the needle ends inside segment 0, after BOS
    n_filler = n_tokens - 1 - len(needle) - len(question) - len(answer)
    if room < 0 or n_filler < 0 or len(question) + len(answer) > segment_len:
        raise ValueError(f"segment_len={segment_len} is too short for the passkey sentences "
                         f"({len(needle)} + {len(question) + len(answer)} tokens); use a longer segment "
                         f"or set evaluate.passkey.distances=[]")
    at = int(rng.integers(0, min(room, n_filler) + 1))
    start = int(rng.integers(0, len(filler)))
    text = np.take(filler, np.arange(start, start + n_filler), mode="wrap")
    tokens = np.concatenate([[bos_id], text[:at], needle, text[at:], question, answer]).astype(np.int64)
    return PasskeySample(tokens, len(answer))


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

    Every rank draws the same samples from ``seed`` and reads its share of them.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    filler, rng = filler_stream(docs, eos_id, bos_id), np.random.default_rng(seed)
    modes = (False, True) if with_reset else (False,)
    hits = torch.zeros(len(distances), len(modes), dtype=torch.float64, device=_device(model))  # NCCL: on GPU
    for i, distance in enumerate(distances):
        drawn = [make_sample(filler, encode, distance, segment_len, bos_id, rng) for _ in range(samples)]
        mine = drawn[rank::world]
        for m, reset in enumerate(modes):
            hits[i, m] = retrieved(model, mine, segment_len, reset) if mine else 0
    dist.all_reduce(hits)
    out = {}
    for i, distance in enumerate(distances):
        for m, reset in enumerate(modes):
            out[f"passkey/d{distance:02d}/accuracy{'_reset' if reset else ''}"] = float(hits[i, m]) / samples
    return out
