"""Checkpoints that a kill at any moment cannot corrupt.

Layout under ``<run_dir>/checkpoints``: one folder per step (``step_00000100``) with
DeepSpeed's files, one ``rank_NNNNN.pt`` per rank (loader position, memory state, RNG
states, step, MLflow run id) and ``meta.json``; and the pointer ``latest``. The pointer
moves only after every rank has finished writing (barrier), by an atomic rename, so a
kill during a save leaves the previous checkpoint as ``latest``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from data_prep.atomic import atomic_open, write_atomic
from pipeline.config import ConfigError

TAG = re.compile(r"^step_(\d{8})$")


def checkpoint_root(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def rng_states() -> dict:
    """Every RNG a step may draw from: python, numpy, torch (and CUDA when present)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(engine, run_dir: str, step: int, rank: int, world_size: int, rank_state: dict, keep: int) -> str:
    """Save step ``step`` from every rank (collective); returns the checkpoint folder."""
    root, tag = checkpoint_root(run_dir), f"step_{step:08d}"
    engine.save_checkpoint(root, tag=tag, save_latest=False)
    folder = os.path.join(root, tag)
    os.makedirs(folder, exist_ok=True)
    with atomic_open(os.path.join(folder, f"rank_{rank:05d}.pt")) as f:
        torch.save(rank_state, f)
    dist.barrier()  # every rank's files are in place before the pointer may move
    if rank == 0:
        write_atomic(os.path.join(folder, "meta.json"), json.dumps({"step": step, "world_size": world_size}).encode())
        write_atomic(os.path.join(root, "latest"), tag.encode())
        _prune(root, step, keep)
    return folder


def _prune(root: str, latest_step: int, keep: int) -> None:
    # Folders past `latest` are a save that was cut short: the run will redo that step and overwrite them.
    steps = sorted(int(m.group(1)) for name in os.listdir(root) if (m := TAG.match(name)))
    done = [s for s in steps if s <= latest_step]
    for s in done[:-keep]:
        shutil.rmtree(os.path.join(root, f"step_{s:08d}"), ignore_errors=True)


def latest_meta(run_dir: str) -> Optional[dict]:
    """``{"step", "world_size", "tag"}`` of the checkpoint ``latest`` names, or None."""
    root = checkpoint_root(run_dir)
    pointer = os.path.join(root, "latest")
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        tag = f.read().strip()
    with open(os.path.join(root, tag, "meta.json")) as f:
        return {**json.load(f), "tag": tag}


def check_world_size(run_dir: str, world_size: int) -> None:
    """Refuse to resume a checkpoint written by a different number of processes."""
    meta = latest_meta(run_dir)
    if meta is not None and meta["world_size"] != world_size:
        raise ConfigError(f"{checkpoint_root(run_dir)}/{meta['tag']} was written by {meta['world_size']} "
                          f"process(es) and this run has {world_size}: the per-rank data streams and memory "
                          f"states cannot be re-split. Resume with --nproc {meta['world_size']} or use a new "
                          "run_dir")


def load(engine, run_dir: str, rank: int, world_size: int) -> Optional[dict]:
    """Restore the engine from ``latest`` and return this rank's state, or None when there is none."""
    check_world_size(run_dir, world_size)
    meta = latest_meta(run_dir)
    if meta is None:
        return None
    root = checkpoint_root(run_dir)
    path, _ = engine.load_checkpoint(root, tag=meta["tag"])
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load {root}/{meta['tag']}")
    # Our own file: it holds numpy RNG arrays, which weights_only refuses.
    return torch.load(os.path.join(root, meta["tag"], f"rank_{rank:05d}.pt"), weights_only=False)
