"""A bad training config is a clear error before any process or process group starts."""

from __future__ import annotations

import os
import time

import torch.distributed as dist

from data_prep.byte_shards import write_byte_shards
from pipeline.cli import main
from tests.pipeline.conftest import TINY


def _train(capsys, run_dir: str, *args: str, nproc: int = 2) -> tuple[int, str]:
    start = time.monotonic()
    code = main(["train", TINY, f"run_dir={run_dir}", *args, "--nproc", str(nproc)])
    assert time.monotonic() - start < 10  # refused up front, not after starting workers
    assert not dist.is_initialized()
    assert not os.path.exists(os.path.join(run_dir, "checkpoints"))
    return code, capsys.readouterr().err


def test_unknown_key_is_named(capsys, shards, tmp_path):
    code, err = _train(capsys, str(tmp_path), f"data.shards={shards}", "optim.learning_rate=1e-3")
    assert code == 2 and "optim.learning_rate" in err


def test_zero_stage_4_is_refused(capsys, shards, tmp_path):
    code, err = _train(capsys, str(tmp_path), f"data.shards={shards}", "engine.zero_stage=4")
    assert code == 2 and "engine.zero_stage=4" in err and "0, 1, 2 or 3" in err


def test_an_unknown_shard_order_is_refused_naming_the_choices(capsys, shards, tmp_path):
    code, err = _train(capsys, str(tmp_path), f"data.shards={shards}", "data.shard_order=sorted")
    assert code == 2 and "data.shard_order='sorted'" in err and "as_written" in err


def test_token_warmup_without_token_entries_is_refused(capsys, shards, tmp_path):
    code, err = _train(capsys, str(tmp_path), f"data.shards={shards}", "token_warmup_steps=10",
                       "model.mem_tokens_per_chunk=0")
    assert code == 2 and "token_warmup_steps=10" in err and "model.mem_tokens_per_chunk" in err


def test_batch_not_divisible_by_world_size_is_refused(capsys, shards, tmp_path):
    code, err = _train(capsys, str(tmp_path), f"data.shards={shards}", "data.batch_size=7")
    assert code == 2 and "data.batch_size=7" in err and "2 process(es)" in err


def test_shard_folder_without_manifest_is_refused(capsys, tmp_path):
    code, err = _train(capsys, str(tmp_path / "run"), f"data.shards={tmp_path / 'nothing'}")
    assert code == 2 and "no manifest.json" in err


def test_shard_listed_but_missing_is_refused(capsys, tmp_path):
    missing = "train-000002.tar"
    folder = write_byte_shards(str(tmp_path / "shards"), {"train": (4, 4), "val": (1, 2)}, max_bytes=300)
    os.remove(os.path.join(folder, missing))
    code, err = _train(capsys, str(tmp_path / "run"), f"data.shards={folder}")
    assert code == 2 and "missing" in err and missing in err


def test_fewer_shards_than_ranks_is_refused(capsys, tmp_path):
    folder = write_byte_shards(str(tmp_path / "shards"), {"train": (1, 8), "val": (1, 2)}, max_bytes=300)
    code, err = _train(capsys, str(tmp_path / "run"), f"data.shards={folder}")
    assert code == 2 and "1 train shard(s)" in err and "2 ranks" in err
