"""Reading token shards (the contract of the data-prep stage).

A shard folder holds ``manifest.json`` and WebDataset tars ``{split}-{index:06d}.tar``
with one sample per document: ``{key}.npy`` (token ids, no bos/eos) and ``{key}.json``
(source, domain, doc hash, token count). The manifest lists, per split, every shard's
name, sha256, documents and tokens, plus the tokenizer hash, vocab_size, bos_id,
eos_id and dtype.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator

import numpy as np

MANIFEST = "manifest.json"


def read_manifest(folder: str | os.PathLike) -> dict:
    """The parsed ``manifest.json`` of a shard folder."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; is {folder} a finished shard folder?")
    with open(path) as f:
        return json.load(f)


def iter_shard(path: str | os.PathLike, expected_docs: int) -> Iterator[tuple[str, np.ndarray, dict]]:
    """Yield (key, token ids, metadata) for each document of one tar, in stored order.

    Raises ValueError when the tar does not hold ``expected_docs`` complete documents.
    """
    count = 0
    pending: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            parts = pending.setdefault(key, {})
            parts[ext] = tar.extractfile(member).read()
            if "npy" in parts and "json" in parts:
                del pending[key]
                count += 1
                yield key, np.load(io.BytesIO(parts["npy"]), allow_pickle=False), json.loads(parts["json"])
    if pending or count != expected_docs:
        raise ValueError(f"{path}: {count} complete documents ({len(pending)} incomplete); "
                         f"the manifest says {expected_docs}")
