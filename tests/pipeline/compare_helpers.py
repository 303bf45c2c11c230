"""Runs logged straight into an MLflow store with MlflowClient, shaped as ``rmat train`` logs them."""

from __future__ import annotations

import itertools
import json
import math
import struct
from pathlib import Path

START_MS = 1_700_000_000_000
_STARTS = itertools.count(START_MS, 1000)  # each run starts a second after the one logged before it
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def training_points(steps: int, tokens_per_step: int, eval_every: int, scale: float = 1.0,
                    skip: tuple[int, ...] = ()) -> dict[str, list[tuple[int, float]]]:
    """Points of a training: per step train loss, tokens and perf; val overall, per domain and by position
    at step 0 and every ``eval_every`` steps; no train points at the steps in ``skip``."""
    def loss(step: int) -> float:
        return scale * (2.0 + 3.0 * math.exp(-step / 10))

    per_step = [s for s in range(1, steps + 1) if s not in skip]
    evals = [0, *range(eval_every, steps + 1, eval_every)]
    return {"train/loss": [(s, loss(s) + 0.01 * (s % 3)) for s in per_step],
            "train/tokens": [(s, float(s * tokens_per_step)) for s in [0, *per_step]],
            "perf/tokens_per_s": [(s, 1000.0 + 10 * s) for s in per_step],
            "perf/mfu": [(s, 0.01 + 0.0001 * s) for s in per_step],
            "val/loss": [(s, loss(s) + 0.1) for s in evals],
            "val/code/loss": [(s, loss(s) + 0.2) for s in evals],
            "val/documents/loss": [(s, loss(s)) for s in evals],
            "val/pos_00_0-32/loss": [(s, loss(s) + 0.3) for s in evals],
            "val/pos_01_32-64/loss": [(s, loss(s) - 0.1) for s in evals]}


def log_run(client, experiment_id: str, name: str, params: dict[str, str],
            points: dict[str, list[tuple[int, float]]], status: str = "FINISHED", wall_s: float = 60.0,
            duplicate: tuple[str, int] | None = None) -> str:
    """A run holding ``points`` (one per step, plus one more at ``duplicate``'s metric and step); its id."""
    from mlflow.entities import Metric, Param

    start = next(_STARTS)
    run = client.create_run(experiment_id, start_time=start, run_name=name)
    run_id = run.info.run_id
    metrics = [Metric(key, value, start + step, step) for key, pts in points.items() for step, value in pts]
    if duplicate is not None:
        key, step = duplicate
        metrics.append(Metric(key, 9.0, start + step + 1, step))
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    if status != "RUNNING":
        client.set_terminated(run_id, status, end_time=start + int(wall_s * 1000))
    return run_id


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a metric as the store holds it, in step order."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature; opened with PIL to prove it decodes."""
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.load()
        assert image.size == struct.unpack(">II", data[16:24])
        return image.size


def report_numbers(out: Path) -> dict:
    return json.loads((out / "compare.json").read_text())
