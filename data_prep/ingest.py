"""Stage 1, ingest: corpora to normalized, deduplicated documents split into train/val/test.

Output folder ``{out_dir}/ingest-{key}``, key = hash of the sources, the ingest config and
every input's identity (URL, size, mtime), so a changed corpus or config gets a new folder.

- ``units/{source}-{n:05d}.jsonl`` one unit per group of input files (``files_per_unit``):
  the documents, NFC-normalized, each with its sha256 (``doc_hash``) and ``holdout`` flag;
  the unit's sidecar lists its inputs that gave no document.
- ``{split}.jsonl`` for train/val/test: the units' documents in order, one copy of each
  exact duplicate (same doc_hash) kept: the first held-out copy if any, else the first;
  ``{split}.offsets.npy`` byte offsets of the lines.
- ``ingest.json`` written last: counts, bytes, duplicates, sha256 of each split file, and
  warnings (sources or inputs that gave no document).

Splits (``assign_splits``): held-out documents (a source's ``holdout`` patterns) go to test.
The others go by their hash alone, uniform u in [0, 1): val below ``val_fraction``, test
below ``val_fraction + test_fraction``, else train; so a hash-chosen split never changes
as the corpus grows. A domain of at least ``MIN_EVAL_DOMAIN`` documents that this leaves
without val (or test) takes its lowest-u (for test: highest-u) train document into it. Such
a promoted document is the only kind whose split can change as the corpus grows: back to
train once the domain has a hash-chosen member of that split, or a more extreme train
document, at most one per split and domain.
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
VERSION = 2
MIN_EVAL_DOMAIN = 3  # a domain this large gets at least one val and one test document


@dataclass(frozen=True)
class IngestUnit:
    """A picklable unit: read these inputs of one source into one JSONL file."""

    source: dict
    urls: tuple[str, ...]
    encodings: tuple[str, ...]
    turn_marker: str
    min_chars: int
    out: str


@dataclass
class IngestPlan:
    folder: str
    key: str
    units: list[IngestUnit]
    val_fraction: float
    test_fraction: float


def hash_split(doc_hash: str, val_fraction: float, test_fraction: float) -> str:
    """train/val/test from the hash alone (its first 64 bits as u, uniform in [0, 1))."""
    u = int(doc_hash[:16], 16) / 2**64
    if u < val_fraction:
        return "val"
    return "test" if u < val_fraction + test_fraction else "train"


def assign_splits(docs: dict[str, tuple[str, bool]], val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Each document's split from {doc_hash: (domain, held_out)} (the rules in the module docstring)."""
    splits = {h: "test" if held_out else hash_split(h, val_fraction, test_fraction)
              for h, (_, held_out) in docs.items()}
    by_domain: dict[str, list[str]] = {}
    for h, (domain, _) in docs.items():
        by_domain.setdefault(domain, []).append(h)
    for hashes in by_domain.values():
        if len(hashes) < MIN_EVAL_DOMAIN:
            continue
        # hex order of the hash is u's order: val takes the lowest, test the highest, so the two
        # promotions never compete for one document and each moves only for a more extreme one
        train = sorted(h for h in hashes if splits[h] == "train")
        for split, pick in (("val", 0), ("test", -1)):
            if train and not any(splits[h] == split for h in hashes):
                splits[train.pop(pick)] = split
    return splits


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
    return IngestPlan(folder=folder, key=key, units=units, val_fraction=cfg.ingest.val_fraction,
                      test_fraction=cfg.ingest.test_fraction)


def _unit(cfg: PrepConfig, source: SourceConfig, urls: tuple[str, ...], folder: str, n: int) -> IngestUnit:
    return IngestUnit(
        source=asdict(source),
        urls=urls,
        encodings=tuple(cfg.ingest.encodings),
        turn_marker=cfg.ingest.turn_marker,
        min_chars=cfg.ingest.min_chars,
        out=os.path.join(folder, "units", f"{source.name}-{n:05d}.jsonl"),
    )


def ingest_unit(unit: IngestUnit) -> dict:
    """Read the unit's inputs, normalize (NFC), hash, flag held-out ones; write them as one JSONL file."""
    source = SourceConfig(**unit.source)
    docs = nbytes = 0
    empty: list[str] = []
    with atomic_open(unit.out, durable=False) as f:
        for url in unit.urls:
            before = docs
            for raw in read_input(source, url, list(unit.encodings), unit.turn_marker):
                text = unicodedata.normalize("NFC", raw.text)
                if len(text.strip()) < unit.min_chars:
                    continue
                data = text.encode()
                doc_hash = hashlib.sha256(data).hexdigest()
                record = {
                    "doc_hash": doc_hash,
                    "domain": source.domain,
                    "holdout": any(fnmatch.fnmatch(raw.name, pat) for pat in source.holdout),
                    "lang": raw.lang,
                    "name": raw.name,
                    "source": source.name,
                    "text": text,
                }
                f.write(_line(record))
                docs += 1
                nbytes += len(data)
            if docs == before:
                empty.append(url)
    info = {"documents": docs, "bytes": nbytes, "source": source.name, "inputs": len(unit.urls),
            "empty_inputs": empty}
    return mark_done(unit.out, info)


def _line(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, ensure_ascii=False).encode() + b"\n"


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
    manifest = _merge(plan, result.records)
    seconds = result.seconds + time.perf_counter() - start
    return plan, dict(manifest, ran=result.ran, seconds=seconds)


def _winners(plan: IngestPlan) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[str, bool]], int]:
    """Which copy of each distinct document is kept ((unit, line) of the first held-out copy, else
    of the first copy), each document's (domain, held_out), and how many copies are dropped."""
    winner: dict[str, tuple[int, int]] = {}
    docs: dict[str, tuple[str, bool]] = {}
    lines = 0
    for u, unit in enumerate(plan.units):
        with open(unit.out, "rb") as f:
            for i, line in enumerate(f):
                record = json.loads(line)
                h, held_out = record["doc_hash"], record["holdout"]
                lines += 1
                if h not in winner or (held_out and not docs[h][1]):
                    winner[h], docs[h] = (u, i), (record["domain"], held_out)
    return winner, docs, lines - len(winner)


def _warnings(plan: IngestPlan, records: list[dict]) -> list[str]:
    """Sources that gave no document next to ones that did, and inputs that gave none."""
    per_source: dict[str, list[dict]] = {}
    for rec in records:
        per_source.setdefault(rec["source"], []).append(rec)
    out = []
    for name, recs in per_source.items():
        empty = [url for r in recs for url in r["empty_inputs"]]
        if sum(r["documents"] for r in recs) == 0:
            out.append(f"source {name!r} gave no documents ({len(empty)} input(s), e.g. {empty[0]}); "
                       "check its urls, exclude patterns and ingest.min_chars")
        elif empty:
            out.append(f"source {name!r}: {len(empty)} input(s) gave no documents, e.g. {empty[0]}")
    return out


def _empty_corpus(records: list[dict]) -> PrepError:
    empty = [url for r in records for url in r["empty_inputs"]]
    named = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
    return PrepError(
        f"the corpus is empty: sources {sorted({r['source'] for r in records})} gave no documents "
        f"(empty or below ingest.min_chars: {named}); check their urls, exclude patterns and ingest.min_chars"
    )


def _merge(plan: IngestPlan, records: list[dict]) -> dict:
    """Concatenate units into per-split files, one copy per document, splits assigned; manifest last."""
    winner, docs, duplicates = _winners(plan)
    if not docs:
        raise _empty_corpus(records)
    splits = assign_splits(docs, plan.val_fraction, plan.test_fraction)
    stats = {s: {"documents": 0, "bytes": 0} for s in SPLITS}
    domains: dict[str, int] = {}
    paths = {s: os.path.join(plan.folder, f"{s}.jsonl") for s in SPLITS}
    offsets: dict[str, list[int]] = {s: [0] for s in SPLITS}
    with atomic_open(paths["train"]) as tr, atomic_open(paths["val"]) as va, atomic_open(paths["test"]) as te:
        out = {"train": tr, "val": va, "test": te}
        for u, unit in enumerate(plan.units):
            with open(unit.out, "rb") as f:
                for i, line in enumerate(f):
                    record = json.loads(line)
                    if winner[record["doc_hash"]] != (u, i):
                        continue
                    split = record["split"] = splits[record["doc_hash"]]
                    data = _line(record)
                    out[split].write(data)
                    offsets[split].append(offsets[split][-1] + len(data))
                    stats[split]["documents"] += 1
                    stats[split]["bytes"] += len(record["text"].encode())
                    domains[record["domain"]] = domains.get(record["domain"], 0) + 1
    total = len(docs)
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
        "warnings": _warnings(plan, records),
    }
    with atomic_open(os.path.join(plan.folder, MANIFEST)) as f:
        f.write(canonical_json(manifest))
    return manifest
