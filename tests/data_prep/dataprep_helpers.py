"""Helpers of the data_prep tests (a uniquely named module: tests/ folders are not packages)."""

from __future__ import annotations

import os

from data_prep.config import IngestConfig, PrepConfig, ShardConfig, SourceConfig, TokenizerConfig


def small_config(corpus, out_dir, **shard) -> PrepConfig:
    """Three sources over ``corpus``, a small BPE vocabulary, shards of ~20 kB of text."""
    return PrepConfig(
        out_dir=str(out_dir),
        workers=1,
        sources=[
            SourceConfig(name="code", kind="code", domain="code", urls=[f"{corpus}/code"], files_per_unit=4),
            SourceConfig(name="plays", kind="dialogue", domain="dialogue", urls=[f"{corpus}/plays/*.txt"],
                         holdout=["*macbeth*"]),
        ],
        ingest=IngestConfig(val_fraction=0.1, test_fraction=0.1),
        tokenizer=TokenizerConfig(vocab_size=600, num_threads=1),
        shard=ShardConfig(**{"target_shard_bytes": 20_000, **shard}),
    )


def tree_bytes(folder) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out
