"""Stage 1, ingest: corpora to normalized, deduplicated documents split into train/val/test.

Output folder ``{out_dir}/ingest-{key}``, key = hash of the sources, the ingest config and
every input's identity (URL, size, mtime), so a changed corpus or config gets a new folder.

- ``units/{source}-{n:05d}.jsonl`` one unit per group of input files (``files_per_unit``):
  the documents, NFC-normalized, each with its sha256 (``doc_hash``) and split.
- ``{split}.jsonl`` for train/val/test: the units' documents in order, exact duplicates
  (same doc_hash) dropped after the first; ``{split}.offsets.npy`` byte offsets of the lines.
- ``ingest.json`` written last: counts, bytes, duplicates, sha256 of each split file.

A document's split is a function of its hash alone (stable when the corpus grows), except
documents matching a source's ``holdout`` patterns, which always go to test.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
import unicodedata
from dataclasses import asdict, dataclass

import numpy as np

from data_prep.atomic import PrepError, atomic_open, canonical_json, ensure_dir, key_of, mark_done, sha256_file
from data_prep.config import PrepConfig, SourceConfig
from data_prep.executor import Executor
from data_prep.sources import InputRef, list_inputs, read_input
from data_prep.units import run_units

SPLITS = ("train", "val", "test")
MANIFEST = "ingest.json"
VERSION = 1


@dataclass(frozen=True)
class IngestUnit:
    """A picklable unit: read these inputs of one source into one JSONL file."""

    source: dict
    urls: tuple[str, ...]
    encodings: tuple[str, ...]
    turn_marker: str
    val_fraction: float
    test_fraction: float
    min_chars: int
    out: str


@dataclass
class IngestPlan:
    folder: str
    key: str
    units: list[IngestUnit]


def split_of(doc_hash: str, name: str, holdout: list[str], val_fraction: float, test_fraction: float) -> str:
    """train/val/test from the hash (uniform in [0, 1)); holdout patterns force test."""
    if any(fnmatch.fnmatch(name, pat) for pat in holdout):
        return "test"
    u = int(doc_hash[:16], 16) / 2**64
    if u < val_fraction:
        return "val"
    return "test" if u < val_fraction + test_fraction else "train"


def plan_ingest(cfg: PrepConfig) -> IngestPlan:
    """List every input and cut the work into units; the folder key covers config and inputs."""
    if not cfg.sources:
        raise PrepError("the config lists no sources; add sources: [{name, kind, domain, urls}] (see README)")
    inputs: dict[str, list[InputRef]] = {s.name: list_inputs(s) for s in cfg.sources}
    key = key_of(
        {
            "stage": "ingest",
            "version": VERSION,
            "sources": [asdict(s) for s in cfg.sources],
            "ingest": asdict(cfg.ingest),
            "inputs": {name: [asdict(r) for r in refs] for name, refs in inputs.items()},
        }
    )
    folder = os.path.join(cfg.out_dir, f"ingest-{key}")
    units = []
    for source in cfg.sources:
        urls = [r.url for r in inputs[source.name]]
        for n, start in enumerate(range(0, len(urls), source.files_per_unit)):
            units.append(_unit(cfg, source, tuple(urls[start : start + source.files_per_unit]), folder, n))
    return IngestPlan(folder=folder, key=key, units=units)


def _unit(cfg: PrepConfig, source: SourceConfig, urls: tuple[str, ...], folder: str, n: int) -> IngestUnit:
    return IngestUnit(
        source=asdict(source),
        urls=urls,
        encodings=tuple(cfg.ingest.encodings),
        turn_marker=cfg.ingest.turn_marker,
        val_fraction=cfg.ingest.val_fraction,
        test_fraction=cfg.ingest.test_fraction,
        min_chars=cfg.ingest.min_chars,
        out=os.path.join(folder, "units", f"{source.name}-{n:05d}.jsonl"),
    )


def ingest_unit(unit: IngestUnit) -> dict:
    """Read the unit's inputs, normalize (NFC), hash, split; write them as one JSONL file."""
    source = SourceConfig(**unit.source)
    docs = nbytes = 0
    with atomic_open(unit.out, durable=False) as f:
        for url in unit.urls:
            for raw in read_input(source, url, list(unit.encodings), unit.turn_marker):
                text = unicodedata.normalize("NFC", raw.text)
                if len(text.strip()) < unit.min_chars:
                    continue
                data = text.encode()
                doc_hash = hashlib.sha256(data).hexdigest()
                record = {
                    "doc_hash": doc_hash,
                    "domain": source.domain,
                    "lang": raw.lang,
                    "name": raw.name,
                    "source": source.name,
                    "split": split_of(doc_hash, raw.name, source.holdout, unit.val_fraction, unit.test_fraction),
                    "text": text,
                }
                f.write(json.dumps(record, sort_keys=True, ensure_ascii=False).encode() + b"\n")
                docs += 1
                nbytes += len(data)
    info = {"documents": docs, "bytes": nbytes}
    return mark_done(unit.out, info)


def ingest_done(folder: str) -> dict | None:
    """The ingest manifest if the stage finished and its split files still match it."""
    try:
        with open(os.path.join(folder, MANIFEST), "rb") as f:
            manifest = json.loads(f.read())
        for split, entry in manifest["splits"].items():
            if sha256_file(os.path.join(folder, f"{split}.jsonl")) != entry["sha256"]:
                return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_ingest(cfg: PrepConfig, executor: Executor, force: bool = False) -> tuple[IngestPlan, dict]:
    """Run (or finish) the ingest stage; returns its plan and manifest."""
    plan = plan_ingest(cfg)
    ensure_dir(os.path.join(plan.folder, "units"))
    done = None if force else ingest_done(plan.folder)
    if done is not None:
        return plan, dict(done, ran=0, seconds=0.0)
    result = run_units("ingest", ingest_unit, plan.units, executor, force)
    start = time.perf_counter()
    manifest = _merge(plan)
    seconds = result.seconds + time.perf_counter() - start
    return plan, dict(manifest, ran=result.ran, seconds=seconds)


def _merge(plan: IngestPlan) -> dict:
    """Concatenate units into per-split files, dropping exact duplicates; manifest last."""
    seen: set[str] = set()
    stats = {s: {"documents": 0, "bytes": 0} for s in SPLITS}
    domains: dict[str, int] = {}
    duplicates = 0
    paths = {s: os.path.join(plan.folder, f"{s}.jsonl") for s in SPLITS}
    offsets: dict[str, list[int]] = {s: [0] for s in SPLITS}
    with atomic_open(paths["train"]) as tr, atomic_open(paths["val"]) as va, atomic_open(paths["test"]) as te:
        out = {"train": tr, "val": va, "test": te}
        for unit in plan.units:
            with open(unit.out, "rb") as f:
                for line in f:
                    record = json.loads(line)
                    if record["doc_hash"] in seen:
                        duplicates += 1
                        continue
                    seen.add(record["doc_hash"])
                    split = record["split"]
                    out[split].write(line)
                    offsets[split].append(offsets[split][-1] + len(line))
                    stats[split]["documents"] += 1
                    stats[split]["bytes"] += len(record["text"].encode())
                    domains[record["domain"]] = domains.get(record["domain"], 0) + 1
    total = sum(s["documents"] for s in stats.values())
    if total == 0:
        raise PrepError(
            f"the corpus is empty: sources {[u.source['name'] for u in plan.units]} gave no documents; "
            "check their urls, exclude patterns and ingest.min_chars"
        )
    for split in SPLITS:
        with atomic_open(os.path.join(plan.folder, f"{split}.offsets.npy")) as f:
            np.save(f, np.asarray(offsets[split], dtype=np.uint64), allow_pickle=False)
        stats[split]["sha256"] = sha256_file(paths[split])
    manifest = {
        "format": "rmat-ingest",
        "version": VERSION,
        "key": plan.key,
        "splits": stats,
        "documents": total,
        "bytes": sum(s["bytes"] for s in stats.values()),
        "duplicates_dropped": duplicates,
        "domains": dict(sorted(domains.items())),
    }
    with atomic_open(os.path.join(plan.folder, MANIFEST)) as f:
        f.write(canonical_json(manifest))
    return manifest
