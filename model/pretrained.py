"""An exported model folder read back with nothing but torch and safetensors.

The folder (written by ``rmat export``) holds ``model.safetensors``, ``config.json`` (the
``RMATConfig``), ``tokenizer.json`` (+ ``tokenizer.model`` for SentencePiece) and
``export.json``, which lists the sha256 of every other file. Reading checks every listed
file against its hash first, so a truncated or edited file is refused by name before
anything is parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, fields

import torch

from model.config import CHUNK_SUMMARIES, RMATConfig
from model.export_layout import CONFIG, EXPORT, TOKENIZER, WEIGHTS

TIED = "lm_head.weight"  # written once as tok_emb.weight when the embeddings are tied


class ExportedFolderError(ValueError):
    """An exported folder that is incomplete, damaged or not an export at all."""


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json_file(folder: str, name: str) -> dict:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise ExportedFolderError(f"{path}: missing; is {folder} a folder written by `rmat export`?")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportedFolderError(f"{path}: not valid JSON ({e}); export the run again") from e


def verify_folder(folder: str) -> dict:
    """Check every file export.json lists against its sha256; returns export.json."""
    if not os.path.isdir(folder):
        raise ExportedFolderError(f"{folder}: no such folder")
    info = read_json_file(folder, EXPORT)
    for name, digest in sorted(info.get("sha256", {}).items()):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ExportedFolderError(f"{path}: listed in export.json but missing; export the run again")
        if sha256_of(path) != digest:
            raise ExportedFolderError(f"{path}: sha256 does not match export.json (truncated or changed); "
                                      "export the run again")
    for name in (WEIGHTS, CONFIG, TOKENIZER):
        if name not in info.get("sha256", {}):
            raise ExportedFolderError(f"{os.path.join(folder, name)}: missing from the export "
                                      "(export.json does not list it); export the run again")
    return info


def config_from_dict(d: dict) -> RMATConfig:
    """The RMATConfig of config.json; a key this version does not know is an error naming it."""
    known = {f.name for f in fields(RMATConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ExportedFolderError(f"config.json: unknown key(s) {unknown}; exported by a newer rmat?")
    # A key missing from an older folder meant what the defaults of its day meant, whatever they are now.
    return RMATConfig(**{**CHUNK_SUMMARIES, **d})


def config_to_dict(cfg: RMATConfig) -> dict:
    return asdict(cfg)


def load_weights(folder: str, model: torch.nn.Module) -> None:
    """Fill ``model`` from model.safetensors, re-tying the output head to the embeddings."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.path.join(folder, WEIGHTS)
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise ExportedFolderError(f"{path}: cannot be read as safetensors ({e}); export the run again") from e
    target = model.state_dict()
    state = {k: v.to(target[k].dtype) if k in target else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {TIED} if getattr(model.cfg, "tie_embeddings", False) else set()
    if set(missing) - allowed or unexpected:
        raise ExportedFolderError(f"{path}: does not fit config.json (missing {sorted(set(missing) - allowed)}, "
                                  f"unexpected {sorted(unexpected)})")


def from_pretrained(cls: type, folder: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Build ``cls`` (RMAT) from an exported folder, its weights cast to ``dtype``, in eval mode."""
    verify_folder(folder)
    model = cls(config_from_dict(read_json_file(folder, CONFIG))).to(dtype)
    load_weights(folder, model)
    return model.eval()
