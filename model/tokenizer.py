"""The tokenizer of an exported folder: the SentencePiece model the data was made with, or bytes.

``tokenizer.json`` says which (``type``: ``sentencepiece`` or ``bytes``) and gives the
vocabulary size and the BOS/EOS ids the training loader put around every document.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from model.export_layout import TOKENIZER, TOKENIZER_MODEL
from model.pretrained import ExportedFolderError, read_json_file, verify_folder


@dataclass
class ExportedTokenizer:
    """Text to ids and back, with the ids the model was trained to see around a document."""

    kind: str  # "sentencepiece" or "bytes"
    vocab_size: int
    bos_id: int
    eos_id: int
    processor: Any = None  # sentencepiece.SentencePieceProcessor when kind is "sentencepiece"

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``; a character the vocabulary cannot express is an error naming it."""
        if self.kind == "bytes":
            return list(text.encode("utf-8"))
        ids = self.processor.encode(text)
        unk = self.processor.unk_id()
        if unk in ids:
            pieces = self.processor.encode(text, out_type=str)
            bad = next(p for p, i in zip(pieces, ids, strict=True) if i == unk)
            raise ValueError(f"the prompt holds {bad!r}, which the tokenizer's vocabulary cannot express "
                             "(it was trained without byte fallback); remove or replace it")
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``; BOS/EOS and ids outside the text vocabulary are dropped."""
        if self.kind == "bytes":
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        return self.processor.decode([i for i in ids if i not in (self.bos_id, self.eos_id)])


def load_exported(folder: str) -> ExportedTokenizer:
    """The tokenizer of an exported folder (its sha256s checked first)."""
    verify_folder(folder)
    info = read_json_file(folder, TOKENIZER)
    kind = info.get("type")
    common = {"vocab_size": int(info["vocab_size"]), "bos_id": int(info["bos_id"]), "eos_id": int(info["eos_id"])}
    if kind == "bytes":
        return ExportedTokenizer("bytes", **common)
    if kind != "sentencepiece":
        raise ExportedFolderError(f"{os.path.join(folder, TOKENIZER)}: unknown tokenizer type {kind!r}")
    path = os.path.join(folder, TOKENIZER_MODEL)
    if not os.path.isfile(path):
        raise ExportedFolderError(f"{path}: missing; the folder has no tokenizer, export the run again")
    import sentencepiece as spm

    return ExportedTokenizer("sentencepiece", processor=spm.SentencePieceProcessor(model_file=path), **common)
