"""The passkey-copy benchmark: its samples, its settings, and a smoke run."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import parse_variant  # noqa: E402
from passkey_copy import MODEL, answer_logits, batch, carries, filler_texts, training_distances, training_lead  # noqa: E402

from model import RMAT, RMATConfig  # noqa: E402


def test_a_variant_names_its_config_overrides_with_json_values():
    assert parse_variant("fine:chunk_len=8,pool=attn,paths=[\"global\"]") == (
        "fine", {"chunk_len": 8, "pool": "attn", "paths": ["global"]})


def test_a_sample_ends_with_its_pass_key_which_its_first_segment_holds():
    train, _ = filler_texts()
    tokens, answer_len = batch(train, 2, 4, np.random.default_rng(0))
    s = MODEL["segment_len"]
    assert tokens.shape == (4, 3 * s + 1)
    for row in tokens.numpy():
        key = bytes(row[-answer_len:].astype(np.uint8)).decode().strip()
        assert len(key) == 5 and key.isdigit()
        assert f"The pass key is {key}.".encode() in bytes(row[1:s].astype(np.uint8))


def test_a_sample_with_a_lead_holds_its_key_after_that_many_segments_of_text():
    train, _ = filler_texts()
    tokens, answer_len = batch(train, 1, 4, np.random.default_rng(0), lead=2)
    s = MODEL["segment_len"]
    assert tokens.shape == (4, 4 * s + 1)
    for row in tokens.numpy():
        key = bytes(row[-answer_len:].astype(np.uint8)).decode().strip()
        needle = f"The pass key is {key}.".encode()
        assert needle not in bytes(row[:2 * s].astype(np.uint8))
        assert needle in bytes(row[2 * s:3 * s].astype(np.uint8))


def test_train_and_held_out_filler_share_no_text():
    train, held_out = filler_texts()
    assert bytes(held_out[:200].astype(np.uint8)) not in bytes(train.astype(np.uint8))


def test_the_curriculum_draws_distance_0_alone_for_its_steps_then_every_distance():
    assert [training_distances(step, 2, [0, 1, 4]) for step in (1, 2, 3)] == [[0], [0], [0, 1, 4]]
    assert training_distances(1, 0, [1, 4]) == [1, 4]


def test_leads_are_drawn_after_the_curriculum_only_and_not_at_all_without_one():
    rng = np.random.default_rng(0)
    assert training_lead(2, 2, 3, rng) == 0
    assert {training_lead(3, 2, 3, rng) for _ in range(200)} == {0, 1, 2, 3}
    untouched = np.random.default_rng(0)
    assert training_lead(3, 2, 0, untouched) == 0
    assert untouched.integers(1 << 30) == np.random.default_rng(0).integers(1 << 30)


def test_the_memory_carries_once_recall_past_distance_0_reaches_the_threshold():
    point = {"d0": [1.0, 1.0, []], "d1": [0.8, 0.3, []], "d8": [0.5, 0.1, []]}
    assert carries(point, [0, 1, 8], 0.65)
    assert not carries(point, [0, 1, 8], 0.66)  # d = 0, the copy, does not count
    assert not carries(point, [0], 0.0)


def test_windows_counted_back_from_the_answer_stop_its_gradient_before_them():
    model = RMAT(RMATConfig(**MODEL))
    embeddings = []

    def keep(module, inputs, out):
        out.retain_grad()
        embeddings.append(out)

    model.tok_emb.register_forward_hook(keep)
    tokens = torch.randint(0, 256, (2, 3 * MODEL["segment_len"] + 1))
    answer_logits(model, tokens, 6, tbptt=2).sum().backward()
    assert len(embeddings) == 3
    assert embeddings[0].grad is None  # the window is the last 2 segments
    assert embeddings[1].grad.abs().sum() > 0  # reached through the memory it wrote


@pytest.mark.slow
def test_smoke_run_prints_each_settings_curve_and_writes_the_plot(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "passkey_copy.py"), "--smoke", "--jobs", "1", "--curriculum", "2",
           "--variant", "fine:chunk_len=8,mem_slots=64", "--distances", "0,1", "--lead", "1", "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    for setting in ("equal", "one_path_per_head", "global", "fine"):
        assert setting in run.stdout
    records = [json.loads(line) for line in (tmp_path / "smoke" / "results.jsonl").read_text().splitlines()]
    assert {r["setting"]: r["overrides"] for r in records}["fine"] == {"chunk_len": 8, "mem_slots": 64}
    assert {r["curriculum"] for r in records} == {2}
    assert {r["lead"] for r in records} == {1}
    assert "the key after 1 - d segments of held-out text" in run.stdout
    assert {"d0", "d1", "after_text_d0", "after_text_d1"} <= set(records[0]["curve"][-1])
    assert (tmp_path / "smoke" / "passkey_copy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_gated_leads_begin_after_the_first_scoring_that_carries(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "passkey_copy.py"), "--smoke", "--jobs", "1", "--curriculum", "2",
           "--settings", "one_path_per_head", "--distances", "0,1", "--lead", "1", "--lead-when", "0.01",
           "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    [record] = [json.loads(line) for line in (tmp_path / "smoke" / "results.jsonl").read_text().splitlines()]
    assert record["lead_when"] == 0.01
    assert record["leads_from"] == 2  # the curriculum's end, where the first scoring falls
    assert "leads from step" in run.stdout
