"""The text encoder a shard folder was made with, for evaluations that write text of their own."""

from __future__ import annotations

import posixpath
from collections.abc import Callable

import fsspec
import sentencepiece as spm

from data_prep.shards import read_manifest


def shard_encoder(folder: str) -> Callable[[str], list[int]]:
    """``encode(text) -> ids`` with the tokenizer named in ``folder``'s manifest (bytes or SentencePiece)."""
    tokenizer = read_manifest(folder)["tokenizer"]
    if tokenizer["model_type"] == "bytes":
        return lambda text: list(text.encode())
    fs, root = fsspec.core.url_to_fs(folder)
    path = posixpath.normpath(posixpath.join(root, tokenizer["model"]))  # the manifest's path is relative
    try:
        with fs.open(path, "rb") as f:
            proto = f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: the tokenizer named in {folder}/manifest.json is missing; "
                                f"rerun `rmat prep` to rebuild it") from e
    processor = spm.SentencePieceProcessor(model_proto=proto)
    return lambda text: processor.encode(text)
