"""The evaluate stage: the trained model on each split, per domain and position bucket, and
passkey retrieval at distances counted in segments.

Every document is read from an empty memory (``pipeline.train.evaluate``), with the
fp32 weights of the final checkpoint; the pass keys hide in held-out text
(``pipeline.train.passkey``). The metrics go to the training's MLflow run
first, then the report is written atomically: a report on disk means both are done.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from typing import Optional

from data_prep.atomic import read_json, write_atomic
from orchestration.distributed import DistributedCall
from pipeline.pipeline_config import EvaluateConfig, PipelineConfig
from pipeline.stages import Stage
from pipeline.train.config import TrainConfig
from pipeline.train.files import latest_meta
from pipeline.train.tracking import deliver, tracking_uri

REPORT = "final_eval.json"


def report_path(t: TrainConfig) -> str:
    """The stage's output: a report in the training's run folder."""
    return os.path.join(t.run_dir, REPORT)


def complete(t: TrainConfig, e: EvaluateConfig) -> bool:
    """A report of this evaluation config on the training's final checkpoint exists."""
    report = read_json(report_path(t))
    meta = latest_meta(t.run_dir) if report else None
    return bool(report and meta and report["config"] == asdict(e) and report["checkpoint"] == meta["tag"])


def split_metrics(model, t: TrainConfig, e: EvaluateConfig, split: str) -> dict[str, float]:
    """``{split}/loss``, ``{split}/ppl``, per domain and per position bucket (a collective, on the model's device)."""
    import torch

    from pipeline.train.evaluate import evaluate
    from pipeline.train.loader import open_split, read_documents

    info = open_split(t.data.shards, split)
    docs = read_documents(info, e.max_docs)
    device = next(model.parameters()).device
    metrics = evaluate(model, docs, t.model, e.batch_size, e.bucket_tokens, info.bos_id, info.eos_id,
                       torch.float32, device, max_tokens=e.max_doc_tokens)
    return {f"{split}/{k.removeprefix('val/')}": v for k, v in metrics.items()}


def passkey(model, t: TrainConfig, e: EvaluateConfig) -> dict[str, float]:
    """``{split}/passkey/d<dd>/accuracy`` (``_after_text``, ``_reset``) in the configured held-out split (a
    collective)."""
    from data_prep.encoder import shard_encoder
    from pipeline.train.loader import open_split, read_documents
    from pipeline.train.passkey import passkey_metrics

    p = e.passkey
    if not p.distances:
        return {}
    info = open_split(t.data.shards, p.split)
    docs = [d for d, _, _ in read_documents(info, e.max_docs)]
    metrics = passkey_metrics(model, docs, shard_encoder(t.data.shards), p.distances, p.samples, p.seed,
                              t.model.segment_len, info.bos_id, info.eos_id, with_reset=t.model.has_memory)
    return {f"{p.split}/{k}": v for k, v in metrics.items()}


def run(t: TrainConfig, e: EvaluateConfig) -> Optional[str]:
    """One process of the evaluate job (RANK etc. exported); rank 0 logs, writes the report, returns a summary."""
    # torch only where a job evaluates: `rmat status` reads this module's `complete` and must stay fast
    import torch
    import torch.distributed as dist

    from pipeline.train import checkpoint
    from pipeline.train.engine import job_device, set_threads

    # The cores SLURM gave this task, not one thread per core of the node: other jobs run there too.
    threads = set_threads(0, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    device = job_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    print(f"evaluate: rank {dist.get_rank()} of {dist.get_world_size()}, {threads} thread(s), device {device}",
          flush=True)
    try:
        meta = latest_meta(t.run_dir)
        if meta is None:
            raise FileNotFoundError(f"{t.run_dir}: no checkpoint to evaluate; run the train stage first")
        model = checkpoint.load_model(t.run_dir, meta["tag"]).to(device)
        metrics = passkey(model, t, e)  # first: a segment too short for the sentences fails fast
        metrics |= {k: v for split in e.splits for k, v in split_metrics(model, t, e, split).items()}
        if dist.get_rank() != 0:
            return None
        _log_to_mlflow(t, meta["step"], metrics)
        report = {"checkpoint": meta["tag"], "step": meta["step"], "config": asdict(e), "metrics": metrics}
        write_atomic(report_path(t), json.dumps(report, indent=1).encode())
        return f"{_summary(e, metrics)} ({report_path(t)})"
    finally:
        dist.destroy_process_group()


def _summary(e: EvaluateConfig, metrics: dict[str, float]) -> str:
    parts = [f"{split} loss {metrics[f'{split}/loss']:.4f}" for split in e.splits]
    p = e.passkey
    if p.distances:
        parts.append("passkey " + " ".join(f"d{d} {metrics[f'{p.split}/passkey/d{d:02d}/accuracy']:.2f}"
                                           for d in p.distances))
    return ", ".join(parts)


def _log_to_mlflow(t: TrainConfig, step: int, metrics: dict[str, float]) -> None:
    """The final metrics (``final/<split>/...``) in the training's own MLflow run.

    What the training could not send first (its run created if it never reached MLflow):
    a tracker outage during training delays the metrics, and never leaves the pipeline
    unable to finish. If MLflow still cannot take them, the job fails saying where they wait.
    """
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    run_id = deliver(t.run_dir)
    client, now = MlflowClient(tracking_uri(t.tracking.tracking_uri, t.run_dir)), int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"final/{k}", float(v), now, step) for k, v in metrics.items()])


def stage(cfg: PipelineConfig, t: TrainConfig, trained: bool) -> Stage:
    """Evaluation of training ``t`` once it succeeded; complete only while that training is (``trained``)."""
    e = cfg.evaluate
    done = trained and complete(t, e)
    detail = "done" if done else f"splits {', '.join(e.splits)} into {report_path(t)}"
    return Stage("evaluate", DistributedCall(run, (t, e), complete, (t, e)), (), cfg.slurm.evaluate, ["train"],
                 complete=done, detail=detail, output=report_path(t))
