"""``rmat quickstart``: a short real training of RMAT on bytes of real text, by ``rmat train``'s own loop.

The config is a training config (configs/quickstart.yaml: one process, ZeRO-0). Its shard
folder is filled on first use with byte-token shards of the Python standard library
(data_prep.byte_shards), present on every machine that runs rmat. After training, it
reports the validation loss before and after (the loop's own evaluations) and prints a
sample from the final checkpoint's weights.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from data_prep.byte_shards import write_byte_shards
from data_prep.shards import MANIFEST
from pipeline.train import checkpoint
from pipeline.train.config import TrainConfig
from pipeline.train.files import EVAL_LOG, LOSS_LOG
from pipeline.train.launch import launch
from pipeline.train.loader import open_split, read_documents

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "quickstart.yaml")
# About 3 MB of text: 200 training documents in 4 shards, 16 held out for validation.
BYTE_SPLITS = {"train": (4, 50), "val": (1, 16)}
MAX_DOC_BYTES = 32_000


def run_quickstart(cfg: TrainConfig) -> dict[str, float]:
    """Write the byte shards if missing, train, print the losses and a sample; returns the losses."""
    if not os.path.exists(os.path.join(cfg.data.shards, MANIFEST)):
        write_byte_shards(cfg.data.shards, BYTE_SPLITS, MAX_DOC_BYTES)
    launch(cfg, nproc=1)
    result = _losses(cfg.run_dir)
    print(f"val loss {result['val_before']:.3f} -> {result['val_after']:.3f} nats/byte; "
          f"checkpoint in {checkpoint.checkpoint_root(cfg.run_dir)}")
    print("sample:\n" + sample(cfg))
    return result


def _losses(run_dir: str) -> dict[str, float]:
    """Mean training loss of the first and last 10 steps; validation loss before and after."""
    losses, evals = (_read_jsonl(os.path.join(run_dir, name)) for name in (LOSS_LOG, EVAL_LOG))
    train = [r["loss"] for r in losses]
    return {"first_loss": float(np.mean(train[:10])), "last_loss": float(np.mean(train[-10:])),
            "val_before": evals[0]["val/loss"], "val_after": evals[-1]["val/loss"]}


def sample(cfg: TrainConfig, prompt_bytes: int = 64, new_bytes: int = 120) -> str:
    """The final checkpoint's model continuing the start of a validation document."""
    model = checkpoint.load_model(cfg.run_dir).eval()
    ids, _, _ = read_documents(open_split(cfg.data.shards, cfg.data.val_split), 1)[0]
    out = model.generate(torch.from_numpy(ids[:prompt_bytes].astype(np.int64)), new_bytes, temperature=0.8,
                         top_k=20)
    return bytes(out.clamp(max=255).tolist()).decode("utf-8", errors="replace")


def _read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
