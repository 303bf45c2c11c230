"""Byte-token shards of real text: data with no tokenizer to train, on every machine.

Token id = byte value, ``BOS_ID`` 256 and ``EOS_ID`` 257 around each document, a
vocabulary of 258. The text is the Python standard library's own (its modules as the
``code`` domain, paragraphs of its license texts as ``documents``), present wherever
Python is. The shards have the format of the shard stage (data_prep/shards.py): tars of
.npy/.json samples and ``manifest.json``, each written atomically, the manifest last.
``rmat quickstart`` trains on them; so do the tests and benchmarks.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig

import numpy as np

from data_prep.atomic import atomic_open, canonical_json, ensure_dir, sha256_file, write_atomic
from data_prep.config import ShardConfig
from data_prep.shards import FORMAT, MANIFEST, VERSION, sample_key, shard_name, validate_manifest, write_shard

BOS_ID, EOS_ID, VOCAB = 256, 257, 258
SAMPLE_TOKENS = ShardConfig.sample_tokens


def stdlib_documents(n_docs: int, max_bytes: int) -> list[tuple[bytes, str, str]]:
    """(text, domain, source) of real files: license paragraphs, then stdlib modules, sorted."""
    lib = sysconfig.get_paths()["stdlib"]
    prose, code = [], []
    for path in sorted(glob.glob(os.path.join(lib, "**", "*.txt"), recursive=True)):
        with open(path, "rb") as f:
            for i, para in enumerate(f.read().split(b"\n\n")):
                if len(para) > 200:
                    prose.append((para[:max_bytes], "documents", f"{path}#{i}"))
    for path in sorted(glob.glob(os.path.join(lib, "*.py"))):
        with open(path, "rb") as f:
            data = f.read(max_bytes)
        if len(data) > 200:
            code.append((data, "code", path))
    # Prose is scarce: one prose document in four, so that every shard holds both domains.
    docs = []
    for i, doc in enumerate(code):
        if i % 3 == 0 and prose:
            docs.append(prose.pop(0))
        docs.append(doc)
    return docs[:n_docs]


def write_byte_shards(folder: str, splits: dict[str, tuple[int, int]], max_bytes: int = 1500,
                      sample_tokens: int = SAMPLE_TOKENS) -> str:
    """Write ``{split: (shards, docs_per_shard)}`` of real text, manifest last; returns the folder."""
    need = sum(n * per for n, per in splits.values())
    available = stdlib_documents(need, max_bytes)
    if len(available) < need:
        raise ValueError(f"asked for {need} documents; the standard library here gives {len(available)}")
    docs = iter(available)
    layout = {split: [[next(docs) for _ in range(per)] for _ in range(n)] for split, (n, per) in splits.items()}
    return write_text_shards(folder, layout, sample_tokens)


def write_text_shards(folder: str, splits: dict[str, list[list[tuple[bytes, str, str]]]],
                      sample_tokens: int = SAMPLE_TOKENS) -> str:
    """Write byte-token shards of given texts, ``{split: [[(text, domain, source), ...] per shard]}``,
    manifest last; returns the folder."""
    samples = {split: [[_sample(*doc) for doc in texts] for texts in per_shard] for split, per_shard in splits.items()}
    # Bytes need no pad/unk/turn tokens; they share eos's id so that the vocabulary stays 258.
    return write_id_shards(folder, samples, VOCAB, BOS_ID, EOS_ID, "bytes-stdlib",
                           {"sha256": "bytes-v1", "model": "", "model_type": "bytes"}, sample_tokens)


def write_id_shards(folder: str, shards_by_split: dict[str, list[list[tuple[str, np.ndarray, dict]]]],
                    vocab_size: int, bos_id: int, eos_id: int, config_hash: str, tokenizer: dict,
                    sample_tokens: int = SAMPLE_TOKENS) -> str:
    """Shards of ready token ids (``{split: [[(key, ids, meta), ...] per shard]}``), manifest last.

    For data made by code rather than a tokenizer (byte text here, synthetic tasks in the
    benchmarks): the same format and manifest the shard stage writes, so the loader reads it.
    """
    ensure_dir(folder)
    shards, totals = [], {}
    for split, per_shard in shards_by_split.items():
        for index, samples in enumerate(per_shard):
            path = os.path.join(folder, shard_name(split, index))
            with atomic_open(path, durable=False) as f:
                n_docs, tokens = write_shard(f, iter(samples), sample_tokens=sample_tokens)
            shards.append({"path": shard_name(split, index), "split": split, "sha256": sha256_file(path),
                           "bytes": os.path.getsize(path), "documents": n_docs, "tokens": tokens})
        mine = [s for s in shards if s["split"] == split]
        totals[split] = {"shards": len(mine), "documents": sum(s["documents"] for s in mine),
                         "tokens": sum(s["tokens"] for s in mine)}
    manifest = {"format": FORMAT, "version": VERSION, "config_hash": config_hash, "dtype": "uint16",
                "sample_tokens": sample_tokens, "vocab_size": vocab_size,
                "special_ids": {"pad": eos_id, "unk": eos_id, "bos": bos_id, "eos": eos_id, "turn": eos_id},
                "loader_adds": ["bos", "eos"], "tokenizer": tokenizer, "shards": shards, "splits": totals}
    validate_manifest(manifest, folder)
    write_atomic(os.path.join(folder, MANIFEST), canonical_json(manifest))
    return folder


def _sample(text: bytes, domain: str, source: str) -> tuple[str, np.ndarray, dict]:
    doc_hash = hashlib.sha256(text).hexdigest()
    ids = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
    return sample_key(doc_hash), ids, {"source": source, "domain": domain, "doc_hash": doc_hash, "tokens": len(ids)}
