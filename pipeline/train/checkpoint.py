"""Checkpoints that a kill at any moment cannot corrupt, and the weights read back out of them.

Layout under ``<run_dir>/checkpoints``: one folder per step (``step_00000100``) with
DeepSpeed's files, one ``rank_NNNNN.pt`` per rank, and, from rank 0, ``config.yaml`` (the
training config that wrote it) and ``meta.json``; and the pointer ``latest``. A rank's
file holds the ``state_dict()`` of each object the trainer names (its step, the loader's
position, the carried memory, the RNG states, the tracker's run id): DeepSpeed keeps
rank 0's client state only, so per-rank state needs a file per rank. The pointer moves
only after every rank has finished writing (barrier), by an atomic rename, so a kill
during a save leaves the previous checkpoint as ``latest``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from typing import Any, Optional, Protocol

import numpy as np
import torch
import torch.distributed as dist
import yaml

from data_prep.atomic import atomic_open, write_atomic
from model import RMAT
from model.config import CHUNK_SUMMARIES
from pipeline.config import ConfigError, load_config, to_dict, to_yaml
from pipeline.train.config import TrainConfig
from pipeline.train.files import checkpoint_root, latest_meta

TAG = re.compile(r"^step_(\d{8})$")
CONFIG = "config.yaml"


class Stateful(Protocol):
    """What a checkpoint holds: anything that gives its state and takes it back."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class RNGStates:
    """Every RNG a step may draw from: python, numpy, torch (and CUDA when present)."""

    def state_dict(self) -> dict:
        states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    def load_state_dict(self, states: dict) -> None:
        random.setstate(states["python"])
        np.random.set_state(states["numpy"])
        torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])


def save(engine, cfg: TrainConfig, step: int, rank: int, world_size: int, state: dict[str, Stateful]) -> str:
    """Save step ``step`` from every rank (collective); returns the checkpoint folder."""
    root, tag = checkpoint_root(cfg.run_dir), f"step_{step:08d}"
    engine.save_checkpoint(root, tag=tag, save_latest=False)
    folder = os.path.join(root, tag)
    os.makedirs(folder, exist_ok=True)
    with atomic_open(os.path.join(folder, f"rank_{rank:05d}.pt")) as f:
        torch.save({name: part.state_dict() for name, part in state.items()}, f)
    dist.barrier()  # every rank's files are in place before the pointer may move
    if rank == 0:
        write_atomic(os.path.join(folder, CONFIG), to_yaml(cfg).encode())
        write_atomic(os.path.join(folder, "meta.json"), json.dumps({"step": step, "world_size": world_size}).encode())
        write_atomic(os.path.join(root, "latest"), tag.encode())
        _prune(root, step, cfg.checkpoint.keep)
    return folder


def _prune(root: str, latest_step: int, keep: int) -> None:
    # Folders past `latest` are a save that was cut short: the run will redo that step and overwrite them.
    steps = sorted(int(m.group(1)) for name in os.listdir(root) if (m := TAG.match(name)))
    done = [s for s in steps if s <= latest_step]
    for s in done[:-keep]:
        shutil.rmtree(os.path.join(root, f"step_{s:08d}"), ignore_errors=True)


def check_world_size(run_dir: str, world_size: int) -> None:
    """Refuse to resume a checkpoint written by a different number of processes."""
    meta = latest_meta(run_dir)
    if meta is not None and meta["world_size"] != world_size:
        raise ConfigError(f"{checkpoint_root(run_dir)}/{meta['tag']} was written by {meta['world_size']} "
                          f"process(es) and this run has {world_size}: the per-rank data streams and memory "
                          f"states cannot be re-split. Resume with --nproc {meta['world_size']} or use a new "
                          "run_dir")


def check_same_model(cfg: TrainConfig) -> None:
    """Refuse to resume a checkpoint of another model: its weights would not fit, or mean something else."""
    meta = latest_meta(cfg.run_dir)
    if meta is None:
        return
    changed = _model_keys_changed(cfg, cfg.run_dir, meta["tag"])
    if changed:
        raise ConfigError(f"{checkpoint_root(cfg.run_dir)}/{meta['tag']} holds another model (model."
                          f"{', model.'.join(changed)} differ); to train this one, give it its own run_dir")


def check_init_from(cfg: TrainConfig) -> None:
    """``init_from`` must name a run with a checkpoint of this very model."""
    meta = latest_meta(cfg.init_from)
    if meta is None:
        raise ConfigError(f"init_from={cfg.init_from!r}: no checkpoint there; train that run first, "
                          "or give the run folder that holds checkpoints/latest")
    changed = _model_keys_changed(cfg, cfg.init_from, meta["tag"])
    if changed:
        raise ConfigError(f"init_from={cfg.init_from!r} holds another model (model.{', model.'.join(changed)} "
                          "differ); set them as that run had them")


def saved_config(root: str, tag: str) -> TrainConfig:
    """The training config that wrote checkpoint ``tag`` under ``root``. A model key its file lacks came
    later, and reads as the checkpoint's model had it (``CHUNK_SUMMARIES``), not as today's default."""
    path = os.path.join(root, tag, CONFIG)
    written = {}
    if os.path.isfile(path):
        with open(path) as f:
            written = (yaml.safe_load(f) or {}).get("model") or {}
    later = [f"model.{k}={json.dumps(v)}" for k, v in CHUNK_SUMMARIES.items() if k not in written]
    return load_config(TrainConfig, path, later)


def _model_keys_changed(cfg: TrainConfig, run_dir: str, tag: str) -> list[str]:
    saved = saved_config(checkpoint_root(run_dir), tag).model
    return sorted(k for k, v in to_dict(cfg.model).items() if to_dict(saved)[k] != v)


def load(engine, run_dir: str, rank: int, world_size: int, state: dict[str, Stateful]) -> bool:
    """Restore the engine and every object of ``state`` from ``latest``; False when there is none."""
    check_world_size(run_dir, world_size)
    meta = latest_meta(run_dir)
    if meta is None:
        return False
    root = checkpoint_root(run_dir)
    path, _ = engine.load_checkpoint(root, tag=meta["tag"])
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load {root}/{meta['tag']}")
    # Our own file: it holds numpy RNG arrays, which weights_only refuses.
    saved = torch.load(os.path.join(root, meta["tag"], f"rank_{rank:05d}.pt"), weights_only=False)
    for name, part in state.items():
        part.load_state_dict(saved[name])
    return True


def load_model(run_dir: str, tag: Optional[str] = None) -> RMAT:
    """A plain RMAT with the fp32 weights of checkpoint ``tag`` (default: ``latest``), whatever ZeRO stage wrote it.

    The checkpoint's own ``config.yaml`` says how the model is shaped and how DeepSpeed laid
    its weights out.
    """
    root = checkpoint_root(run_dir)
    if tag is None:
        meta = latest_meta(run_dir)
        if meta is None:
            raise FileNotFoundError(f"{run_dir}: no checkpoint; train first")
        tag = meta["tag"]
    cfg = saved_config(root, tag)
    model = RMAT(cfg.model)
    model.load_state_dict(_fp32_weights(root, tag, cfg))
    return model


def _fp32_weights(root: str, tag: str, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    if cfg.engine.zero_stage == 0 and cfg.engine.precision == "fp32":
        # No ZeRO partitions: the module's own fp32 weights are whole in the model states file.
        path = os.path.join(root, tag, "mp_rank_00_model_states.pt")
        return torch.load(path, map_location="cpu", weights_only=False)["module"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(root, tag=tag)
