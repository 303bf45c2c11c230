"""The ``rmat`` command line: dotted overrides stand before or after any option, for every subcommand."""

from __future__ import annotations

import pytest

from tests.pipeline.conftest import TINY, pipeline_yaml, rmat


def test_submit_takes_overrides_after_its_options(tmp_path):
    code, out = rmat("submit", pipeline_yaml(tmp_path), "--cluster", "local", "--dry-run", "train.steps=7")
    assert code == 0 and "train      7 steps into " in out, out


def test_submit_takes_overrides_between_its_options(tmp_path):
    code, out = rmat("submit", pipeline_yaml(tmp_path), "--dry-run", "train.steps=7", "--cluster", "local")
    assert code == 0 and "train      7 steps into " in out, out


def test_prep_takes_overrides_after_its_options(tmp_path):
    code, out = rmat("prep", "configs/data/quickstart.yaml", "--status", f"out_dir={tmp_path}")
    assert code == 0 and f"{tmp_path}/ingest-" in out, out


def test_train_takes_overrides_after_its_options(shards, tmp_path, capsys):
    code, _ = rmat("train", TINY, "--nproc", "2", f"data.shards={shards}", f"run_dir={tmp_path}", "data.batch_size=7")
    assert code == 2 and "data.batch_size=7" in capsys.readouterr().err  # refused for the world size it was given


def test_an_argument_that_is_no_override_is_still_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        rmat("submit", pipeline_yaml(tmp_path), "--dry-run", "stray")
    assert "unrecognized arguments: stray" in capsys.readouterr().err
