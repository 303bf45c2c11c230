"""Start training: N local processes from one command, or one process of an external launcher.

Under SLURM or torchrun, RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT are already
set and this process is one rank. Otherwise ``launch`` spawns ``nproc`` processes on
this machine with those variables set, forwards SIGTERM/SIGUSR2 to them, and fails
as soon as one of them fails. Every config check runs before any process group starts.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Optional

import torch.multiprocessing as mp

from data_prep.atomic import remove_stale_temps
from pipeline.config import ConfigError
from pipeline.train import checkpoint
from pipeline.train.config import TrainConfig, check_for_world
from pipeline.train.engine import allocated_cpus
from pipeline.train.loader import check_train_data, open_split

DIST_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def preflight(cfg: TrainConfig, world_size: int) -> None:
    """Every check that can fail without a process group: batch split, shards, resumability (world, model).

    Also removes the temporary files a killed run left in ``run_dir``: no rank writes any
    before every rank has joined the process group, which each does after this.
    """
    check_for_world(cfg, world_size)
    info = open_split(cfg.data.shards, cfg.data.train_split)
    check_train_data(info, world_size, cfg.data.batch_size, cfg.model.vocab_size)
    open_split(cfg.data.shards, cfg.data.val_split)
    if cfg.resume:
        checkpoint.check_world_size(cfg.run_dir, world_size)
        checkpoint.check_same_model(cfg)
    if cfg.init_from:
        checkpoint.check_init_from(cfg)
    remove_stale_temps(cfg.run_dir)


def launch(cfg: TrainConfig, nproc: int = 1) -> None:
    """Train with ``nproc`` local processes, or as one rank when a launcher set RANK etc."""
    if all(v in os.environ for v in DIST_VARS):
        world = int(os.environ["WORLD_SIZE"])
        preflight(cfg, world)
        os.environ.setdefault("LOCAL_RANK", "0")
        from pipeline.train.loop import train_process

        train_process(cfg, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        return
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: need at least one process")
    preflight(cfg, nproc)
    threads = cfg.engine.threads_per_proc or allocated_cpus(nproc)
    # Children inherit these before they import torch, so OpenMP starts with the right pool.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(nproc),
                      LOCAL_WORLD_SIZE=str(nproc), OMP_NUM_THREADS=str(threads))
    children: list = []
    # Installed before the children exist so that no signal can kill this parent and orphan them.
    previous = {sig: signal.signal(sig, _forward(children)) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        context = mp.start_processes(_child, args=(cfg, nproc), nprocs=nproc, join=False, start_method="spawn")
        children.extend(context.processes)
        while not context.join():
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for var in (*DIST_VARS, "LOCAL_WORLD_SIZE"):
            os.environ.pop(var, None)


def _child(local_rank: int, cfg: TrainConfig, nproc: int) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank))
    from pipeline.train.loop import train_process

    train_process(cfg, nproc)
    # Everything this process owes is written by now. gloo's worker threads outlive
    # destroy_process_group (DeepSpeed keeps a group referenced), and one that touches Python
    # while the interpreter tears down aborts a finished run ("terminate called without an
    # active exception"), so this process skips the teardown. An exception takes the normal
    # path: the parent reports it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _forward(children: list):
    def handler(signum: int, frame: Optional[object]) -> None:
        for process in children:
            if process.is_alive():
                os.kill(process.pid, signum)
    return handler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
