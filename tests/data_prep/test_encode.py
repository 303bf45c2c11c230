"""Long documents are encoded in pieces cut after newlines, with exactly the ids of whole-document encoding."""

from __future__ import annotations

import io
import json
import os

import pytest
import sentencepiece as spm
from dataprep_helpers import small_config

from data_prep.dialogue import render_play
from data_prep.encode import DocumentEncoder, cut_after_newlines
from data_prep.executor import LocalExecutor
from data_prep.ingest import run_ingest
from data_prep.tokenizer import run_tokenizer

PROSE = "/usr/share/common-licenses/GPL-3"  # base-files: on every Debian machine


@pytest.fixture
def model(corpus, tmp_path) -> str:
    cfg = small_config(corpus, tmp_path / "out")
    plan, _ = run_ingest(cfg, LocalExecutor(1))
    folder, _ = run_tokenizer(cfg, plan.folder, plan.key)
    return os.path.join(folder, "spm.model")


def documents(corpus) -> dict[str, str]:
    with open(PROSE, encoding="utf-8") as f:
        prose = f.read()
    play = render_play((corpus / "plays" / "macbeth_gut.txt").read_text(), "<turn>")
    code = "".join(p.read_text() for p in sorted((corpus / "code").iterdir()))
    return {"prose": prose, "dialogue": play, "code": code}


def test_pieces_join_back_to_the_text_and_end_after_newlines():
    text = "a\n" * 50 + "tail without newline"
    pieces = cut_after_newlines(text, 7)
    assert "".join(pieces) == text and len(pieces) > 10
    assert all(p.endswith("\n") and len(p) >= 7 for p in pieces[:-1])


def test_documents_of_every_domain_get_the_ids_of_whole_document_encoding(model, corpus):
    docs = documents(corpus)
    encoder = DocumentEncoder(model, piece_chars=64)  # many cuts per document
    assert encoder.cuts
    whole = spm.SentencePieceProcessor(model_file=model).encode(list(docs.values()))
    assert encoder.encode(list(docs.values())) == whole
    assert all(len(text) > 30_000 for text in docs.values())


def test_a_model_with_a_piece_spanning_a_newline_encodes_whole_documents(corpus, tmp_path):
    lines = [line for line in documents(corpus)["dialogue"].split("\n") if line.strip()]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=600,
                                   user_defined_symbols=["\n\n"], byte_fallback=True, minloglevel=2,
                                   normalization_rule_name="identity", add_dummy_prefix=False)
    (tmp_path / "m.model").write_bytes(buf.getvalue())
    encoder = DocumentEncoder(str(tmp_path / "m.model"), piece_chars=16)
    text = "first\n\nsecond paragraph\n\n" * 20
    assert not encoder.cuts
    assert encoder.encode([text]) == [encoder.sp.encode(text)]


def test_shards_hold_the_ids_of_whole_document_encoding(model, corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "out")
    plan, _ = run_ingest(cfg, LocalExecutor(1))
    with open(os.path.join(plan.folder, "train.jsonl")) as f:
        texts = [json.loads(line)["text"] for line in f]
    sp = spm.SentencePieceProcessor(model_file=model)
    assert DocumentEncoder(model).encode(texts) == sp.encode(texts)
