"""Configured locations: a URL that is not a local folder is an error naming the key, never a local path."""

from __future__ import annotations

import pytest

from data_prep.config import PrepConfig
from data_prep.shards import ShardError, read_manifest
from pipeline.cli import main

SOURCES = "sources: [{name: t, urls: ['/nonexistent/*.txt']}]\n"


def prep_with_out_dir(tmp_path, out_dir: str, capsys) -> str:
    """Run `rmat prep` from ``tmp_path`` (where a wrongly local "s3:" folder would appear); its stderr."""
    cfg = tmp_path / "prep.yaml"
    cfg.write_text(f"out_dir: {out_dir!r}\n{SOURCES}")
    assert main(["prep", str(cfg)]) == 2  # a config error
    return capsys.readouterr().err


def test_an_out_dir_whose_file_system_is_not_installed_is_an_error_naming_key_and_url(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = prep_with_out_dir(tmp_path, "gcs://bucket/prep", capsys)  # gcsfs is not a dependency
    assert "out_dir='gcs://bucket/prep'" in err and "not installed" in err
    assert not (tmp_path / "gcs:").exists()


def test_a_url_with_a_lost_slash_is_not_taken_as_a_relative_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = prep_with_out_dir(tmp_path, "s3:/bucket/prep", capsys)
    assert "out_dir='s3:/bucket/prep' looks like a URL with a missing slash" in err
    assert not (tmp_path / "s3:").exists()


def test_an_s3_out_dir_is_refused_not_written_as_a_local_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = prep_with_out_dir(tmp_path, "s3://bucket/prep", capsys)
    assert "out_dir='s3://bucket/prep': data prep writes its stages to a local folder" in err
    assert not (tmp_path / "s3:").exists()


def test_a_file_url_out_dir_is_the_local_folder(tmp_path):
    assert PrepConfig(out_dir=f"file://{tmp_path}/prep").out_dir == f"{tmp_path}/prep"


def test_shards_at_a_url_whose_file_system_is_missing_are_a_shard_error_naming_it():
    with pytest.raises(ShardError, match=r"cannot read gcs://bucket/shards/manifest.json: .*install"):
        read_manifest("gcs://bucket/shards")
