"""The training stage: its resolved config and run folder, its job, and when it is complete.

The run folder is ``<pipeline run_dir>/train-<key>``, the key a hash of the resolved
training config but its tracking section; it names the shard folder (itself keyed by
everything that determines the data). Completeness reads only the training's own outputs: final
metrics at ``steps``, and ``trained_on.json``, which the job writes last with the hash
of the manifest it trained on. A deleted shard (a tar) therefore does not make training
incomplete, however its rerun changes file times; a manifest whose hash differs from
the one recorded (data rewritten in place) does.
"""

from __future__ import annotations

import copy
import json
import math
import os
from typing import Optional

from data_prep.atomic import key_of, read_json, write_atomic
from data_prep.shards import ShardError, read_manifest
from orchestration.distributed import DistributedCall
from orchestration.resources import Resources
from pipeline.config import to_dict
from pipeline.lineage import Lineage
from pipeline.pipeline_config import PipelineConfig
from pipeline.stages import Stage
from pipeline.train.config import TrainConfig
from pipeline.train.files import FINAL_METRICS, TIMINGS, manifest_hash

TRAINED_ON = "trained_on.json"
# Until a training measured its own (timings.json): a cold start of torch, DeepSpeed and the process
# group took 15 s on a loaded 2-core node; a checkpoint of a small model, a few seconds.
ASSUMED_STARTUP_S, ASSUMED_CHECKPOINT_S = 60, 20


def train_config(cfg: PipelineConfig, shards: str, lineage: Lineage, point: str = "") -> TrainConfig:
    """``cfg.train`` with the keys the pipeline owns: shard folder, vocabulary, keyed run folder (the output),
    and where and under which name (the pipeline's, and the sweep ``point``'s values) and parent run MLflow
    tracks it."""
    t = copy.deepcopy(cfg.train)
    t.data.shards = shards
    t.model.vocab_size = cfg.data.tokenizer.vocab_size
    t.run_dir = os.path.join(cfg.run_dir, f"train-{training_key(t)}")
    t.tracking.tracking_uri, t.tracking.experiment = lineage.uri, lineage.experiment
    t.tracking.run_name = f"{cfg.name} train" + (f" {point}" if point else "")
    t.tracking.parent_run_id = lineage.parent_run_id
    return t


def training_key(t: TrainConfig) -> str:
    """A hash of what determines the trained model: the config without its run folder and its tracking
    section (where, and under which names, a training is logged changes nothing it computes)."""
    determining = to_dict(t)
    del determining["run_dir"], determining["tracking"]
    return key_of(determining)


def current_manifest_hash(shards: str) -> Optional[str]:
    try:
        return manifest_hash(read_manifest(shards))
    except ShardError:
        return None


def complete(t: TrainConfig) -> bool:
    """Trained to ``t.steps`` on the data whose manifest is in the shard folder now."""
    final = read_json(os.path.join(t.run_dir, FINAL_METRICS))
    trained_on = read_json(os.path.join(t.run_dir, TRAINED_ON))
    if not final or not trained_on or final.get("step", 0) < t.steps:
        return False
    return trained_on.get("manifest_sha256") == current_manifest_hash(t.data.shards)


def run(t: TrainConfig) -> Optional[str]:
    """One rank of the training job (RANK etc. exported); rank 0 returns a summary once complete.

    Training checkpoints and returns on SIGUSR2/SIGTERM; the caller (DistributedCall) then
    sees it incomplete and requeues the job, which resumes from ``checkpoints/latest``.
    """
    from pipeline.train.launch import launch  # torch and DeepSpeed: only where a job trains

    launch(t)
    if os.environ.get("RANK", "0") != "0":
        return None
    final = read_json(os.path.join(t.run_dir, FINAL_METRICS)) or {}
    if final.get("step", 0) < t.steps:
        return None
    record = {"manifest_sha256": current_manifest_hash(t.data.shards), "shards": t.data.shards,
              "step": final["step"]}
    write_atomic(os.path.join(t.run_dir, TRAINED_ON), json.dumps(record, indent=1).encode())
    return f"trained {final['step']} steps, val loss {final.get('val/loss', float('nan')):.4f} ({t.run_dir})"


def time_budget(t: TrainConfig, r: Resources) -> tuple[str, str]:
    """(what each attempt of the job spends besides training, why its time limit cannot work or "").

    SLURM sends the warning ``signal_delay_s`` before the limit; an attempt starts up, trains,
    then checkpoints after the warning. Unless the limit leaves at least as much time to train
    as all of that takes, most of every attempt is overhead, and a start-up slower than usual
    makes attempts that train a step or none and use up ``max_requeues``. The seconds are those
    this training measured on its last attempt (``timings.json``), else generous guesses.
    """
    measured = read_json(os.path.join(t.run_dir, TIMINGS)) or {}
    startup, checkpoint = measured.get("startup_s"), measured.get("checkpoint_s")
    parts = [(startup, ASSUMED_STARTUP_S, "start-up"), (checkpoint, ASSUMED_CHECKPOINT_S, "a checkpoint")]
    seconds = [value if value is not None else guess for value, guess, _ in parts]
    overhead = seconds[0] + r.signal_delay_s + seconds[1]
    words = [f"{what} {s:.0f} s ({'measured' if value is not None else 'assumed'})"
             for (value, _, what), s in zip(parts, seconds, strict=True)]
    budget = (f"time_min {r.time_min} min = {r.time_min * 60} s per attempt, of which {overhead:.0f} s do not "
              f"train: {words[0]} + signal_delay_s {r.signal_delay_s} s + {words[1]}")
    if r.time_min * 60 >= 2 * overhead:
        return budget, ""
    needed = math.ceil(2 * overhead / 60)
    return budget, (f"slurm.train.time_min={r.time_min} leaves too little time to train: {budget}; "
                    f"give slurm.train.time_min >= {needed} (twice that), or a "
                    "smaller slurm.train.signal_delay_s")


def stage(cfg: PipelineConfig, t: TrainConfig) -> Stage:
    """nodes x tasks ranks of ``run`` after the shards, requeued after a preemption until ``complete``."""
    done = complete(t)
    budget, refused = time_budget(t, cfg.slurm.train)
    return Stage("train", DistributedCall(run, (t,), complete, (t,)), (), cfg.slurm.train, ["shards"],
                 complete=done, detail="done" if done else f"{t.steps} steps into {t.run_dir}", output=t.run_dir,
                 time_budget=budget, refused=refused)
