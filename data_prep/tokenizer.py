"""Stage 2, tokenizer: a SentencePiece model trained on a bounded sample of the train split.

Output folder ``{out_dir}/tokenizer-{key}`` (key: tokenizer config + ingest key):
``spm.model``, ``spm.vocab`` (piece<TAB>score per id) and, last, ``tokenizer.json`` with the
model's sha256, vocab size and special token ids.

Options keep text exact: identity normalization, no whitespace stripping, no dummy prefix,
whitespace-only pieces allowed (indentation), byte fallback (nothing is unknown), digits
split. The turn marker is a user-defined symbol (one id). The sample is every k-th
non-empty line of the train split, at most ``input_sentence_size`` lines, so training is
deterministic and bounded however large the corpus is.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict

import sentencepiece as spm

from data_prep.atomic import PrepError, canonical_json, ensure_dir, key_of, sha256_file, write_atomic
from data_prep.config import PrepConfig

MODEL, VOCAB, MANIFEST = "spm.model", "spm.vocab", "tokenizer.json"
VERSION = 1
SPECIAL_IDS = {"unk": 0, "bos": 1, "eos": 2, "pad": 3}


def tokenizer_key(cfg: PrepConfig, ingest_key: str) -> str:
    return key_of({"stage": "tokenizer", "version": VERSION, "tokenizer": asdict(cfg.tokenizer), "ingest": ingest_key})


def tokenizer_folder(cfg: PrepConfig, ingest_key: str) -> str:
    return os.path.join(cfg.out_dir, f"tokenizer-{tokenizer_key(cfg, ingest_key)}")


def tokenizer_done(folder: str) -> dict | None:
    """tokenizer.json if the model file still matches its recorded sha256."""
    try:
        with open(os.path.join(folder, MANIFEST), "rb") as f:
            info = json.loads(f.read())
        return info if sha256_file(os.path.join(folder, MODEL)) == info["sha256"] else None
    except (OSError, ValueError, KeyError):
        return None


def _lines(path: str) -> Iterator[str]:
    with open(path, "rb") as f:
        for raw in f:
            for line in json.loads(raw)["text"].split("\n"):
                if line.strip():
                    yield line


def sample_lines(train_jsonl: str, limit: int) -> list[str]:
    """Every k-th non-empty line of the train split, at most ``limit`` lines (two passes)."""
    total = sum(1 for _ in _lines(train_jsonl))
    step = max(1, math.ceil(total / max(1, limit)))
    return [line for i, line in enumerate(_lines(train_jsonl)) if i % step == 0][:limit]


def run_tokenizer(cfg: PrepConfig, ingest_folder: str, ingest_key: str, force: bool = False) -> tuple[str, dict]:
    """Train (or reuse) the tokenizer; returns its folder and tokenizer.json."""
    folder = tokenizer_folder(cfg, ingest_key)
    done = None if force else tokenizer_done(folder)
    if done is not None:
        return folder, dict(done, ran=0, seconds=0.0)
    ensure_dir(folder)
    start = time.perf_counter()
    lines = sample_lines(os.path.join(ingest_folder, "train.jsonl"), cfg.tokenizer.input_sentence_size)
    if not lines:
        raise PrepError(f"the train split in {ingest_folder} has no text to train a tokenizer on")
    model = _train(cfg, lines)
    write_atomic(os.path.join(folder, MODEL), model)
    processor = spm.SentencePieceProcessor(model_proto=model)
    pieces = range(processor.get_piece_size())
    vocab = "".join(f"{processor.id_to_piece(i)}\t{processor.get_score(i)}\n" for i in pieces)
    write_atomic(os.path.join(folder, VOCAB), vocab.encode())
    info = {
        "format": "rmat-tokenizer",
        "version": VERSION,
        "model": MODEL,
        "sha256": sha256_file(os.path.join(folder, MODEL)),
        "model_type": cfg.tokenizer.model_type,
        "vocab_size": processor.get_piece_size(),
        "special_ids": dict(SPECIAL_IDS, turn=processor.piece_to_id(cfg.ingest.turn_marker)),
        "turn_marker": cfg.ingest.turn_marker,
        "sample_lines": len(lines),
    }
    write_atomic(os.path.join(folder, MANIFEST), canonical_json(info))
    return folder, dict(info, ran=1, seconds=time.perf_counter() - start)


def _train(cfg: PrepConfig, lines: list[str]) -> bytes:
    t = cfg.tokenizer
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=buf,
            model_type=t.model_type,
            vocab_size=t.vocab_size,
            byte_fallback=t.byte_fallback,
            split_digits=t.split_digits,
            character_coverage=t.character_coverage,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            split_by_whitespace=True,
            max_sentence_length=t.max_sentence_length,
            input_sentence_size=len(lines),
            shuffle_input_sentence=False,
            user_defined_symbols=[cfg.ingest.turn_marker, *t.user_defined_symbols],
            unk_id=SPECIAL_IDS["unk"],
            bos_id=SPECIAL_IDS["bos"],
            eos_id=SPECIAL_IDS["eos"],
            pad_id=SPECIAL_IDS["pad"],
            num_threads=t.num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        m = re.search(r"<= (\d+)", str(e))
        if "Vocabulary size" in str(e) or m:
            hint = f"tokenizer.vocab_size={m.group(1)}" if m else "a smaller tokenizer.vocab_size"
            raise PrepError(
                f"tokenizer.vocab_size={t.vocab_size} is larger than the corpus supports ({e}); "
                f"set {hint} or add text to the sources"
            ) from e
        raise PrepError(f"SentencePiece training failed: {e}") from e
    return buf.getvalue()
