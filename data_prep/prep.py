"""The data-preparation pipeline: ingest -> tokenizer -> tokenize+shard, and its status.

``layout`` says where each stage writes (and plans the shards); ``prep_status`` reads
from those outputs alone whether each stage is complete: ``rmat prep --status`` prints it,
and the pipeline's stage graph decides from it what to submit.

Each stage is rerunnable: finished units are verified and skipped, ``force`` redoes them.
Stages can run alone (``stage=``) once the stages before them have finished.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from data_prep.atomic import PrepError, ensure_dir, read_done, remove_stale_temps
from data_prep.config import PrepConfig
from data_prep.executor import Executor, LocalExecutor
from data_prep.ingest import SPLITS, IngestPlan, ingest_done, plan_ingest, run_ingest
from data_prep.publish import is_published, publish_shards, remote_folder
from data_prep.shards import MANIFEST
from data_prep.tokenize_shard import ShardPlan, plan_shards, run_shards, shards_folder
from data_prep.tokenizer import run_tokenizer, tokenizer_done, tokenizer_folder, tokenizer_key
from data_prep.units import count_done

STAGES = ("ingest", "tokenizer", "shards")


@dataclass
class PrepResult:
    """Where each stage's output is, and its one-line summary."""

    folders: dict[str, str]
    summaries: dict[str, str]
    warnings: list[str] = field(default_factory=list)  # e.g. a source that gave no documents


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def run_prep(cfg: PrepConfig, stage: str | None = None, force: bool = False, executor: Executor | None = None,
             log=print) -> PrepResult:
    """Run every stage (or only ``stage``), skipping finished work; prints a summary per stage."""
    if stage is not None and stage not in STAGES:
        raise PrepError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    executor = executor or LocalExecutor(cfg.workers)
    ensure_dir(cfg.out_dir)
    result = PrepResult(folders={}, summaries={})
    wants = (lambda s: stage is None or stage == s)  # noqa: E731

    t0 = time.perf_counter()
    plan = plan_ingest(cfg)
    remove_stale_temps(plan.folder)
    if wants("ingest"):
        _, ing = run_ingest(cfg, executor, force)
        _summary(result, log, "ingest", plan.folder, ing["ran"], time.perf_counter() - t0,
                 f"{ing['documents']} documents, {_mb(ing['bytes'])}, {ing['duplicates_dropped']} duplicates "
                 f"dropped, " + ", ".join(f"{s} {ing['splits'][s]['documents']}" for s in SPLITS),
                 ing["bytes"] / 1e6, "MB/s")
        for warning in ing.get("warnings", []):
            result.warnings.append(warning)
            log(f"ingest: warning: {warning}")
    elif ingest_done(plan.folder) is None:
        raise PrepError(f"ingest has not finished in {plan.folder}; run `rmat prep CONFIG --stage ingest` first")

    if stage == "ingest":
        return result
    tok_dir = tokenizer_folder(cfg, plan.key)
    remove_stale_temps(tok_dir)
    if wants("tokenizer"):
        t0 = time.perf_counter()
        tok_dir, tok = run_tokenizer(cfg, plan.folder, plan.key, force)
        _summary(result, log, "tokenizer", tok_dir, tok["ran"], time.perf_counter() - t0,
                 f"{tok['model_type']} vocab {tok['vocab_size']}, trained on {tok['sample_lines']} lines, "
                 f"sha256 {tok['sha256'][:12]}", None, "")
    if stage == "tokenizer":
        return result
    where = layout(cfg)
    if where.shards is None:
        raise PrepError(f"the tokenizer has not been trained in {tok_dir}; run `rmat prep CONFIG --stage tokenizer`")

    if wants("shards"):
        t0 = time.perf_counter()
        remove_stale_temps(where.shards.folder)
        man = run_shards(cfg, where.shards, executor, where.tokenizer, where.tokenizer_info, force)
        tokens = sum(s["tokens"] for s in man["splits"].values())
        _summary(result, log, "shards", where.shards.folder, man["ran"], time.perf_counter() - t0,
                 f"{len(man['shards'])} shards, {sum(s['documents'] for s in man['splits'].values())} documents, "
                 f"{tokens} tokens ({man['dtype']})", tokens, "tokens/s")
        if cfg.publish_to:
            t0 = time.perf_counter()
            pub = publish_shards(where.shards.folder, cfg.publish_to)
            _summary(result, log, "publish", pub["url"], pub["uploaded"], time.perf_counter() - t0,
                     f"{pub['uploaded']} shards uploaded, {pub['skipped']} already there", pub["bytes"] / 1e6, "MB/s")
    return result


def _summary(result: PrepResult, log, name: str, folder: str, ran: int, seconds: float, what: str,
             amount: float | None, unit: str) -> None:
    result.folders[name] = folder
    if ran == 0:
        line = f"{name}: done already ({what}) -> {folder}"
    else:
        rate = f", {amount / max(seconds, 1e-9):,.0f} {unit}" if amount is not None else ""
        line = f"{name}: {what}, {seconds:.1f} s{rate} -> {folder}"
    result.summaries[name] = line
    log(line)


@dataclass
class Layout:
    """Where each stage of one config writes; the shard plan once ingest and tokenizer are done."""

    ingest: IngestPlan
    tokenizer: str  # the tokenizer's folder
    tokenizer_info: dict | None  # its tokenizer.json, once trained
    shards_folder: str  # known before the tokenizer is trained
    shards: ShardPlan | None


def layout(cfg: PrepConfig) -> Layout:
    """Every stage's folder, read from the config and the inputs (and the shard plan when it can be made)."""
    ingest = plan_ingest(cfg)
    tok_dir, tok_key = tokenizer_folder(cfg, ingest.key), tokenizer_key(cfg, ingest.key)
    tok = tokenizer_done(tok_dir)
    shards = None
    if tok is not None and ingest_done(ingest.folder) is not None:  # the plan reads ingest's offsets
        shards = plan_shards(cfg, ingest.folder, ingest.key, tok_dir, tok_key, tok["vocab_size"])
    return Layout(ingest, tok_dir, tok, shards_folder(cfg, ingest.key, tok_key), shards)


@dataclass
class StageStatus:
    """One stage's output: its folder, whether it is complete, and what is missing (for people)."""

    name: str
    folder: str
    complete: bool
    detail: str  # "done", or what a run would still do
    missing: list[str] = field(default_factory=list)  # unit outputs still to write


def prep_status(cfg: PrepConfig) -> list[StageStatus]:
    """Per stage, in order: where its output is and whether it is complete, read from the outputs alone."""
    where = layout(cfg)
    ingest = where.ingest
    ingested = ingest_done(ingest.folder) is not None
    todo = len(ingest.units) - count_done(ingest.units)
    statuses = [StageStatus("ingest", ingest.folder, ingested, "done" if ingested else _units(todo, ingest.units)),
                StageStatus("tokenizer", where.tokenizer, where.tokenizer_info is not None,
                            "done" if where.tokenizer_info else "to train")]
    if where.shards is None:
        return [*statuses, StageStatus("shards", where.shards_folder, False,
                                       "units planned once ingest and tokenizer are done")]
    units = where.shards.units
    missing = [os.path.basename(u.out) for u in units if read_done(u.out) is None]
    manifest = os.path.exists(os.path.join(where.shards.folder, MANIFEST))
    complete = not missing and manifest
    detail = "done" if complete else _units(len(missing), units) + ("" if manifest else ", then the manifest")
    if complete and cfg.publish_to:
        url = remote_folder(cfg.publish_to, where.shards.folder)
        complete = is_published(where.shards.folder, url)
        detail = "done" if complete else f"to publish to {url}"
    return [*statuses, StageStatus("shards", where.shards.folder, complete, detail, missing)]


def _units(todo: int, units: list) -> str:
    return f"{todo} of {len(units)} units to run"


def format_status(statuses: list[StageStatus]) -> str:
    """What ``rmat prep --status`` prints: a line per stage, then the shards still missing."""
    lines = [f"{s.name:<10} {s.detail:<48} {s.folder}" for s in statuses]
    missing = statuses[-1].missing
    if missing:
        lines.append("  missing: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return "\n".join(lines)
