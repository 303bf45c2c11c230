"""The shard loader: disjoint per-rank and per-row document streams, and an exact, small position."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from data_prep.byte_shards import write_id_shards
from data_prep.shards import ShardError, iter_shard
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


def _epoch_of_row(loader: TrainLoader, row: int, epoch: int = 0) -> list[bytes]:
    """The documents one row reads during an epoch (the first, or the one it is in), rebuilt from its segments."""
    stream = loader.groups[0].rows[row]
    docs: list[list[np.ndarray]] = []
    while stream.state_dict()["epoch"] == epoch:
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


def test_as_written_rows_read_the_shards_in_manifest_order_every_epoch(shards):
    info = open_split(shards, "train")
    docs, rows = _documents(info, range(len(info.shards))), 2  # the manifest's order
    as_written = TrainLoader(info, 0, 1, rows, 1, S, seed=0, shard_order="as_written")
    shuffled = TrainLoader(info, 0, 1, rows, 1, S, seed=0)
    for row in range(rows):
        epochs = [_epoch_of_row(as_written, row), _epoch_of_row(as_written, row, epoch=1)]
        assert epochs == [docs[row::rows]] * 2
        assert [_epoch_of_row(shuffled, row), _epoch_of_row(shuffled, row, epoch=1)] != epochs


ALIGNMENTS = {"stream": {}, "whole_short_documents": {"whole_short_documents": True},
              "align_document_ends": {"align_document_ends": True}}


@pytest.mark.parametrize("alignment", list(ALIGNMENTS))
def test_loader_position_restores_the_stream_exactly(shards, alignment):
    info = open_split(shards, "train")
    original = TrainLoader(info, 1, 2, 8, 2, S, seed=3, **ALIGNMENTS[alignment])
    for _ in range(7):
        original.window(0, 2), original.window(1, 2)
    state = json.loads(json.dumps(original.state_dict()))  # small plain data
    assert {"epoch", "shard", "sample", "offset"} <= set(state[0][0])
    restored = TrainLoader(info, 1, 2, 8, 2, S, seed=3, **ALIGNMENTS[alignment])
    restored.load_state_dict(state)
    for _ in range(40):
        for group in (0, 1):
            for a, b in zip(original.window(group, 2), restored.window(group, 2), strict=True):
                assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
                assert torch.equal(a.reset, b.reset)


def _documents_read(loader: TrainLoader, k: int, windows: int) -> list[list[tuple[int, int, bytes]]]:
    """Per row of group 0, the documents read in ``windows`` windows of k: (first segment, segments, ids)."""
    rows = len(loader.groups[0].rows)
    docs: list[list[tuple[int, int, bytes]]] = [[] for _ in range(rows)]
    for w in range(windows):
        for j, seg in enumerate(loader.window(0, k)):
            for r in range(rows):
                counted = seg.inputs[r][seg.targets[r] != IGNORE_INDEX]
                if seg.reset[r]:
                    docs[r].append((w * k + j, 0, b""))
                if len(counted):
                    first, n, ids = docs[r][-1]
                    docs[r][-1] = (first, n + 1, ids + counted.numpy().tobytes())
    return docs


@pytest.mark.parametrize("alignment", ["whole_short_documents", "align_document_ends"])
def test_short_documents_lie_in_one_window(shards, alignment):
    info = open_split(shards, "train")
    k, s = 3, 256  # the shards' documents span from 1 to many segments of 256 bytes
    rows = _documents_read(TrainLoader(info, 0, 1, 4, 1, s, seed=0, **ALIGNMENTS[alignment]), k, 100)
    short = [(first, n) for row in rows for first, n, _ in row[:-1] if n <= k]
    assert len(short) > 20
    assert all(first // k == (first + n - 1) // k for first, n in short)


def test_aligned_documents_end_where_a_window_ends(shards):
    info = open_split(shards, "train")
    k, s = 3, 256
    rows = _documents_read(TrainLoader(info, 0, 1, 4, 1, s, seed=0, align_document_ends=True), k, 100)
    long = [(first, n) for row in rows for first, n, _ in row[:-1] if n > k]
    assert len(long) > 20
    assert all((first + n) % k == 0 for first, n in long)


@pytest.mark.parametrize("alignment", ["whole_short_documents", "align_document_ends"])
def test_alignment_only_delays_documents_never_skips_them(shards, alignment):
    info = open_split(shards, "train")
    k, s = 3, 256
    plain = _documents_read(TrainLoader(info, 0, 1, 4, 1, s, seed=0), k, 100)
    aligned = _documents_read(TrainLoader(info, 0, 1, 4, 1, s, seed=0, **ALIGNMENTS[alignment]), k, 100)
    for a, b in zip(plain, aligned, strict=True):
        assert [ids for _, _, ids in b[:-1]] == [ids for _, _, ids in a[:len(b) - 1]]


def rewrite_json_members(shard: str, old: bytes, new: bytes) -> None:
    """Edit the shard's .json members in place, as a damaged or hand-made shard would be."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            data = data.replace(old, new) if member.name.endswith(".json") else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def test_a_shard_with_malformed_loss_spans_is_refused_naming_shard_and_document(tmp_path):
    doc = ("doc0", np.arange(1, 40, dtype=np.uint16), {"domain": "code", "loss_spans": [[30, 35]]})
    write_id_shards(str(tmp_path), {"train": [[doc]], "val": [[doc]]}, 64, 62, 63, "bad-spans",
                    {"sha256": "t", "model": "", "model_type": "bytes"})
    rewrite_json_members(str(tmp_path / "train-000000.tar"), b"[[30,35]]", b"[[30,50]]")
    info = open_split(str(tmp_path), "train")
    with pytest.raises(ShardError, match=r"train-000000.tar, document 'doc0': loss_spans \[\[30, 50\]\]"):
        TrainLoader(info, 0, 1, 1, 1, 8, seed=0).window(0, 1)
