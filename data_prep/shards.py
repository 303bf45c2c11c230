"""Token shards: the deterministic WebDataset writer, a safe reader, and the manifest.

A shard is a POSIX (ustar) tar named ``{split}-{index:06d}.tar`` whose documents are packed
into samples of ``sample_tokens`` ids (the last one shorter; 0: one document per sample).
Sample ``n`` of a shard is two members, written in this order:

- ``{n:06d}.npy``  the ids of its documents concatenated, ``numpy.save`` of a 1-D uint16 (or
  uint32) array, no pickle; BOS/EOS are *not* stored: the training loader adds them (ids in
  the manifest).
- ``{n:06d}.json`` ``{"docs": [{"key", "offset", "length", "size", "meta"}, ...]}``: per
  document (part) in the order of the ids, its key (the first 24 hex digits of its sha256),
  where this part starts in the document (``offset``), how many ids it has here
  (``length``), the document's total ids (``size``) and its metadata ``meta``
  (``source``, ``domain``, ``lang``, ``doc_hash``, ``tokens``; sorted keys). An optional
  ``loss_spans`` ``[[start, end], ...]`` limits the training loss to those target positions
  (position p predicts the document's id p; p = size predicts the EOS the loader appends):
  for documents made to teach one skill, such as recall tasks whose filler is random.

A document longer than the room left in a sample continues at offset ``offset + length``
at the start of the next sample. Members have mtime 0, uid/gid 0, uname/gname ``rmat``, mode
0644, so the same documents give the same bytes; with 64k-id samples the tar's own bytes
(headers, padding) are under 2% of a shard whatever the documents' lengths. ``iter_shard``
gives back the documents exactly, one by one.

``manifest.json`` is written last, after every shard is in place. Schema (version 2)::

    {
      "format": "rmat-shards", "version": 2,
      "config_hash": str,             # the key of this stage folder
      "dtype": "uint16" | "uint32",
      "sample_tokens": int,           # ids per sample (0: one document per sample)
      "vocab_size": int,
      "special_ids": {"pad": int, "unk": int, "bos": int, "eos": int, "turn": int},
      "loader_adds": ["bos", "eos"],  # what a reader puts around each document's ids
      "tokenizer": {"sha256": str, "model": str (path relative to this folder), "model_type": str},
      "shards": [{"path": str (relative), "split": str, "sha256": str, "bytes": int,
                  "documents": int, "tokens": int}, ...],   # sorted by split then index
      "splits": {split: {"shards": int, "documents": int, "tokens": int}}
    }

Version 1 (one document per sample, keyed by the document) is refused: rerun ``rmat prep``.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from collections.abc import Iterable, Iterator

import fsspec
import numpy as np

MANIFEST = "manifest.json"
FORMAT = "rmat-shards"
VERSION = 2
_SHARD_KEYS = {"path": str, "split": str, "sha256": str, "bytes": int, "documents": int, "tokens": int}
_TOP_KEYS = {
    "format": str,
    "version": int,
    "config_hash": str,
    "dtype": str,
    "sample_tokens": int,
    "vocab_size": int,
    "special_ids": dict,
    "tokenizer": dict,
    "shards": list,
    "splits": dict,
}


class ShardError(ValueError):
    """A shard or manifest that is missing, truncated, unsafe or malformed."""


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def dtype_for(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def sample_key(doc_hash: str) -> str:
    return doc_hash[:24]


# --------------------------------------------------------------------------- writing


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "rmat"
    info.type = tarfile.REGTYPE
    return info, io.BytesIO(data)


def encode_sample(ids: np.ndarray, docs: list[dict]) -> tuple[bytes, bytes]:
    """The two member payloads of a sample: npy bytes and canonical json bytes."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(ids), allow_pickle=False)
    return buf.getvalue(), json.dumps({"docs": docs}, sort_keys=True, separators=(",", ":")).encode()


def pack(docs: Iterable[tuple[str, np.ndarray, dict]], sample_tokens: int) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """Group (key, ids, meta) documents into samples of ``sample_tokens`` ids: (ids, entries) each."""
    parts: list[np.ndarray] = []
    entries: list[dict] = []
    room = sample_tokens
    for key, ids, meta in docs:
        if "." in key or "/" in key:
            raise ShardError(f"document key {key!r} must not contain '.' or '/'")
        loss_spans(meta, ids.size, f"document {key!r}")  # refused before anything is written
        offset = 0
        while True:
            take = ids.size - offset if sample_tokens == 0 else min(room, ids.size - offset)
            parts.append(ids[offset : offset + take])
            entries.append({"key": key, "offset": offset, "length": int(take), "size": int(ids.size), "meta": meta})
            offset, room = offset + take, room - take
            if sample_tokens == 0 or room == 0:
                yield np.concatenate(parts), entries
                parts, entries, room = [], [], sample_tokens
            if offset == ids.size:
                break
    if entries:
        yield np.concatenate(parts), entries


def write_shard(fileobj, docs: Iterable[tuple[str, np.ndarray, dict]], *, sample_tokens: int) -> tuple[int, int]:
    """Write (key, ids, meta) documents, packed into samples, as a deterministic ustar tar to ``fileobj``.

    Returns (documents, tokens). The caller provides atomicity (see atomic.atomic_open).
    """
    count = {"docs": 0, "tokens": 0}

    def counted():
        for key, ids, meta in docs:
            count["docs"] += 1
            count["tokens"] += int(ids.size)
            yield key, ids, meta

    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for n, (ids, entries) in enumerate(pack(counted(), sample_tokens)):
            npy, js = encode_sample(ids, entries)
            for name, data in ((f"{n:06d}.npy", npy), (f"{n:06d}.json", js)):
                info, payload = _member(name, data)
                tar.addfile(info, payload)
    return count["docs"], count["tokens"]


# --------------------------------------------------------------------------- reading


def _check_member(shard: str, member: tarfile.TarInfo) -> tuple[str, str]:
    name = member.name
    if not member.isreg():
        raise ShardError(f"shard {shard}: member {name!r} is not a regular file; refusing to read it")
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm != name or "/" in norm or norm.startswith(".."):
        raise ShardError(f"shard {shard}: member name {name!r} escapes the shard's folder; refusing to read it")
    key, dot, ext = name.partition(".")
    if not dot or ext not in ("npy", "json"):
        raise ShardError(f"shard {shard}: unexpected member {name!r} (expected KEY.npy and KEY.json)")
    return key, ext


def _decode(shard: str, key: str, parts: dict[str, bytes]) -> tuple[np.ndarray, list[dict]]:
    missing = {"npy", "json"} - parts.keys()
    if missing:
        raise ShardError(f"shard {shard}: sample {key!r} lacks .{'/.'.join(sorted(missing))} (truncated or corrupt)")
    try:
        ids = np.load(io.BytesIO(parts["npy"]), allow_pickle=False)
        entries = json.loads(parts["json"])["docs"]
        lengths = [int(e["length"]) for e in entries]
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise ShardError(f"shard {shard}: sample {key!r} is corrupt: {e!r}") from e
    if ids.ndim != 1 or ids.dtype not in (np.uint16, np.uint32):
        raise ShardError(f"shard {shard}: sample {key!r} ids are {ids.dtype}{list(ids.shape)}, expected 1-D uint16/32")
    if sum(lengths) != ids.size:
        raise ShardError(f"shard {shard}: sample {key!r} lists {sum(lengths)} ids but holds {ids.size} (corrupt)")
    return ids, entries


def _samples(path: str) -> Iterator[tuple[str, np.ndarray, list[dict]]]:
    """(sample key, ids, entries) of each sample, members checked and paired."""
    with fsspec.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
        key, parts = None, {}
        for member in tar:
            mkey, ext = _check_member(path, member)
            if mkey != key:
                if key is not None:
                    yield key, *_decode(path, key, parts)
                key, parts = mkey, {}
            if ext in parts:
                raise ShardError(f"shard {path}: sample {mkey!r} has two .{ext} members")
            parts[ext] = tar.extractfile(member).read()
        if key is not None:
            yield key, *_decode(path, key, parts)


def iter_shard(path: str, expected_docs: int | None = None) -> Iterator[tuple[str, np.ndarray, dict]]:
    """Yield (key, ids, meta) for each document of the shard at ``path`` (any fsspec URL).

    Never unpickles, rejects members that are not regular files or whose names leave the
    folder, checks that every sample has both .npy and .json and that a document split
    across samples continues where it stopped, and, when ``expected_docs`` is given, raises
    naming the shard if it holds a different number of documents (a shard cut at a sample
    boundary reads without error in tar itself).
    """
    count = 0
    pending: tuple[str, dict, list[np.ndarray], int, int] | None = None  # key, meta, parts, have, size
    try:
        for skey, ids, entries in _samples(path):
            at = 0
            for e in entries:
                part, at = ids[at : at + e["length"]], at + e["length"]
                if e["offset"] == 0:
                    if pending is not None:
                        raise ShardError(f"shard {path}: document {pending[0]!r} stops early in sample {skey!r} "
                                         "(corrupt); rerun `rmat prep` to rebuild it")
                    pending = (e["key"], e["meta"], [part], part.size, e["size"])
                elif pending is None or pending[0] != e["key"] or pending[3] != e["offset"]:
                    raise ShardError(f"shard {path}: sample {skey!r} continues document {e['key']!r} at "
                                     f"{e['offset']}, not where it stopped (corrupt); rerun `rmat prep`")
                else:
                    pending = (pending[0], pending[1], [*pending[2], part], pending[3] + part.size, pending[4])
                if pending[3] == pending[4]:
                    key, meta, parts = pending[:3]
                    yield key, parts[0] if len(parts) == 1 else np.concatenate(parts), meta
                    count += 1
                    pending = None
    except (tarfile.TarError, EOFError) as e:
        raise ShardError(f"shard {path} is truncated or not a tar ({e}); rerun `rmat prep` to rebuild it") from e
    except FileNotFoundError as e:
        raise ShardError(f"shard {path} does not exist; rerun `rmat prep` to rebuild it") from e
    if pending is not None:
        raise ShardError(f"shard {path} ends inside document {pending[0]!r}: it is truncated; "
                         "rerun `rmat prep` to rebuild it")
    if expected_docs is not None and count != expected_docs:
        raise ShardError(
            f"shard {path} holds {count} documents but the manifest says {expected_docs}: "
            "it is truncated or stale; rerun `rmat prep` to rebuild it"
        )


def loss_spans(meta: dict, size: int, where: str) -> np.ndarray | None:
    """A document's ``meta["loss_spans"]`` as an int64 [k, 2] array of (start, end), or None when absent.

    Spans must be sorted, non-empty, disjoint and inside the document's targets
    [0, size + 1); anything else is a ShardError naming ``where`` (shard and key).
    """
    raw = meta.get("loss_spans")
    if raw is None:
        return None
    spans = np.asarray(raw, dtype=np.int64) if isinstance(raw, list) and raw else None
    if spans is None or spans.ndim != 2 or spans.shape[1] != 2:
        raise ShardError(f"{where}: loss_spans must be a non-empty list of [start, end] pairs, got {raw!r}")
    starts, ends = spans[:, 0], spans[:, 1]
    if starts[0] < 0 or ends[-1] > size + 1 or (ends <= starts).any() or (starts[1:] < ends[:-1]).any():
        raise ShardError(f"{where}: loss_spans {raw!r} must be sorted, disjoint, non-empty ranges within "
                         f"[0, {size + 1}) (the document has {size} ids and an EOS); fix the code that wrote them")
    return spans


# --------------------------------------------------------------------------- manifest


def validate_manifest(manifest: object, where: str) -> dict:
    """Check the manifest's schema (see module docstring); raise ShardError naming ``where``."""

    def bad(msg: str) -> ShardError:
        return ShardError(f"manifest of {where} is invalid: {msg}; rerun `rmat prep` to rebuild it")

    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:  # before keys: they change
        raise bad(f"format {manifest.get('format')!r} version {manifest.get('version')!r} is not one this "
                  f"reader knows (it reads {FORMAT!r} version {VERSION})")
    for key, typ in _TOP_KEYS.items():
        if not isinstance(manifest.get(key), typ):
            raise bad(f"key {key!r} missing or not a {typ.__name__}")
    if manifest["dtype"] not in ("uint16", "uint32"):
        raise bad(f"dtype {manifest['dtype']!r}")
    for name in ("bos", "eos", "pad", "unk"):
        if not isinstance(manifest["special_ids"].get(name), int):
            raise bad(f"special_ids.{name} missing")
    for i, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict):
            raise bad(f"shards[{i}] is not an object")
        for key, typ in _SHARD_KEYS.items():
            if not isinstance(shard.get(key), typ):
                raise bad(f"shards[{i}].{key} missing or not a {typ.__name__}")
        if posixpath.isabs(shard["path"]) or ".." in shard["path"].split("/"):
            raise bad(f"shards[{i}].path {shard['path']!r} leaves the folder")
    return manifest


def read_manifest(folder: str) -> dict:
    """Read and validate ``folder/manifest.json`` (folder: a path or fsspec URL)."""
    url = folder.rstrip("/") + "/" + MANIFEST
    try:
        with fsspec.open(url, "rb") as f:
            raw = f.read()
    except FileNotFoundError as e:
        if "bucket" in str(e).lower():  # s3fs: "The specified bucket does not exist"
            raise ShardError(f"cannot read {url}: {e}; check the bucket's name") from e
        raise ShardError(
            f"no manifest.json in {folder}: the shard stage has not finished there; run `rmat prep CONFIG`"
        ) from e
    except PermissionError as e:
        raise ShardError(f"access to {url} was denied ({e}); check the credentials in the environment "
                         "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket's policy") from e
    except (ImportError, ValueError, OSError) as e:  # file system not installed, unknown or unreachable
        raise ShardError(f"cannot read {url}: {e}") from e
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise ShardError(f"manifest of {folder} is not valid JSON ({e}); rerun `rmat prep` to rebuild it") from e
    return validate_manifest(manifest, folder)
