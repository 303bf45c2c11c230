"""Passkey samples (the Landmark-attention protocol): a pass key hidden in text, asked for later.

A sample is text with "The pass key is N. Remember it. N is the pass key." at a random
place of segment ``lead`` (the first unless ``lead`` segments of text come before it), and
"What is the pass key? The pass key is N" ending the segment ``distance`` later. The
evaluation (pipeline/train/passkey.py) draws them from held-out text; the shard stage can
add them to the training data (``shard.passkey``), drawn from each train shard's own
documents, with the answer as the document's only loss span, so a model is taught to keep a
fact in its memory for as many segments as the mix asks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = " What is the pass key? The pass key is"
ANSWER = " {key}"


@dataclass
class PasskeySample:
    tokens: np.ndarray  # BOS first, the answer last; make_sample gives the length
    answer_len: int  # the answer's ids end the sample


def filler_stream(docs: list[np.ndarray], eos_id: int, bos_id: int) -> np.ndarray:
    """Documents end to end, each between BOS and EOS as the model sees documents in training."""
    if not docs:
        raise ValueError("passkey samples need text to hide the key in, and there are no documents")
    return np.concatenate([np.concatenate([[bos_id], d, [eos_id]]) for d in docs]).astype(np.int64)


def make_sample(filler: np.ndarray, encode: Callable[[str], list[int]], distance: int, segment_len: int,
                bos_id: int, rng: np.random.Generator, n_tokens: int = 0, lead: int = 0) -> PasskeySample:
    """A sample whose pass key lies in segment ``lead`` and whose answer ends segment ``lead + distance``.

    ``lead`` segments of filler before the key's segment mean the key is written into a memory
    that already holds text, as it is wherever a key lies past a document's first segment.
    ``n_tokens`` (BOS and answer included) defaults to (lead + distance + 1) * segment_len + 1:
    read as lead + d + 1 segments of inputs, the last of which predicts the answer's last id at its end.
    """
    key = int(rng.integers(10_000, 100_000))
    needle, question, answer = (encode(NEEDLE.format(key=key)), encode(QUESTION), encode(ANSWER.format(key=key)))
    n_tokens = n_tokens or (lead + distance + 1) * segment_len + 1
    room = segment_len - 1 - len(needle)  # the needle ends inside segment ``lead``, after BOS
    n_filler = n_tokens - 1 - len(needle) - len(question) - len(answer)
    if room < 0 or n_filler < lead * segment_len or len(question) + len(answer) > segment_len:
        raise ValueError(f"segment_len={segment_len} is too short for the passkey sentences "
                         f"({len(needle)} + {len(question) + len(answer)} tokens); use a longer segment")
    at = lead * segment_len + int(rng.integers(0, min(room, n_filler - lead * segment_len) + 1))
    start = int(rng.integers(0, len(filler)))
    text = np.take(filler, np.arange(start, start + n_filler), mode="wrap")
    tokens = np.concatenate([[bos_id], text[:at], needle, text[at:], question, answer]).astype(np.int64)
    return PasskeySample(tokens, len(answer))


def training_documents(docs: list[np.ndarray], encode: Callable[[str], list[int]], count: int, segment_len: int,
                       max_distance: int, bos_id: int, eos_id: int, rng: np.random.Generator, max_lead: int = 0
                       ) -> list[tuple[np.ndarray, list[list[int]]]]:
    """``count`` passkey samples over ``docs`` as training documents: (ids, loss spans) each.

    Distances are drawn uniformly from 0..``max_distance`` segments, and the segments of filler
    before the key's segment from 0..``max_lead``. A document is its sample less the leading
    BOS (the loader puts it back); its one loss span is the answer, the document's last ids.
    A sample is one filler id shorter than the evaluation's, so that with the loader's BOS and
    EOS the document is read as exactly lead + d + 1 segments (the EOS is the last target): a
    sample of the evaluation's length would spill its EOS into a segment of padding of its own,
    a second segment per distance-0 sample.
    """
    filler = filler_stream(docs, eos_id, bos_id)
    out = []
    for _ in range(count):
        distance = int(rng.integers(0, max_distance + 1))
        # No draw without a lead, so that shards written before leads existed are written the same.
        lead = int(rng.integers(0, max_lead + 1)) if max_lead else 0
        sample = make_sample(filler, encode, distance, segment_len, bos_id, rng,
                             n_tokens=(lead + distance + 1) * segment_len, lead=lead)
        ids = sample.tokens[1:]
        out.append((ids, [[len(ids) - sample.answer_len, len(ids)]]))
    return out
