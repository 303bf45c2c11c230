"""Stage 3, tokenize+shard: documents to token ids in WebDataset tars, manifest last.

Output folder ``{out_dir}/shards-{key}`` (key: shard config + ingest key + tokenizer key).
Each split's documents are cut, in order, into shards of about ``target_shard_bytes`` of
input; one shard is one unit (``{split}-{index:06d}.tar`` plus its ``.done.json`` sidecar).
With ``shard.passkey.per_shard``, each train shard holds that many passkey samples more,
drawn from its own documents (data_prep/passkey.py), spread among them, their answers as
loss spans.
``manifest.json`` (schema in data_prep/shards.py) is written after every shard verifies.

Debug hook for the kill tests: ``RMAT_PREP_SAMPLE_DELAY=<seconds>`` sleeps after each
sample written, so a SIGKILL can land mid-shard.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from data_prep.atomic import PrepError, atomic_open, canonical_json, ensure_dir, key_of, mark_done
from data_prep.config import PrepConfig
from data_prep.encode import DocumentEncoder
from data_prep.executor import Executor
from data_prep.ingest import SPLITS
from data_prep.passkey import training_documents
from data_prep.shards import FORMAT, MANIFEST, VERSION, dtype_for, sample_key, shard_name, write_shard
from data_prep.units import run_units


@dataclass(frozen=True)
class ShardUnit:
    """A picklable unit: tokenize lines [start, end) bytes of a split file into one shard."""

    split: str
    index: int
    source: str
    start: int
    end: int
    documents: int
    model: str
    dtype: str
    sample_tokens: int
    out: str
    passkey_samples: int = 0  # passkey documents spread among the shard's own (train shards only)
    passkey_segment_tokens: int = 0
    passkey_max_distance: int = 0
    passkey_max_lead: int = 0


@dataclass
class ShardPlan:
    folder: str
    key: str
    units: list[ShardUnit]
    sample_tokens: int


def shard_key(cfg: PrepConfig, ingest_key: str, tok_key: str) -> str:
    return key_of({"stage": "shards", "version": VERSION, "shard": cfg.shard.key_fields(), "ingest": ingest_key,
                   "tokenizer": tok_key})


def shards_folder(cfg: PrepConfig, ingest_key: str, tok_key: str) -> str:
    """Where the shards of this config go: known before the tokenizer is trained."""
    return os.path.join(cfg.out_dir, f"shards-{shard_key(cfg, ingest_key, tok_key)}")


def plan_shards(cfg: PrepConfig, ingest_folder: str, ingest_key: str, tok_folder: str, tok_key: str,
                vocab_size: int) -> ShardPlan:
    """Cut each split into shards by cumulative input bytes."""
    key = shard_key(cfg, ingest_key, tok_key)
    folder = shards_folder(cfg, ingest_key, tok_key)
    dtype = dtype_for(vocab_size).name
    model = os.path.join(tok_folder, "spm.model")
    mix = cfg.shard.passkey
    units = []
    for split in SPLITS:
        offsets = np.load(os.path.join(ingest_folder, f"{split}.offsets.npy"), allow_pickle=False).tolist()
        first, index = 0, 0
        for doc in range(1, len(offsets)):
            if offsets[doc] - offsets[first] >= cfg.shard.target_shard_bytes or doc == len(offsets) - 1:
                units.append(ShardUnit(split=split, index=index, source=os.path.join(ingest_folder, f"{split}.jsonl"),
                                       start=offsets[first], end=offsets[doc], documents=doc - first, model=model,
                                       dtype=dtype, sample_tokens=cfg.shard.sample_tokens,
                                       out=os.path.join(folder, shard_name(split, index)),
                                       passkey_samples=mix.per_shard if split == "train" else 0,
                                       passkey_segment_tokens=mix.segment_tokens,
                                       passkey_max_distance=mix.max_distance,
                                       passkey_max_lead=mix.max_lead))
                first, index = doc, index + 1
    return ShardPlan(folder=folder, key=key, units=units, sample_tokens=cfg.shard.sample_tokens)


@functools.lru_cache(maxsize=2)
def _encoder(model: str) -> DocumentEncoder:
    return DocumentEncoder(model)


def shard_unit(unit: ShardUnit) -> dict:
    """Tokenize one shard's documents and write the tar atomically, then its sidecar."""
    with open(unit.source, "rb") as f:
        f.seek(unit.start)
        records = [json.loads(line) for line in f.read(unit.end - unit.start).splitlines()]
    if len(records) != unit.documents:
        raise PrepError(f"{unit.source} changed since it was planned; rerun `rmat prep` (ingest is rebuilt)")
    encoded = _encoder(unit.model).encode([r["text"] for r in records])
    dtype = np.dtype(unit.dtype)
    delay = float(os.environ.get("RMAT_PREP_SAMPLE_DELAY", "0") or 0)

    passkeys = passkey_documents(unit, [np.array(ids, dtype=np.int64) for ids in encoded], dtype)

    def corpus():
        for i, (record, ids) in enumerate(zip(records, encoded, strict=True)):
            meta = {"doc_hash": record["doc_hash"], "domain": record["domain"], "lang": record["lang"],
                    "source": record["source"], "tokens": len(ids)}
            yield i + 0.5, (sample_key(record["doc_hash"]), np.array(ids, dtype=dtype), meta)
            if delay:
                time.sleep(delay)

    # Passkey samples at even places among the documents, so that the rows reading the shard meet
    # them all along rather than in one burst.
    places = np.linspace(0, len(records), len(passkeys) + 2)[1:-1]
    merged = heapq.merge(corpus(), zip(places.tolist(), passkeys, strict=True), key=lambda placed: placed[0])

    def documents():
        for _, doc in merged:
            yield doc

    with atomic_open(unit.out, durable=False) as f:
        docs, tokens = write_shard(f, documents(), sample_tokens=unit.sample_tokens)
    info = {"split": unit.split, "index": unit.index, "documents": docs, "tokens": tokens,
            "bytes": os.path.getsize(unit.out)}
    return mark_done(unit.out, info)


def passkey_documents(unit: ShardUnit, docs: list[np.ndarray], dtype: np.dtype) -> list[tuple[str, np.ndarray, dict]]:
    """The unit's passkey samples as (key, ids, meta) documents, the answer their loss span.

    Drawn from the shard's own documents with a generator seeded by the shard's name, so a
    rerun writes the same bytes.
    """
    if not unit.passkey_samples:
        return []
    sp = _encoder(unit.model).sp
    rng = np.random.default_rng(list(hashlib.sha256(os.path.basename(unit.out).encode()).digest()[:8]))
    try:
        samples = training_documents(docs, sp.encode, unit.passkey_samples, unit.passkey_segment_tokens,
                                     unit.passkey_max_distance, sp.bos_id(), sp.eos_id(), rng,
                                     max_lead=unit.passkey_max_lead)
    except ValueError as e:
        raise PrepError(f"shard.passkey (segment_tokens={unit.passkey_segment_tokens}): {e}") from e
    out = []
    for ids, spans in samples:
        doc_hash = hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest()
        meta = {"doc_hash": doc_hash, "domain": "documents", "lang": "", "source": "passkey",
                "tokens": len(ids), "loss_spans": spans}
        out.append((sample_key(doc_hash), ids.astype(dtype), meta))
    return out


def build_manifest(plan: ShardPlan, records: list[dict], tok_folder: str, tok_info: dict, vocab_size: int) -> dict:
    """The manifest (schema in data_prep/shards.py) from every shard's completion record."""
    shards, splits = [], {s: {"shards": 0, "documents": 0, "tokens": 0} for s in SPLITS}
    for unit, rec in zip(plan.units, records, strict=True):
        shards.append({"path": shard_name(unit.split, unit.index), "split": unit.split, "sha256": rec["sha256"],
                       "bytes": rec["bytes"], "documents": rec["documents"], "tokens": rec["tokens"]})
        total = splits[unit.split]
        total["shards"] += 1
        total["documents"] += rec["documents"]
        total["tokens"] += rec["tokens"]
    return {
        "format": FORMAT,
        "version": VERSION,
        "config_hash": plan.key,
        "dtype": dtype_for(vocab_size).name,
        "sample_tokens": plan.sample_tokens,
        "vocab_size": vocab_size,
        "special_ids": tok_info["special_ids"],
        "loader_adds": ["bos", "eos"],
        "tokenizer": {"sha256": tok_info["sha256"], "model_type": tok_info["model_type"],
                      "model": os.path.relpath(os.path.join(tok_folder, "spm.model"), plan.folder)},
        "shards": shards,
        "splits": splits,
    }


def run_shards(cfg: PrepConfig, plan: ShardPlan, executor: Executor, tok_folder: str, tok_info: dict,
               force: bool = False) -> dict:
    """Write every missing or invalid shard, then the manifest (only if its bytes change)."""
    ensure_dir(plan.folder)
    result = run_units("tokenize+shard", shard_unit, plan.units, executor, force)
    manifest = build_manifest(plan, result.records, tok_folder, tok_info, tok_info["vocab_size"])
    path = os.path.join(plan.folder, MANIFEST)
    data = canonical_json(manifest)
    if force or _read(path) != data:
        with atomic_open(path) as f:
            f.write(data)
    return dict(manifest, ran=result.ran, seconds=result.seconds)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None
