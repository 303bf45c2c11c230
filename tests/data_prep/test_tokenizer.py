"""Tokenizer: exact round trips of code and dialogue, one id per turn marker, deterministic."""

from __future__ import annotations

import json
import os

import sentencepiece as spm
from dataprep_helpers import small_config

from data_prep.executor import LocalExecutor
from data_prep.ingest import run_ingest
from data_prep.tokenizer import run_tokenizer


def train(corpus, out):
    cfg = small_config(corpus, out)
    plan, _ = run_ingest(cfg, LocalExecutor(1))
    folder, info = run_tokenizer(cfg, plan.folder, plan.key)
    return plan.folder, folder, info


def test_model_vocab_and_hash_are_stored_together(corpus, tmp_path):
    _, folder, info = train(corpus, tmp_path / "out")
    assert sorted(os.listdir(folder)) == ["spm.model", "spm.vocab", "tokenizer.json"]
    with open(os.path.join(folder, "tokenizer.json")) as f:
        assert json.load(f)["sha256"] == info["sha256"]
    with open(os.path.join(folder, "spm.vocab")) as f:
        assert sum(1 for _ in f) == info["vocab_size"] == 600


def test_round_trips_keep_newlines_indentation_and_turns(corpus, tmp_path):
    ingest_folder, folder, info = train(corpus, tmp_path / "out")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "spm.model"))
    docs = []
    for split in ("train", "val", "test"):
        with open(os.path.join(ingest_folder, f"{split}.jsonl")) as f:
            docs += [json.loads(line) for line in f]
    assert {d["domain"] for d in docs} == {"code", "dialogue"}
    for doc in docs:
        assert sp.decode(sp.encode(doc["text"])) == doc["text"]
    dialogue = next(d["text"] for d in docs if d["domain"] == "dialogue")
    assert sp.encode(dialogue).count(info["special_ids"]["turn"]) == dialogue.count("<turn>") > 0


def test_training_is_deterministic(corpus, tmp_path):
    _, _, first = train(corpus, tmp_path / "a")
    _, _, second = train(corpus, tmp_path / "b")
    assert first["sha256"] == second["sha256"]
