"""What a training writes in its run folder, by name, and the readers that need no torch.

``rmat status`` and ``rmat submit`` say from these files whether training (and the
evaluation of its latest checkpoint) is complete; importing this module loads neither
torch nor DeepSpeed, so those commands answer in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

LOSS_LOG = "losses.jsonl"
EVAL_LOG = "evals.jsonl"
FINAL_METRICS = "final_metrics.json"
TIMINGS = "timings.json"  # the last attempt's start-up and checkpoint seconds: what a time limit must leave room for


def checkpoint_root(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def latest_meta(run_dir: str) -> Optional[dict]:
    """``{"step", "world_size", "tag"}`` of the checkpoint ``latest`` names, or None."""
    root = checkpoint_root(run_dir)
    pointer = os.path.join(root, "latest")
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        tag = f.read().strip()
    with open(os.path.join(root, tag, "meta.json")) as f:
        return {**json.load(f), "tag": tag}


def manifest_hash(manifest: dict) -> str:
    """The manifest's own hash identifies the data: it lists every shard's sha256."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
