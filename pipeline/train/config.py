"""The typed training config and the checks that must pass before any process starts."""

from __future__ import annotations

from dataclasses import dataclass, field

from model import RMATConfig
from pipeline.config import ConfigError

PRECISIONS = ("fp32", "bf16")
SHARD_ORDERS = ("shuffled", "as_written")


@dataclass
class DataConfig:
    """Token shards and how rows read them. ``batch_size`` counts rows over all ranks."""

    shards: str = "data/stdlib-bytes"  # manifest.json + {split}-NNNNNN.tar; rmat quickstart writes this one
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = 8
    tbptt_segments: int = 2
    # A document that fits in a TBPTT window is read within one window, the row idling on padding
    # until the next begins, so the gradient of its last segment reaches the memory its first wrote.
    # Off by default: on passkey it lifted recall 1-2 segments back but lowered it 8 back; on MQAR with
    # a curriculum over distance it let windows of 2 bind at d = 4 in every seed (docs/design.md, section 2).
    whole_short_documents: bool = False
    # Every document ends where a window ends (and one that fits lies within one window), so the
    # gradient of a document's last segment, where a passkey's question or an answer lies, reaches
    # the writes of the window's earlier segments. Costs up to tbptt_segments - 1 padding segments
    # per document; off by default (docs/design.md, section 2).
    align_document_ends: bool = False
    # "shuffled": each rank reads its shards in an order drawn per (seed, epoch); "as_written": in the
    # manifest's order every epoch, for data written as a curriculum (easy documents first).
    shard_order: str = "shuffled"


@dataclass
class OptimConfig:
    """torch AdamW with linear warmup, then cosine decay to ``min_lr_ratio`` of the peak."""

    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping


@dataclass
class EngineConfig:
    """DeepSpeed: ZeRO stage, offload, precision, accumulation, threads."""

    zero_stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    precision: str = "fp32"
    grad_accum: int = 1
    threads_per_proc: int = 0  # 0: the machine's cores divided by the local processes
    peak_tflops: float = 0.0  # per process, for MFU; 0: measure an fp32 matmul at start
    # Recompute each segment's activations in the backward: a TBPTT window then holds one segment's
    # activations whatever its length, for one more forward per segment.
    activation_checkpointing: bool = False


@dataclass
class CheckpointConfig:
    """How often to checkpoint, and how many complete checkpoints to keep."""

    every: int = 100  # steps; 0: only at the end (and on SIGTERM/SIGUSR2)
    keep: int = 2


@dataclass
class EvalConfig:
    """Validation inside training: every document of the val split read from an empty memory."""

    every: int = 100  # steps; 0: only at the end
    max_docs: int = 64  # val documents, each from an empty memory
    max_doc_tokens: int = 0  # read each document's segments that begin within this many tokens; 0: all
    batch_size: int = 8  # rows per rank
    bucket_tokens: int = 0  # loss by position, log-spaced buckets in units of this many tokens; 0: segment_len


@dataclass
class TrackingConfig:
    """MLflow: where, and how the background writer batches and times out."""

    experiment: str = "rmat"
    tracking_uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else sqlite:///<run_dir>/mlflow.db
    run_name: str = ""  # the MLflow run's name; empty: the run folder's name
    parent_run_id: str = ""  # a pipeline's submission run, whose child this run is (rmat submit sets it)
    flush_seconds: float = 2.0
    request_timeout_s: int = 5
    log_every: int = 1


@dataclass
class TrainConfig:
    """Everything ``rmat train`` needs; YAML in configs/train/, dotted overrides on top."""

    model: RMATConfig = field(default_factory=lambda: RMATConfig(
        vocab_size=258, d_model=128, n_layers=2, n_heads=4, segment_len=128, chunk_len=32))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    steps: int = 300
    seed: int = 0
    run_dir: str = "runs/train"
    resume: bool = True  # continue from <run_dir>/checkpoints/latest when it exists
    # A run folder whose latest checkpoint's weights start this training (a fresh optimizer, step 0): one
    # training continues another, e.g. a curriculum's later stage. Empty: random weights from ``seed``.
    init_from: str = ""
    # Steps at the start in which every token of a chunk is written as a memory entry, before the
    # model's mem_tokens_per_chunk choice applies (RMAT.write_every_token; docs/design.md, section 2).
    token_warmup_steps: int = 0

    def __post_init__(self) -> None:
        e = self.engine
        _require(e.zero_stage in (0, 1, 2, 3), "engine.zero_stage", e.zero_stage, "must be 0, 1, 2 or 3")
        _require(e.precision in PRECISIONS, "engine.precision", e.precision, f"choose from {PRECISIONS}")
        _require(not e.offload_optimizer or e.zero_stage >= 2, "engine.offload_optimizer", True,
                 "needs engine.zero_stage 2 or 3")
        _require(not e.offload_params or e.zero_stage == 3, "engine.offload_params", True,
                 "needs engine.zero_stage 3")
        _require(e.grad_accum >= 1, "engine.grad_accum", e.grad_accum, "must be >= 1")
        _require(self.data.batch_size >= 1, "data.batch_size", self.data.batch_size, "must be >= 1")
        _require(self.data.tbptt_segments >= 1, "data.tbptt_segments", self.data.tbptt_segments, "must be >= 1")
        _require(self.data.shard_order in SHARD_ORDERS, "data.shard_order", self.data.shard_order,
                 f"choose from {SHARD_ORDERS}")
        _require(self.steps >= 1, "steps", self.steps, "must be >= 1")
        _require(self.token_warmup_steps >= 0, "token_warmup_steps", self.token_warmup_steps, "must be >= 0")
        _require(not self.token_warmup_steps or (self.model.has_memory and self.model.token_entries > 0),
                 "token_warmup_steps", self.token_warmup_steps,
                 "writes every token as an entry before the choice of model.mem_tokens_per_chunk; set that > 0")
        _require(self.checkpoint.keep >= 1, "checkpoint.keep", self.checkpoint.keep, "must be >= 1")
        _require(self.optim.grad_clip >= 0, "optim.grad_clip", self.optim.grad_clip, "must be >= 0")
        _require(self.checkpoint.every >= 0, "checkpoint.every", self.checkpoint.every, "must be >= 0")
        _require(self.eval.every >= 0, "eval.every", self.eval.every, "must be >= 0")
        _require(self.eval.max_docs >= 1, "eval.max_docs", self.eval.max_docs, "must be >= 1")
        _require(self.eval.batch_size >= 1, "eval.batch_size", self.eval.batch_size, "must be >= 1")
        _require(self.eval.max_doc_tokens >= 0, "eval.max_doc_tokens", self.eval.max_doc_tokens,
                 "must be >= 0 (0: whole documents)")
        _require(self.tracking.log_every >= 1, "tracking.log_every", self.tracking.log_every, "must be >= 1")
        _require(self.tracking.flush_seconds > 0, "tracking.flush_seconds", self.tracking.flush_seconds,
                 "must be > 0")


def check_for_world(cfg: TrainConfig, world_size: int) -> None:
    """The batch must split evenly over processes and accumulation steps."""
    rows_per_step = world_size * cfg.engine.grad_accum
    if cfg.data.batch_size % rows_per_step:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} rows cannot be split over {world_size} "
                          f"process(es) x engine.grad_accum={cfg.engine.grad_accum}; make it a multiple "
                          f"of {rows_per_step}")


def _require(ok: bool, key: str, value: object, what: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r}: {what}")
