"""The shard loader: disjoint per-rank and per-row document streams, and an exact, small position."""

from __future__ import annotations

import json

import numpy as np
import torch

from data_prep.shards import iter_shard
from pipeline.streams import IGNORE_INDEX
from pipeline.train.loader import TrainLoader, open_split

S = 32


def _documents(info, shard_indices) -> list[bytes]:
    """[bos] + ids of every document of these shards."""
    out = []
    for i in shard_indices:
        shard = info.shards[i]
        for _, ids, _ in iter_shard(info.url(shard), shard["documents"]):
            out.append(np.concatenate([[info.bos_id], ids.astype(np.int64)]).tobytes())
    return out


def _epoch_of_row(loader: TrainLoader, row: int) -> list[bytes]:
    """The documents one row reads during its first epoch, rebuilt from its segments."""
    stream = loader.groups[0].rows[row]
    docs: list[list[np.ndarray]] = []
    while stream.state_dict()["epoch"] == 0:
        inputs, targets, reset = stream.next_segment()
        if reset:
            docs.append([])
        docs[-1].append(inputs[targets != IGNORE_INDEX])
    return [np.concatenate(parts).tobytes() for parts in docs]


def test_ranks_and_rows_read_disjoint_streams_that_cover_each_epoch(shards):
    info = open_split(shards, "train")
    world, batch = 2, 8
    per_rank = []
    for rank in range(world):
        loader = TrainLoader(info, rank, world, batch, 1, S, seed=0)
        rows = [_epoch_of_row(loader, r) for r in range(batch // world)]
        assert all(rows)
        flat = sorted(d for row in rows for d in row)
        # Each of the rank's documents exactly once per epoch, whole, over all rows together.
        assert flat == sorted(_documents(info, range(rank, len(info.shards), world)))
        per_rank.append(set(flat))
    assert not per_rank[0] & per_rank[1]


def test_loader_position_restores_the_stream_exactly(shards):
    info = open_split(shards, "train")
    original = TrainLoader(info, 1, 2, 8, 2, S, seed=3)
    for _ in range(7):
        original.window(0, 2), original.window(1, 2)
    state = json.loads(json.dumps(original.state_dict()))  # small plain data
    assert {"epoch", "shard", "sample", "offset"} <= set(state[0][0])
    restored = TrainLoader(info, 1, 2, 8, 2, S, seed=3)
    restored.load_state_dict(state)
    for _ in range(40):
        for group in (0, 1):
            for a, b in zip(original.window(group, 2), restored.window(group, 2), strict=True):
                assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
                assert torch.equal(a.reset, b.reset)
