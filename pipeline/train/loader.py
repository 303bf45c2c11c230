"""Streaming rows of documents from token shards, with a small exact position.

Each data-parallel rank owns the shards ``i % world == rank`` and reads them in an
order shuffled by (seed, epoch), or in the manifest's order with ``data.shard_order:
as_written`` (data written as a curriculum). Their documents, counted in that order, are
dealt to the rank's rows in turn (row r takes documents r, r + rows, ...), so every row reads
its own contiguous stream of whole documents; inside a shard it cuts documents into
segments exactly as ``pipeline.streams.RowStream`` does. A row's position is (epoch,
shard, sample, token offset): that is all a checkpoint needs to continue the stream.
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from dataclasses import dataclass

import fsspec
import numpy as np

from data_prep.shards import ShardError, iter_shard, loss_spans, read_manifest
from pipeline.config import ConfigError
from pipeline.streams import BatchStream, RowStream, Segment, Spans
from pipeline.train.files import manifest_hash


@dataclass
class SplitInfo:
    """What the loader needs from a manifest for one split."""

    folder: str
    shards: list[dict]  # path, split, sha256, bytes, documents, tokens
    bos_id: int
    eos_id: int
    vocab_size: int
    tokenizer_hash: str
    manifest_hash: str

    def url(self, shard: dict) -> str:
        return self.folder.rstrip("/") + "/" + shard["path"]


def open_split(folder: str, split: str) -> SplitInfo:
    """Read the manifest (data_prep.shards contract) and check that every shard of ``split`` exists."""
    try:
        manifest = read_manifest(folder)
    except ShardError as e:
        raise ConfigError(f"data.shards={folder!r}: {e}") from e
    shards = [s for s in manifest["shards"] if s["split"] == split]
    if not shards:
        raise ConfigError(f"data.shards={folder!r}: the manifest has no shards for split {split!r} "
                          f"(it has {sorted(manifest['splits'])})")
    fs, root = fsspec.core.url_to_fs(folder)
    missing = [s["path"] for s in shards if not fs.exists(posixpath.join(root, s["path"]))]
    if missing:
        raise ConfigError(f"data.shards={folder!r}: {len(missing)} shard(s) listed in manifest.json are "
                          f"missing, e.g. {missing[0]}; rerun `rmat prep` to complete the folder")
    special = manifest["special_ids"]
    return SplitInfo(folder=folder, shards=shards, bos_id=int(special["bos"]), eos_id=int(special["eos"]),
                     vocab_size=int(manifest["vocab_size"]),
                     tokenizer_hash=str(manifest["tokenizer"].get("sha256", "")), manifest_hash=manifest_hash(manifest))


def check_train_data(info: SplitInfo, world_size: int, batch_size: int, model_vocab: int) -> None:
    """Every rank needs a shard and every row a document; ids must fit the model."""
    if len(info.shards) < world_size:
        raise ConfigError(f"data.shards={info.folder!r}: {len(info.shards)} train shard(s) cannot give each "
                          f"of {world_size} ranks its own; write more shards or use fewer processes")
    rows = batch_size // world_size
    for rank in range(world_size):
        docs = sum(s["documents"] for s in info.shards[rank::world_size])
        if docs < rows:
            raise ConfigError(f"rank {rank} owns {docs} train documents, fewer than its {rows} rows; "
                              "lower data.batch_size or write more data")
    top = max(info.vocab_size, info.bos_id + 1, info.eos_id + 1)
    if top > model_vocab:
        raise ConfigError(f"the shards' ids reach {top - 1} (vocab_size {info.vocab_size}, bos {info.bos_id}, "
                          f"eos {info.eos_id}) but model.vocab_size={model_vocab}")


def document_spans(url: str, key: str, ids: np.ndarray, meta: dict) -> Spans:
    """The loss spans of one document read from shard ``url`` (None: its every target counts)."""
    return loss_spans(meta, ids.size, f"shard {url}, document {key!r}")


class ShardCache:
    """The documents (and loss spans) of the last few shards read, so rows sharing a shard read it once."""

    def __init__(self, info: SplitInfo, capacity: int = 4) -> None:
        self.info, self.capacity = info, capacity
        self._docs: OrderedDict[str, tuple[list[np.ndarray], list[Spans] | None]] = OrderedDict()

    def documents(self, shard: dict) -> tuple[list[np.ndarray], list[Spans] | None]:
        """The shard's documents' ids, and their loss spans (None when no document has any)."""
        name = shard["path"]
        if name not in self._docs:
            url = self.info.url(shard)
            docs = list(iter_shard(url, shard["documents"]))
            spans = [document_spans(url, key, ids, meta) for key, ids, meta in docs]
            # Ids keep their stored dtype: 4x smaller than int64.
            self._docs[name] = ([ids for _, ids, _ in docs], None if all(s is None for s in spans) else spans)
            if len(self._docs) > self.capacity:
                self._docs.popitem(last=False)
        self._docs.move_to_end(name)
        return self._docs[name]


class ShardRow:
    """One row: every ``rows``-th document of the rank's shards, shard order reshuffled per epoch
    unless ``shuffle`` is off (then the manifest's order, every epoch)."""

    def __init__(self, info: SplitInfo, cache: ShardCache, owned: list[int], row: int, rows: int,
                 segment_len: int, seed: int, shuffle: bool = True) -> None:
        self.info, self.cache, self.owned = info, cache, owned
        self.row, self.rows, self.segment_len, self.seed, self.shuffle = row, rows, segment_len, seed, shuffle
        self.epoch, self.shard_pos = 0, 0
        self._stream: RowStream | None = None
        self._pending = {"doc_index": 0, "offset": 0}

    def _order(self) -> list[int]:
        if not self.shuffle:
            return self.owned
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.owned))
        return [self.owned[i] for i in perm]

    def _open(self) -> RowStream:
        while True:
            order = self._order()
            shard = self.info.shards[order[self.shard_pos]]
            # Deal the epoch's documents, counted across shards, to the rows in turn, so that every
            # row gets documents whenever the rank has at least as many documents as rows.
            before = sum(self.info.shards[i]["documents"] for i in order[:self.shard_pos])
            slots = list(range((self.row - before) % self.rows, shard["documents"], self.rows))
            if slots:
                ids, spans = self.cache.documents(shard)
                stream = RowStream(ids, slots, self.segment_len, self.info.bos_id, self.info.eos_id, spans)
                stream.load_state_dict(self._pending)
                return stream
            self._advance()

    def _advance(self) -> None:
        self.shard_pos += 1
        if self.shard_pos == len(self.owned):
            self.epoch, self.shard_pos = self.epoch + 1, 0
        self._stream, self._pending = None, {"doc_index": 0, "offset": 0}

    def next_segment(self, room: int = 0, window: int = 0,
                     align_ends: bool = False) -> tuple[np.ndarray, np.ndarray, bool]:
        """(inputs [S], targets [S], reset) of this row's next segment (``RowStream.next_segment``)."""
        if self._stream is None:
            self._stream = self._open()
        out = self._stream.next_segment(room, window, align_ends)
        if self._stream.doc_index == len(self._stream.order):
            self._advance()
        return out

    def state_dict(self) -> dict:
        inner = self._stream.state_dict() if self._stream is not None else self._pending
        shard = self.info.shards[self._order()[self.shard_pos]]["path"]
        return {"epoch": self.epoch, "shard_pos": self.shard_pos, "shard": shard,
                "sample": inner["doc_index"], "offset": inner["offset"]}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.shard_pos = int(state["epoch"]), int(state["shard_pos"])
        self._stream, self._pending = None, {"doc_index": int(state["sample"]), "offset": int(state["offset"])}


class TrainLoader:
    """This rank's rows in ``groups`` micro-batches (gradient accumulation), each its own stream."""

    def __init__(self, info: SplitInfo, rank: int, world_size: int, batch_size: int, groups: int,
                 segment_len: int, seed: int, whole_short_documents: bool = False,
                 align_document_ends: bool = False, shard_order: str = "shuffled") -> None:
        self.whole_short_documents, self.align_document_ends = whole_short_documents, align_document_ends
        rows = batch_size // world_size
        owned = list(range(rank, len(info.shards), world_size))
        cache = ShardCache(info)
        shuffle = shard_order == "shuffled"
        all_rows = [ShardRow(info, cache, owned, r, rows, segment_len, seed, shuffle) for r in range(rows)]
        per_group = rows // groups
        self.groups = [BatchStream(all_rows[g * per_group:(g + 1) * per_group]) for g in range(groups)]

    def window(self, group: int, k: int) -> list[Segment]:
        """The next k consecutive segments of every row of one micro-batch; with
        ``whole_short_documents`` no document of at most k segments straddles two windows, with
        ``align_document_ends`` none does and every longer one ends where a window ends."""
        fit = k if self.whole_short_documents or self.align_document_ends else 0
        return [self.groups[group].next_segment(k - j, fit, self.align_document_ends) for j in range(k)]

    def state_dict(self) -> list[list[dict]]:
        return [g.state_dict() for g in self.groups]

    def load_state_dict(self, state: list[list[dict]]) -> None:
        if len(state) != len(self.groups):
            raise ValueError(f"saved loader has {len(state)} micro-batches; this run has {len(self.groups)}")
        for group, s in zip(self.groups, state, strict=True):
            group.load_state_dict(s)


def read_documents(info: SplitInfo, max_docs: int) -> list[tuple[np.ndarray, str, Spans]]:
    """The first ``max_docs`` documents of a split with their domain and loss spans, in manifest order."""
    docs: list[tuple[np.ndarray, str, Spans]] = []
    for shard in info.shards:
        url = info.url(shard)
        for key, ids, meta in iter_shard(url, shard["documents"]):
            docs.append((ids, str(meta["domain"]), document_spans(url, key, ids, meta)))
            if len(docs) == max_docs:
                return docs
    return docs
