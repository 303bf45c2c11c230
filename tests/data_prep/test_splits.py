"""Splits: held-out text stays held out, every domain is evaluated, splits stay put as the corpus grows."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from data_prep.atomic import PrepError
from data_prep.config import IngestConfig, PrepConfig, SourceConfig
from data_prep.executor import LocalExecutor
from data_prep.ingest import assign_splits, hash_split, run_ingest
from data_prep.prep import run_prep


def ingest(tmp_path, *sources, **ingest_kw) -> tuple[dict, list[dict]]:
    cfg = PrepConfig(out_dir=str(tmp_path / "out"), sources=list(sources), ingest=IngestConfig(**ingest_kw))
    plan, manifest = run_ingest(cfg, LocalExecutor(1))
    docs = []
    for split in ("train", "val", "test"):
        with open(os.path.join(plan.folder, f"{split}.jsonl")) as f:
            docs += [json.loads(line) for line in f]
    return manifest, docs


def doc_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_held_out_document_goes_to_test_even_when_a_copy_appears_elsewhere_first(tmp_path):
    (tmp_path / "a_train").mkdir()
    (tmp_path / "b_held").mkdir()
    for i in range(30):  # the same lines in both corpora; the training corpus is read first
        (tmp_path / "a_train" / f"{i}.txt").write_text(f"shared line {i}\n")
        (tmp_path / "b_held" / f"{i}.txt").write_text(f"shared line {i}\n")
    manifest, docs = ingest(tmp_path, SourceConfig(name="a", urls=[f"{tmp_path}/a_train/*.txt"]),
                            SourceConfig(name="b", urls=[f"{tmp_path}/b_held/*.txt"], holdout=["*"]))
    assert len(docs) == 30 and manifest["duplicates_dropped"] == 30
    assert all(d["split"] == "test" and d["source"] == "b" for d in docs)


def test_every_domain_of_three_documents_gets_val_and_test_however_small_the_fractions(tmp_path):
    for domain in ("documents", "code"):
        (tmp_path / domain).mkdir()
        for i in range(3):
            (tmp_path / domain / f"{i}.txt").write_text(f"{domain} {i}\n")
    sources = [SourceConfig(name=d, domain=d, urls=[f"{tmp_path}/{d}/*.txt"]) for d in ("documents", "code")]
    _, docs = ingest(tmp_path, *sources, val_fraction=0.001, test_fraction=0.001)
    for domain in ("documents", "code"):
        assert sorted(d["split"] for d in docs if d["domain"] == domain) == ["test", "train", "val"]


def test_a_domain_of_two_documents_stays_in_train():
    docs = {doc_hash(f"x{i}"): ("code", False) for i in range(2)}
    assert set(assign_splits(docs, 0.0, 0.0).values()) == {"train"}


def test_held_out_documents_count_as_the_domains_test_documents():
    docs = {doc_hash(f"x{i}"): ("code", i == 0) for i in range(5)}
    splits = assign_splits(docs, 0.0, 0.0)
    assert sorted(splits.values()) == ["test", "train", "train", "train", "val"]
    assert splits[doc_hash("x0")] == "test"


def test_hash_chosen_splits_never_change_and_at_most_one_promoted_document_per_split_moves_as_a_domain_grows():
    fractions = (0.05, 0.05)
    before: dict[str, str] = {}
    for n in range(1, 120):  # the corpus grows one document at a time
        docs = {doc_hash(f"book {i}"): ("documents", False) for i in range(n)}
        splits = assign_splits(docs, *fractions)
        if n >= 3:
            assert {"val", "test"} <= set(splits.values()), n
        moved = [h for h in before if splits[h] != before[h]]
        assert all(hash_split(h, *fractions) == "train" for h in moved)  # only promoted documents move
        assert all(len([h for h in moved if before[h] == s]) <= 1 for s in ("val", "test"))
        assert all(splits[h] == hash_split(h, *fractions) for h in docs if hash_split(h, *fractions) != "train")
        before = splits
    assert set(before.values()) == {"train", "val", "test"}


def test_an_empty_input_file_is_named_when_the_corpus_is_empty(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    source = SourceConfig(name="t", urls=[str(tmp_path / "empty.txt")])
    cfg = PrepConfig(out_dir=str(tmp_path / "out"), sources=[source])
    with pytest.raises(PrepError, match=r"the corpus is empty.*empty\.txt"):
        run_prep(cfg, log=lambda *_: None)


def test_a_source_with_no_documents_next_to_good_ones_is_a_warning_in_the_report(tmp_path):
    (tmp_path / "good.txt").write_text("some text\n")
    (tmp_path / "blank.txt").write_text("   \n")
    sources = [SourceConfig(name=n, urls=[str(tmp_path / f"{n}.txt")]) for n in ("good", "blank")]
    cfg = PrepConfig(out_dir=str(tmp_path / "out"), sources=sources)
    lines: list[str] = []
    result = run_prep(cfg, stage="ingest", log=lines.append)
    assert any(w.startswith("source 'blank' gave no documents") and "blank.txt" in w for w in result.warnings)
    assert any(line.startswith("ingest: warning: source 'blank' gave no documents") for line in lines)
