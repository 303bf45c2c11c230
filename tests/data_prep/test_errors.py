"""Bad input: each failure names the input and what to do, and damages nothing already written."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest
from dataprep_helpers import small_config, tree_bytes

from data_prep.atomic import PrepError, read_done
from data_prep.config import PrepConfig, SourceConfig, TokenizerConfig
from data_prep.prep import run_prep


def quiet(*_args):
    pass


def one_source(tmp_path, source: SourceConfig, **kw) -> PrepConfig:
    return PrepConfig(out_dir=str(tmp_path / "out"), sources=[source], **kw)


def test_a_path_that_matches_nothing_is_named(tmp_path):
    cfg = one_source(tmp_path, SourceConfig(name="t", urls=[f"{tmp_path}/nowhere/*.txt"]))
    with pytest.raises(PrepError, match=r"source 't': '.*nowhere/\*\.txt' matches no readable file.*bootstrap"):
        run_prep(cfg, log=quiet)


def test_an_unknown_url_protocol_is_named(tmp_path):
    cfg = one_source(tmp_path, SourceConfig(name="t", urls=["nosuchproto://bucket/x.txt"]))
    with pytest.raises(PrepError, match="cannot open 'nosuchproto://bucket/x.txt'"):
        run_prep(cfg, log=quiet)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{"text": "ok too"}\n{"text": broken\n')
    cfg = one_source(tmp_path, SourceConfig(name="j", kind="jsonl", urls=[str(tmp_path / "d.jsonl")]))
    with pytest.raises(PrepError, match=r"d\.jsonl:3: malformed JSON"):
        run_prep(cfg, log=quiet)


def test_jsonl_without_the_text_field_says_which_field_to_set(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"body": "ok"}\n')
    cfg = one_source(tmp_path, SourceConfig(name="j", kind="jsonl", urls=[str(tmp_path / "d.jsonl")]))
    with pytest.raises(PrepError, match=r"d\.jsonl:1: no string field 'text' \(keys: \['body'\]\).*text_field"):
        run_prep(cfg, log=quiet)


def test_a_document_in_no_known_encoding_is_named(tmp_path):
    (tmp_path / "good.txt").write_text("fine\n")
    (tmp_path / "bad.txt").write_bytes("na\u00efve".encode("latin-1"))
    cfg = one_source(tmp_path, SourceConfig(name="t", urls=[f"{tmp_path}/*.txt"]))
    with pytest.raises(PrepError, match=r"bad\.txt: not valid utf-8 \(byte 0xef at offset 2\).*ingest\.encodings"):
        run_prep(cfg, log=quiet)


def test_an_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "blank.txt").write_text("   \n\n")
    cfg = one_source(tmp_path, SourceConfig(name="t", urls=[str(tmp_path / "blank.txt")]))
    with pytest.raises(PrepError, match="the corpus is empty: sources \\['t'\\]"):
        run_prep(cfg, log=quiet)


def test_a_vocabulary_larger_than_the_corpus_supports_suggests_a_size(tmp_path):
    (tmp_path / "small.txt").write_text("a tiny corpus with few distinct words\n" * 3)
    cfg = one_source(tmp_path, SourceConfig(name="t", urls=[str(tmp_path / "small.txt")]),
                     tokenizer=TokenizerConfig(vocab_size=5000))
    with pytest.raises(PrepError, match=r"tokenizer\.vocab_size=5000 is larger than the corpus supports.*"
                                        r"set tokenizer\.vocab_size=\d+"):
        run_prep(cfg, log=quiet)


def test_an_output_folder_under_a_file_is_named(corpus, tmp_path):
    (tmp_path / "afile").write_text("x")
    cfg = small_config(corpus, tmp_path / "afile" / "out")
    with pytest.raises(PrepError, match=r"cannot write .*afile/out.*set out_dir="):
        run_prep(cfg, log=quiet)


def test_a_read_only_output_folder_is_named(corpus):
    cfg = small_config(corpus, "/proc/rmat-prep-test")
    with pytest.raises(PrepError, match=r"cannot write /proc/rmat-prep-test.*set out_dir="):
        run_prep(cfg, log=quiet)


def test_a_failing_source_leaves_finished_stage_folders_intact(corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "out")
    run_prep(cfg, log=quiet)
    before = tree_bytes(cfg.out_dir)
    (tmp_path / "bad.jsonl").write_text("not json\n")
    bad = SourceConfig(name="j", kind="jsonl", urls=[str(tmp_path / "bad.jsonl")])
    broken = dataclasses.replace(cfg, sources=[*cfg.sources, bad])
    with pytest.raises(PrepError, match="bad.jsonl:1"):
        run_prep(broken, log=quiet)
    after = tree_bytes(cfg.out_dir)
    assert {k: after[k] for k in before} == before
    assert not [k for k in after if ".tmp-" in k]


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root and mount rights): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_named_and_leaves_no_partial_file(corpus, tiny_disk):
    cfg = small_config(corpus, tiny_disk / "out")
    with pytest.raises(PrepError, match=r"no space left on the device while writing .*tiny/out.*out_dir="):
        run_prep(cfg, log=quiet)
    left = tree_bytes(cfg.out_dir)
    assert not [k for k in left if ".tmp-" in k]
    assert not [k for k in left if k.endswith(".tar") and k + ".done.json" not in left]
    # what was finished before the disk filled is still valid: its sidecars verify
    for name in left:
        if name.endswith(".done.json"):
            assert read_done(os.path.join(cfg.out_dir, name.removesuffix(".done.json"))) is not None
