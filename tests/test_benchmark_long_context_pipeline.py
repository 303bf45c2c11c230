"""MQAR through `rmat train`: the task's documents as the loader reads them, and a smoke run."""

import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from long_context import BETA2, N_FILLER, N_KEYS, Setting, rmat_config, training_distance  # noqa: E402
from long_context_pipeline import (  # noqa: E402
    BOS_ID,
    EOS_ID,
    VOCAB,
    pipeline_model,
    task_of,
    variant_setting,
    write_task_shards,
)

from model.config import RMATConfig  # noqa: E402
from pipeline.streams import IGNORE_INDEX, RowStream  # noqa: E402
from pipeline.train import checkpoint  # noqa: E402
from pipeline.train.loader import TrainLoader, open_split, read_documents  # noqa: E402


def test_a_task_sample_begins_with_filler_so_bos_in_its_place_loses_no_pair():
    tokens, _ = task_of(15, 1).sample(256, torch.Generator().manual_seed(0))
    assert (tokens[:, 0] < N_FILLER).all()


def test_the_loader_reads_a_sample_as_the_reference_loop_does_bos_in_place_of_its_first_token(tmp_path):
    task = task_of(4, 1)
    write_task_shards(tmp_path, task, n_train=3, n_val=1, seed=0, answers_only=True)
    tokens, targets = task.sample(3, torch.Generator().manual_seed(0))  # the shards' first samples
    docs = read_documents(open_split(str(tmp_path), "train"), 100)
    row = RowStream([d for d, _, _ in docs], range(len(docs)), task.segment_len, BOS_ID, EOS_ID,
                    [spans for _, _, spans in docs])
    for sample, answers in zip(tokens, targets, strict=True):
        segments = [row.next_segment() for _ in range(task.n_segments)]
        inputs = torch.as_tensor(np.concatenate([i for i, _, _ in segments]))
        loss_targets = torch.as_tensor(np.concatenate([t for _, t, _ in segments]))
        assert inputs[0] == BOS_ID and torch.equal(inputs[1:], sample[1:])
        assert torch.equal(loss_targets, answers)  # the loss reads the answers where the loop's does


def test_the_loader_reads_each_sample_as_d_plus_2_whole_segments_pairs_first_questions_last(tmp_path):
    task = task_of(4, 2)
    write_task_shards(tmp_path, task, n_train=6, n_val=2, seed=0, answers_only=False)
    docs = [d for d, _, _ in read_documents(open_split(str(tmp_path), "train"), 100)]
    assert len(docs) == 6
    row = RowStream(docs, range(len(docs)), task.segment_len, BOS_ID, EOS_ID)
    for _ in docs:
        segments = [row.next_segment() for _ in range(task.n_segments)]
        assert [reset for _, _, reset in segments] == [True] + [False] * (task.n_segments - 1)
        first = segments[0][0]
        assert first[0] == BOS_ID and (first[1:9:2] >= N_FILLER).all()  # four keys right after BOS
        assert segments[-1][1][-1] == EOS_ID  # the document ends exactly with its last segment


def test_with_answers_only_the_loader_counts_exactly_the_answers_of_the_last_segment(tmp_path):
    task = task_of(4, 2)
    write_task_shards(tmp_path, task, n_train=6, n_val=2, seed=0, answers_only=True)
    docs = read_documents(open_split(str(tmp_path), "train"), 100)
    row = RowStream([d for d, _, _ in docs], range(len(docs)), task.segment_len, BOS_ID, EOS_ID,
                    [spans for _, _, spans in docs])
    for _ in docs:
        segments = [row.next_segment() for _ in range(task.n_segments)]
        assert all((targets == IGNORE_INDEX).all() for _, targets, _ in segments[:-1])
        inputs, targets, _ = segments[-1]
        counted = targets != IGNORE_INDEX
        assert counted.sum() == 4
        assert (inputs[counted] >= N_FILLER).all() and (inputs[counted] < N_FILLER + N_KEYS).all()  # asked at a key
        assert (targets[counted] >= N_FILLER + N_KEYS).all()  # and the value is the answer


def test_with_train_d_training_documents_mix_distances_and_validation_keeps_the_cells(tmp_path):
    task = task_of(4, 2)
    write_task_shards(tmp_path, task, n_train=64, n_val=4, seed=0, answers_only=True, train_d=3)

    def segments(split: str) -> set[int]:  # each document is d + 2 whole segments once BOS is put before it
        docs = read_documents(open_split(str(tmp_path), split), 100)
        return {(len(doc) + 1) // task.segment_len for doc, _, _ in docs}

    assert segments("train") == {2, 3, 4, 5}  # d = 0..3
    assert segments("val") == {task.n_segments}


def test_a_ramp_writes_short_distances_first_in_the_order_the_rows_read_them(tmp_path):
    task, rows, tbptt, ramp = task_of(4, 2), 4, 2, 60
    write_task_shards(tmp_path, task, n_train=600, n_val=4, seed=0, answers_only=True, train_d=4,
                      ramp=(ramp, rows, tbptt))
    docs = read_documents(open_split(str(tmp_path), "train"), 1000)  # the order written
    distances = [(len(doc) + 1) // task.segment_len - 2 for doc, _, _ in docs]
    read, farthest = [0] * rows, []
    for i, d in enumerate(distances):  # document i is row i % rows' next, as the loader deals them
        step = read[i % rows] // tbptt
        farthest.append(min(4, 1 + 3 * step // ramp))
        read[i % rows] += d + 2
    assert all(d <= f for d, f in zip(distances, farthest, strict=True))
    assert set(distances[:40]) == {0, 1} and set(distances[-200:]) == {0, 1, 2, 3, 4}


def test_a_ramp_of_documents_kept_whole_draws_each_at_the_step_the_loader_begins_it(tmp_path):
    task, rows, tbptt, ramp = task_of(4, 2), 4, 2, 60
    write_task_shards(tmp_path, task, n_train=600, n_val=4, seed=0, answers_only=True, train_d=4,
                      ramp=(ramp, rows, tbptt), whole_short=True)
    info = open_split(str(tmp_path), "train")
    written = [(len(doc) + 1) // task.segment_len - 2 for doc, _, _ in read_documents(info, 1000)]
    loader = TrainLoader(info, 0, 1, rows, 1, task.segment_len, seed=0, whole_short_documents=True,
                         shard_order="as_written")
    reached: list[list[int]] = [[] for _ in range(rows)]  # the step at which a row reaches each document:
    padded, paddings = [False] * rows, 0                   # its first segment, or the padding before it
    for step in range(200):
        for segment in loader.window(0, tbptt):
            for r in range(rows):
                padding = bool((segment.inputs[r] == EOS_ID).all())
                if (padding or segment.reset[r]) and not padded[r]:
                    reached[r].append(step)
                padded[r], paddings = padding, paddings + padding
    read = min(len(b) for b in reached) * rows
    steps = [reached[i % rows][i // rows] for i in range(read)]  # row r reads documents r, r + rows, ...
    assert paddings > 0  # short documents were kept whole, so rows fell behind the segments they would have read
    gen = torch.Generator().manual_seed(0)  # the shards' generator draws the distances first
    assert written[:read] == [training_distance(step, 4, ramp, gen) for step in steps]


def test_the_variant_named_default_trains_the_models_own_defaults_in_both_trainers():
    loop = rmat_config(*variant_setting("default", {}))
    assert loop == rmat_config(Setting("default"))
    assert loop.mem_reach_segments == RMATConfig().mem_reach_segments and loop.mem_slots is None
    assert pipeline_model("default", {}) == {**asdict(loop), "vocab_size": VOCAB + 2}


def test_a_variant_overrides_the_same_model_in_both_trainers():
    for variant, overrides in [("default", {"mem_reach_segments": 8}), ("shift", {"token_shift": True})]:
        loop = rmat_config(*variant_setting(variant, overrides))
        assert RMATConfig(**pipeline_model(variant, overrides)) == replace(loop, vocab_size=VOCAB + 2)
    assert rmat_config(*variant_setting("default", {"mem_reach_segments": 8})).mem_reach_segments == 8
    assert rmat_config(*variant_setting("shift", {"token_shift": True})).token_shift


def test_more_pairs_than_fit_beside_bos_are_refused_naming_the_flag(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "long_context_pipeline.py"), "--n", "16", "--smoke",
           "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "--n 16" in out.stderr and "at most 15 pairs" in out.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.slow
def test_smoke_run_trains_a_variant_with_rmat_train_and_prints_both_trainers(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "long_context_pipeline.py"), "--smoke", "--out", str(tmp_path),
           "--variant", "shift:token_shift=true"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "benchmark loop" in out.stdout and "rmat train" in out.stdout
    records = [json.loads(line) for line in (tmp_path / "smoke" / "results.jsonl").read_text().splitlines()]
    assert [(r["trainer"], r["variant"]) for r in records] == [("benchmark loop", "shift"),
                                                               ("rmat train, loss at answers", "shift")]
    run = tmp_path / "smoke" / "shift-n1-d2-w4-s0-answers" / "run"
    assert (run / "final_metrics.json").exists()
    assert checkpoint.load_model(str(run)).cfg.token_shift  # the variant reached the pipeline's model
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["beta2"] == BETA2  # the loop's AdamW
