"""The DeepSpeed engine, built from the typed config (never from a hand-written JSON)."""

from __future__ import annotations

import math
import os
import time
import warnings

import torch
from torch import nn

from pipeline.train.config import TrainConfig


def ds_config(cfg: TrainConfig, world_size: int) -> dict:
    """The DeepSpeed config dict that ``cfg`` means on ``world_size`` processes."""
    e = cfg.engine
    zero: dict = {"stage": e.zero_stage}
    if e.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if e.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    return {
        "train_batch_size": cfg.data.batch_size,
        "train_micro_batch_size_per_gpu": cfg.data.batch_size // (world_size * e.grad_accum),
        "gradient_accumulation_steps": e.grad_accum,
        # DeepSpeed clips at 1.0 unless told otherwise: always say what we mean.
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": e.precision == "bf16"},
        # The client torch AdamW resumes bit for bit and needs no compiled op.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``optim.min_lr_ratio`` of the peak at ``steps``."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps))
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# The launcher of a job's tasks (orchestration.launcher.CPUS_ENV) says how many cores each was given.
JOB_CPUS_ENV = "RMAT_CPUS_PER_TASK"


def allocated_cpus(local_procs: int) -> int:
    """The cores this process may use: its job's cpus per task (SLURM's, else its launcher's), else its share.

    SLURM without a CPU-binding task plugin leaves every core in a task's affinity mask, and
    torch would start one thread per core: on a shared node, threads fighting over cores
    made a segment's forward 30-150 times slower than one thread on its own core.
    """
    for var in ("SLURM_CPUS_PER_TASK", JOB_CPUS_ENV):
        if os.environ.get(var):
            return max(1, int(os.environ[var]))
    return max(1, len(os.sched_getaffinity(0)) // local_procs)


def set_threads(threads: int, local_procs: int) -> int:
    """``threads`` per process, or (0) the cores allocated to it: local processes never oversubscribe them."""
    n = threads or allocated_cpus(local_procs)
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return n


def job_device() -> torch.device:
    """This process's GPU (by LOCAL_RANK) when the job has any, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed() -> str:
    """Join the process group from RANK/WORLD_SIZE/MASTER_* : NCCL on GPU, gloo on CPU."""
    on_gpu = torch.cuda.is_available()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if on_gpu else "cpu")
    import deepspeed

    _skip_shm_compile()
    backend = "nccl" if on_gpu else "gloo"
    deepspeed.init_distributed(dist_backend=backend, verbose=False)
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return backend


def _skip_shm_compile() -> None:
    # init_distributed JIT-compiles a shared-memory op gloo never uses (45-170 s). The
    # switch is private to DeepSpeed, so a missing one only costs time, never the run.
    try:
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    except (ImportError, AttributeError, TypeError, KeyError) as e:
        warnings.warn(f"could not switch off DeepSpeed's shm op build ({e}); start-up may be slow", stacklevel=2)


def build_engine(cfg: TrainConfig, model: nn.Module, world_size: int):
    """(engine, optimizer, scheduler): a client torch AdamW and warmup+cosine LambdaLR under DeepSpeed."""
    import deepspeed

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    o = cfg.optim
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config(cfg, world_size))
    return engine, optimizer, scheduler


def state_dtype(cfg: TrainConfig) -> torch.dtype:
    """The dtype of the carried memory: DeepSpeed casts no state into a bf16 engine."""
    return torch.bfloat16 if cfg.engine.precision == "bf16" else torch.float32


def measure_peak_tflops(device: torch.device, seconds: float = 0.3) -> float:
    """This process's fp32 matmul throughput (TFLOP/s) on ``device``: the denominator of MFU."""
    n = 1024 if device.type == "cuda" else 512
    # Its own generator: drawing from the global one would shift the RNG stream a resume restores.
    gen = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, generator=gen) for _ in range(2))
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12
