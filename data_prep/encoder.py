"""The tokenizer a shard folder was made with: its model file, and text to ids with it."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Optional

import fsspec
import sentencepiece as spm

from data_prep.shards import read_manifest


def tokenizer_model(folder: str) -> Optional[bytes]:
    """The SentencePiece model named in ``folder``'s manifest; None for byte tokens (no model)."""
    tokenizer = read_manifest(folder)["tokenizer"]
    if tokenizer["model_type"] == "bytes":
        return None
    fs, root = fsspec.core.url_to_fs(folder)
    path = posixpath.normpath(posixpath.join(root, tokenizer["model"]))  # the manifest's path is relative
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: the tokenizer named in {folder}/manifest.json is missing; "
                                f"rerun `rmat prep` to rebuild it") from e


def shard_encoder(folder: str) -> Callable[[str], list[int]]:
    """``encode(text) -> ids`` with the tokenizer ``folder``'s shards were made with."""
    proto = tokenizer_model(folder)
    if proto is None:
        return lambda text: list(text.encode())
    processor = spm.SentencePieceProcessor(model_proto=proto)
    return lambda text: processor.encode(text)
