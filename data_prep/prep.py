"""The data-preparation pipeline: ingest -> tokenizer -> tokenize+shard, and its status.

Each stage is rerunnable: finished units are verified and skipped, ``force`` redoes them.
Stages can run alone (``stage=``) once the stages before them have finished.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from data_prep.atomic import PrepError, ensure_dir, remove_stale_temps
from data_prep.config import PrepConfig
from data_prep.executor import Executor, LocalExecutor
from data_prep.ingest import SPLITS, ingest_done, plan_ingest, run_ingest
from data_prep.tokenize_shard import plan_shards, run_shards, shards_status
from data_prep.tokenizer import run_tokenizer, tokenizer_done, tokenizer_folder, tokenizer_key
from data_prep.units import count_done

STAGES = ("ingest", "tokenizer", "shards")


@dataclass
class PrepResult:
    """Where each stage's output is, and its one-line summary."""

    folders: dict[str, str]
    summaries: dict[str, str]


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
    tok = tokenizer_done(tok_dir)
    if tok is None:
        raise PrepError(f"the tokenizer has not been trained in {tok_dir}; run `rmat prep CONFIG --stage tokenizer`")

    if wants("shards"):
        t0 = time.perf_counter()
        splan = plan_shards(cfg, plan.folder, plan.key, tok_dir, tokenizer_key(cfg, plan.key), tok["vocab_size"])
        remove_stale_temps(splan.folder)
        man = run_shards(cfg, splan, executor, tok_dir, tok, force)
        tokens = sum(s["tokens"] for s in man["splits"].values())
        _summary(result, log, "shards", splan.folder, man["ran"], time.perf_counter() - t0,
                 f"{len(man['shards'])} shards, {sum(s['documents'] for s in man['splits'].values())} documents, "
                 f"{tokens} tokens ({man['dtype']})", tokens, "tokens/s")
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


def prep_status(cfg: PrepConfig) -> str:
    """Per stage: where its folder is, how many units are done, what is missing."""
    lines = []
    plan = plan_ingest(cfg)
    ing = ingest_done(plan.folder)
    units = count_done(plan.units)
    state = "done" if ing else f"{units}/{len(plan.units)} units done, merged splits missing"
    lines.append(f"ingest     {state:<40} {plan.folder}")
    tok_dir = tokenizer_folder(cfg, plan.key)
    tok = tokenizer_done(tok_dir)
    lines.append(f"tokenizer  {'done' if tok else 'missing (spm.model, tokenizer.json)':<40} {tok_dir}")
    if not (ing and tok):
        lines.append("shards     waiting for ingest and tokenizer")
        return "\n".join(lines)
    splan = plan_shards(cfg, plan.folder, plan.key, tok_dir, tokenizer_key(cfg, plan.key), tok["vocab_size"])
    done, has_manifest = shards_status(splan)
    missing = [os.path.basename(u.out) for u in splan.units if not os.path.exists(u.out + ".done.json")]
    state = "done" if done == len(splan.units) and has_manifest else (
        f"{done}/{len(splan.units)} shards done" + ("" if has_manifest else ", manifest missing"))
    lines.append(f"shards     {state:<40} {splan.folder}")
    if missing:
        lines.append("  missing: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return "\n".join(lines)
