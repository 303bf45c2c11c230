"""``rmat export``: a training checkpoint as a self-contained folder that needs neither DeepSpeed nor pickle.

The folder holds ``model.safetensors`` (the fp32 weights DeepSpeed's own consolidation
gives for any ZeRO stage, cast to the asked dtype; tied embeddings written once),
``config.json``, the tokenizer the data was made with (``tokenizer.json``, plus
``tokenizer.model`` for SentencePiece), optionally ``segment.onnx`` and ``step.onnx``, and
last ``export.json`` (source run, checkpoint, git commit, data manifest hash, MLflow run
id, sha256 of every other file). Everything is written into a temporary sibling folder
that is renamed to ``--out`` at the end, so ``--out`` never holds half an export.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from typing import Optional

import torch

from data_prep.atomic import canonical_json, read_json, sha256_file, tmp_path
from data_prep.encoder import tokenizer_model
from data_prep.shards import ShardError, read_manifest
from model import RMAT
from model.export_layout import CONFIG, EXPORT, TOKENIZER, TOKENIZER_MODEL, WEIGHTS
from model.onnx_graphs import export_onnx
from model.pretrained import TIED, config_to_dict
from pipeline.train import checkpoint
from pipeline.train.config import TrainConfig
from pipeline.train.loader import manifest_hash
from pipeline.train.tracking import saved_run_id

FORMATS = ("safetensors", "onnx")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExportError(RuntimeError):
    """An export that cannot be made, with a message naming the file and what to do."""


def resolve_tag(run_dir: str, tag: Optional[str]) -> str:
    """``tag``, or the one ``checkpoints/latest`` names; the folder must exist."""
    root = checkpoint.checkpoint_root(run_dir)
    if tag is None:
        meta = checkpoint.latest_meta(run_dir) if os.path.isdir(root) else None
        if meta is None:
            raise ExportError(f"{root}/latest: missing; {run_dir} has no checkpoint (train it first)")
        tag = meta["tag"]
    if not os.path.isfile(os.path.join(root, tag, "meta.json")):
        raise ExportError(f"{root}/{tag}/meta.json: missing; no complete checkpoint {tag!r} in {run_dir}")
    return tag


def required_files(cfg: TrainConfig, world: int) -> list[str]:
    """Glob patterns of the files a consolidation of this checkpoint reads: one per rank and kind."""
    names = [f"rank_{r:05d}.pt" for r in range(world)]
    if cfg.engine.zero_stage == 0 and cfg.engine.precision == "fp32":
        return [*names, "mp_rank_00_model_states.pt"]  # the whole weights, which load_model reads
    # DeepSpeed's consolidation reads every rank's partition (bf16_zero_pp_rank_* from its bf16 optimizer).
    return names + [f"*zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(world)]


def check_rank_files(folder: str, cfg: TrainConfig) -> None:
    """Every file of every rank the consolidation needs must be there; the first missing one is named."""
    with open(os.path.join(folder, "meta.json")) as f:
        world = int(json.load(f)["world_size"])
    for pattern in required_files(cfg, world):
        if not glob.glob(os.path.join(folder, pattern)):
            raise ExportError(f"{os.path.join(folder, pattern.lstrip('*'))}: missing; the checkpoint was written by "
                              f"{world} rank(s) and needs every rank's files (copy it back or export another "
                              "checkpoint)")


def consolidated_model(run_dir: str, tag: str) -> tuple[RMAT, TrainConfig]:
    """The checkpoint's fp32 weights in a plain RMAT, and the training config that wrote it."""
    folder = os.path.join(checkpoint.checkpoint_root(run_dir), tag)
    cfg = checkpoint.saved_config(checkpoint.checkpoint_root(run_dir), tag)
    check_rank_files(folder, cfg)
    return checkpoint.load_model(run_dir, tag), cfg


def weights_to_save(model: RMAT, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state dict in ``dtype``, the tied output head left out (it is the embedding)."""
    state = model.state_dict()
    if model.cfg.tie_embeddings:
        state.pop(TIED)
    return {k: v.detach().to(dtype).contiguous() for k, v in state.items()}


def write_tokenizer(shards: str, folder: str) -> None:
    """tokenizer.json (+ tokenizer.model) of the data's manifest: the ids the model learned."""
    try:
        manifest = read_manifest(shards)
    except ShardError as e:
        raise ExportError(f"data.shards={shards!r}: {e}; the export needs the data's tokenizer") from e
    tok, special = manifest["tokenizer"], manifest["special_ids"]
    info = {"format": "rmat-exported-tokenizer", "vocab_size": int(manifest["vocab_size"]),
            "bos_id": int(special["bos"]), "eos_id": int(special["eos"]), "special_ids": special,
            "sha256_source": tok.get("sha256", "")}
    if tok.get("model_type") == "bytes":
        info["type"] = "bytes"
    else:
        info["type"], info["model"] = "sentencepiece", TOKENIZER_MODEL
        try:
            model = tokenizer_model(shards)
        except OSError as e:
            raise ExportError(f"{shards}: cannot read the tokenizer model the data was made with ({e})") from e
        with open(os.path.join(folder, TOKENIZER_MODEL), "wb") as dst:
            dst.write(model)
    with open(os.path.join(folder, TOKENIZER), "wb") as f:
        f.write(canonical_json(info))


def git_commit() -> str:
    """The commit of this code, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def data_manifest_hash(run_dir: str, shards: str) -> str:
    """The hash training recorded for its data (trained_on.json), else the manifest's now."""
    recorded = read_json(os.path.join(run_dir, "trained_on.json"))
    if recorded and recorded.get("manifest_sha256"):
        return recorded["manifest_sha256"]
    return manifest_hash(read_manifest(shards))


def export_run(run_dir: str, out: str, tag: Optional[str] = None, formats: tuple[str, ...] = ("safetensors",),
               dtype: str = "fp32") -> dict:
    """Export checkpoint ``tag`` (default: latest) of ``run_dir`` into ``out``; returns export.json's content."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or "safetensors" not in formats:
        raise ExportError(f"--format {','.join(formats)}: choose from {FORMATS}; safetensors is always written")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype}: choose from {sorted(DTYPES)}")
    if os.path.exists(out):
        raise ExportError(f"{out}: already exists; choose a new --out or remove it")
    tag = resolve_tag(run_dir, tag)
    model, cfg = consolidated_model(run_dir, tag)
    staging = tmp_path(os.path.abspath(out).rstrip(os.sep))
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        info = _write_folder(model, cfg, run_dir, tag, staging, formats, dtype)
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def _write_folder(model: RMAT, cfg: TrainConfig, run_dir: str, tag: str, folder: str,
                  formats: tuple[str, ...], dtype: str) -> dict:
    from safetensors.torch import save_file

    save_file(weights_to_save(model, DTYPES[dtype]), os.path.join(folder, WEIGHTS), metadata={"format": "pt"})
    with open(os.path.join(folder, CONFIG), "wb") as f:
        f.write(canonical_json(config_to_dict(model.cfg)))
    write_tokenizer(cfg.data.shards, folder)
    if "onnx" in formats:
        export_onnx(model, folder)
    with open(os.path.join(checkpoint.checkpoint_root(run_dir), tag, "meta.json")) as f:
        step = json.load(f)["step"]
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o644)  # safetensors writes 0600: the folder is meant to be shared
    info = {"format": "rmat-export", "version": 1, "source_run": os.path.abspath(run_dir), "checkpoint": tag,
            "step": step, "git_commit": git_commit(),
            "data_manifest_sha256": data_manifest_hash(run_dir, cfg.data.shards),
            "mlflow_run_id": saved_run_id(run_dir), "dtype": dtype, "formats": list(formats),
            "sha256": {name: sha256_file(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}}
    with open(os.path.join(folder, EXPORT), "wb") as f:
        f.write(canonical_json(info))
    return info
