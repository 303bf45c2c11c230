"""Real token shards for tests and benchmarks: Python stdlib text as byte tokens.

Written per the data-prep contract (manifest.json + WebDataset tars of .npy/.json
samples), with Python's tarfile and numpy, from real text: source files are the
``code`` domain, paragraphs of the license texts the ``documents`` domain.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import sysconfig
import tarfile

import numpy as np

BOS_ID, EOS_ID, VOCAB = 256, 257, 258


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


def write_byte_shards(folder: str, splits: dict[str, tuple[int, int]], max_bytes: int = 1500) -> str:
    """Write ``{split: (shards, docs_per_shard)}`` of real text; returns the folder."""
    os.makedirs(folder, exist_ok=True)
    need = sum(n * per for n, per in splits.values())
    available = stdlib_documents(need, max_bytes)
    if len(available) < need:
        raise ValueError(f"asked for {need} documents; the standard library here gives {len(available)}")
    docs = iter(available)
    manifest = {"splits": {}, "tokenizer_hash": "bytes-v1", "vocab_size": VOCAB, "bos_id": BOS_ID,
                "eos_id": EOS_ID, "dtype": "uint16"}
    for split, (n_shards, per_shard) in splits.items():
        entries = []
        for index in range(n_shards):
            name = f"{split}-{index:06d}.tar"
            path = os.path.join(folder, name)
            tokens = _write_tar(path, [next(docs) for _ in range(per_shard)])
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            entries.append({"name": name, "sha256": digest, "documents": per_shard, "tokens": tokens})
        manifest["splits"][split] = entries
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return folder


def _write_tar(path: str, docs: list[tuple[bytes, str, str]]) -> int:
    tokens = 0
    with tarfile.open(path, "w") as tar:
        for i, (text, domain, source) in enumerate(docs):
            ids = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
            npy = io.BytesIO()
            np.save(npy, ids)
            meta = {"source": source, "domain": domain, "doc_hash": hashlib.sha256(text).hexdigest(),
                    "tokens": len(ids)}
            key = f"{i:08d}"
            _add(tar, f"{key}.npy", npy.getvalue())
            _add(tar, f"{key}.json", json.dumps(meta).encode())
            tokens += len(ids)
    return tokens


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
