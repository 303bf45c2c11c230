"""The typed config of a whole pipeline run: data prep, training, evaluation, and SLURM resources.

A pipeline YAML may name other config files instead of repeating them: ``data:
configs/data/quickstart.yaml`` reads that file as the ``data`` section (and the same for
``train``); keys given in the YAML's own section or in overrides still apply on top.

The pipeline owns these training keys: ``train.data.shards`` (the shard folder data prep
computes), ``train.model.vocab_size`` (the tokenizer's ``data.tokenizer.vocab_size``), the
``train.tracking`` keys ``tracking_uri``, ``experiment``, ``run_name`` and ``parent_run_id`` (its
MLflow store, experiment, name and submission run) and ``train.run_dir``
(``<run_dir>/train-<key>``); see ``pipeline/stages/train.py``; and one data key,
``data.shard.passkey.segment_tokens`` (``train.model.segment_len``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data_prep.config import PrepConfig
from orchestration.array import ArraySettings
from orchestration.resources import Resources
from pipeline.config import ConfigError, _merge, _message, _read_yaml
from pipeline.train.config import TrainConfig

INCLUDED = ("data", "train")  # sections that may be given as the path of their own YAML file
SWEPT = "train."  # a sweep varies training keys only: its points share data prep
SEGMENT_LEN = "train.model.segment_len"


@dataclass
class SlurmConfig:
    """Resources of each stage's jobs, and how data-prep units become array tasks."""

    prep: Resources = field(default_factory=lambda: Resources(time_min=60))  # a data-prep stage's driver job
    units: Resources = field(default_factory=lambda: Resources(time_min=60))  # one array task of prep units
    array: ArraySettings = field(default_factory=ArraySettings)
    # nodes x tasks_per_node training processes; max_requeues: preemptions/time limits it survives
    train: Resources = field(default_factory=lambda: Resources(time_min=120))
    evaluate: Resources = field(default_factory=lambda: Resources(time_min=30))
    export: Resources = field(default_factory=lambda: Resources(time_min=30))


@dataclass
class PasskeyConfig:
    """Passkey retrieval in held-out text (pipeline/train/passkey.py); ``distances: []`` turns it off."""

    distances: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16])  # segments from key to question
    samples: int = 32  # per distance
    split: str = "test"  # the held-out text the key hides in
    seed: int = 0

    def __post_init__(self) -> None:
        if any(d < 0 for d in self.distances):
            raise ValueError(f"passkey.distances={self.distances!r}: distances count segments, >= 0")
        if self.samples < 1:
            raise ValueError(f"passkey.samples={self.samples!r}: must be >= 1")


@dataclass
class EvaluateConfig:
    """The final evaluation of the trained model: each document of each split from an empty memory."""

    splits: list[str] = field(default_factory=lambda: ["val", "test"])
    max_docs: int = 256  # per split, in manifest order
    max_doc_tokens: int = 0  # read each document's segments that begin within this many tokens; 0: all
    batch_size: int = 8  # documents read side by side per process
    bucket_tokens: int = 0  # loss by position, log-spaced buckets in units of this many tokens; 0: segment_len
    passkey: PasskeyConfig = field(default_factory=PasskeyConfig)

    def __post_init__(self) -> None:
        if not self.splits:
            raise ValueError("splits=[]: name at least one split to evaluate")
        for key in ("max_docs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r}: must be >= 1")
        if self.max_doc_tokens < 0:
            raise ValueError(f"max_doc_tokens={self.max_doc_tokens!r}: must be >= 0 (0: whole documents)")
        if self.bucket_tokens < 0:
            raise ValueError(f"bucket_tokens={self.bucket_tokens!r}: must be >= 0")


@dataclass
class PipelineConfig:
    """One run of the pipeline: what it computes and how its jobs are shaped."""

    name: str = "pipeline"
    work_dir: str = "runs/pipelines"  # <work_dir>/<name>: the run's config, job records and logs
    data: PrepConfig = field(default_factory=PrepConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    # A grid of trainings over the same data: dotted training keys -> the values each takes (pipeline/sweep.py).
    sweep: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or os.sep in self.name:
            raise ValueError(f"name={self.name!r}: must be a non-empty folder name")
        for key, values in self.sweep.items():
            if not key.startswith(SWEPT):
                raise ValueError(f"sweep key {key!r}: a sweep varies the training (keys {SWEPT}...); data prep, "
                                 "evaluation and resources are the same for every point")
            if not values or len(set(values)) < len(values):
                raise ValueError(f"sweep key {key!r}: give distinct values, at least one (got {values})")
        if self.data.shard.passkey.per_shard and SEGMENT_LEN in self.sweep:
            raise ValueError(f"sweep key {SEGMENT_LEN!r}: the points share the data, whose passkey samples "
                             "(data.shard.passkey) are laid out for one segment length; sweep it without them")

    @property
    def run_dir(self) -> str:
        return os.path.join(self.work_dir, self.name)


def load_pipeline(path: str | os.PathLike, overrides: Sequence[str] = (), sweeps: Sequence[str] = ()) -> PipelineConfig:
    """The pipeline config from its YAML (with included section files), dotted overrides, and command-line
    sweeps (``key=a,b``: replace the YAML's ``sweep`` values of that key)."""
    layer = _read_yaml(path)
    for section in INCLUDED:
        value = layer.get(section)
        if isinstance(value, str):
            layer[section] = _read_yaml(value)
    merged = _merge(OmegaConf.structured(PipelineConfig), layer, source=str(path))
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form dotted.key=value (e.g. data.workers=2)")
    merged = _merge(merged, OmegaConf.from_dotlist(list(overrides)), source="command line")
    merged = _merge(merged, OmegaConf.create({"sweep": parse_sweeps(sweeps)}), source="--sweep")
    _passkey_segments(merged)
    where = f"{path} with overrides {list(overrides)}" + (f" and sweeps {list(sweeps)}" if sweeps else "")
    return _to_object(merged, where)


def parse_sweeps(args: Sequence[str]) -> dict[str, list[str]]:
    """``["train.model.pool=mean,attn", ...]`` -> ``{"train.model.pool": ["mean", "attn"], ...}``."""
    out = {}
    for arg in args:
        key, _, values = arg.partition("=")
        if not key or not values or "" in values.split(","):
            raise ConfigError(f"--sweep {arg!r}: give key=value,value,... (e.g. --sweep train.model.pool=mean,attn)")
        out[key] = values.split(",")
    return out


def with_overrides(cfg: PipelineConfig, overrides: Sequence[str], source: str) -> PipelineConfig:
    """``cfg`` with dotted overrides applied and checked as the YAML's are; errors name ``source``."""
    merged = _merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(list(overrides)), source=source)
    return _to_object(merged, source)


def _passkey_segments(merged: DictConfig) -> None:
    """A passkey mix counts distances in the training's segments: the pipeline sets them."""
    mix, segment_len = merged.data.shard.passkey, merged.train.model.segment_len
    if not mix.per_shard:
        return
    if mix.segment_tokens and mix.segment_tokens != segment_len:
        raise ConfigError(f"data.shard.passkey.segment_tokens={mix.segment_tokens} differs from "
                          f"train.model.segment_len={segment_len}; leave it out, the pipeline sets it")
    mix.segment_tokens = segment_len


def _to_object(merged: DictConfig, where: str) -> PipelineConfig:
    try:
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {_message(e)}") from e
