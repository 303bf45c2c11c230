"""The long-context recall benchmark: its task, its Transformer-XL baseline, and a smoke run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from long_context import (  # noqa: E402
    IGNORE,
    N_FILLER,
    N_KEYS,
    SHAPE,
    Setting,
    Task,
    TransformerXL,
    build,
    count_params,
    rmat_params,
    train_point,
    training_distance,
    value_set_ceiling,
)

from model import RMATConfig  # noqa: E402
from model.layers import TokenShift  # noqa: E402


def test_every_asked_key_was_paired_with_its_answer_in_the_first_segment():
    task = Task(n_pairs=4, distance=2, segment_len=32)
    tokens, targets = task.sample(8, torch.Generator().manual_seed(0))
    assert tokens.shape == targets.shape == (8, 4 * 32)
    for row, target in zip(tokens, targets, strict=True):
        pairs = dict(zip(row[0:8:2].tolist(), row[1:8:2].tolist(), strict=True))
        asked = (target != IGNORE).nonzero()[:, 0]
        assert len(asked) == 4 and (asked >= 3 * 32).all()
        assert {int(row[i]): int(target[i]) for i in asked} == pairs
        assert (row[32:3 * 32] < N_FILLER).all()  # the filler segments hold no key or value


def test_lead_puts_that_many_filler_tokens_before_the_pairs():
    tokens, _ = Task(4, 1, 32, lead=5).sample(8, torch.Generator().manual_seed(0))
    assert (tokens[:, :5] < N_FILLER).all()
    assert (tokens[:, 5:13:2] >= N_FILLER).all() and (tokens[:, 5:13:2] < N_FILLER + N_KEYS).all()  # keys
    assert (tokens[:, 6:13:2] >= N_FILLER + N_KEYS).all()  # values


def test_pairs_that_the_lead_pushes_past_the_first_segment_are_an_error():
    with pytest.raises(ValueError, match="4 pairs after 25 filler tokens do not fit a segment of 32"):
        Task(4, 1, 32, lead=25).sample(1, torch.Generator().manual_seed(0))


def test_the_answer_is_hidden_after_its_question_unless_the_task_shows_it():
    for show in (False, True):
        tokens, targets = Task(4, 1, 32, show_answers=show).sample(16, torch.Generator().manual_seed(0))
        asked = (targets != IGNORE).nonzero()
        after = tokens[asked[:, 0], asked[:, 1] + 1]
        assert torch.equal(after, targets[asked[:, 0], asked[:, 1]]) if show else (after < N_FILLER).all()


def test_value_set_ceiling_is_one_for_a_single_pair_and_lower_for_many():
    gen = torch.Generator().manual_seed(0)
    assert value_set_ceiling(Task(1, 1, 32).sample(64, gen)[1], show_answers=False) == 1.0
    assert value_set_ceiling(Task(16, 1, 32).sample(64, gen)[1], show_answers=False) < 0.2


def test_shown_answers_raise_the_ceiling_to_the_harmonic_share_by_ruling_themselves_out():
    targets = torch.full((1, 16), IGNORE)
    targets[0, 0:8:2] = torch.tensor([130, 131, 132, 133])  # four distinct values, asked in this order
    assert value_set_ceiling(targets, show_answers=False) == 0.25
    assert value_set_ceiling(targets, show_answers=True) == pytest.approx((1 / 4 + 1 / 3 + 1 / 2 + 1) / 4)


def test_a_point_reports_its_accuracy_per_question_in_the_order_asked():
    task = Task(4, 1, 32)
    r = train_point(dict(setting=vars(Setting("nomem")), task=vars(task), seed=0, steps=2, window=0, train_d=-1,
                         batch=4, lr=1e-3, target_params=None))
    assert len(r["by_question"]) == 4
    assert sum(r["by_question"]) / 4 == pytest.approx(r["accuracy"], abs=1e-3)


def test_token_warmup_writes_every_token_for_its_first_steps_only(monkeypatch):
    from model import RMAT

    calls = []
    write_every_token = RMAT.write_every_token
    monkeypatch.setattr(RMAT, "write_every_token", lambda self, on: calls.append(on) or write_every_token(self, on))
    setting = Setting("tok", {"mem_tokens_per_chunk": 2, "mem_slots": 60})
    train_point(dict(setting=vars(setting), task=vars(Task(2, 1, 32)), seed=0, steps=3, window=0, train_d=-1,
                     batch=2, lr=1e-3, target_params=None, token_warmup=2))
    assert calls == [True, True, False]


def test_a_ramp_trains_on_short_distances_first_and_on_all_once_it_ends():
    gen = torch.Generator().manual_seed(0)
    early = {training_distance(step, 4, 1000, gen) for step in range(1, 200)}
    late = {training_distance(step, 4, 1000, gen) for step in range(1000, 1200)}
    unramped = {training_distance(step, 4, 0, gen) for step in range(1, 200)}
    assert early == {0, 1} and late == unramped == {0, 1, 2, 3, 4}


def test_transformer_xl_reads_the_previous_segment_only_and_without_gradient():
    torch.manual_seed(0)
    model = TransformerXL(RMATConfig(**{**SHAPE, "n_layers": 1}, paths=["global"], mem_slots=0), d_ff=128)
    tokens = torch.randint(N_FILLER, N_FILLER + N_KEYS, (1, 3 * 32))

    def last_segment_logits(t):
        caches = model.init_state(1)
        for i in range(3):
            logits, caches = model(t[:, 32 * i:32 * (i + 1)], caches)
        return logits

    base = last_segment_logits(tokens)
    two_back, one_back = tokens.clone(), tokens.clone()
    two_back[0, 5] += 1
    one_back[0, 40] += 1
    assert torch.equal(last_segment_logits(two_back), base)
    assert not torch.allclose(last_segment_logits(one_back), base)
    emb = model.tok_emb(tokens[:, :32]).detach().requires_grad_()
    _, caches = model.blocks[0](emb, None)
    out, _ = model.blocks[0](model.tok_emb(tokens[:, 32:64]), caches)
    out.sum().backward()
    assert emb.grad is None


@pytest.mark.parametrize("name", ["rmat", "nomem", "xl", "full"])
def test_the_token_shift_reaches_every_setting_at_a_matched_size(name):
    target = rmat_params(Setting("rmat"), token_shift=True)
    model = build(Setting(name), Task(4, 1, 32), target, token_shift=True)
    assert any(isinstance(m, TokenShift) for m in model.modules())
    assert abs(count_params(model) - target) <= 0.1 * target


def test_the_default_setting_is_the_model_s_own_defaults_at_the_tiny_size():
    model = build(Setting("default"), Task(4, 1, 32), None, token_shift=True)
    assert model.cfg == RMATConfig(**SHAPE) and model.cfg.memory_layers == [0] and model.cfg.memory_slots == 360


def test_the_default_setting_without_the_shift_on_every_setting_is_an_error(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "long_context.py"), "--n", "2", "--d", "1", "--settings",
           "default,nomem", "--seeds", "1", "--steps", "30", "--report", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode != 0 and "'default' has the token shift" in out.stderr and "--token-shift" in out.stderr


@pytest.mark.slow
def test_smoke_run_prints_the_table_and_writes_the_heat_map_and_a_rerun_skips_done_points(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "long_context.py"), "--smoke", "--jobs", "1",
           "--out", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert "value-set ceiling" in first.stdout and "nomem" in first.stdout
    assert "by question asked" in first.stdout
    png = tmp_path / "smoke" / "long_context.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert "2 points, 2 already in" in again.stdout


def test_report_prints_the_table_of_recorded_points_and_trains_none(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "long_context.py"), "--n", "2", "--d", "1", "--settings", "rmat",
           "--seeds", "1", "--steps", "30", "--report", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "1 points, 0 already in" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.strip().startswith("rmat |"))
    assert row.split("|")[-1].strip() == "-"  # the cell is empty: nothing was trained
    assert not (tmp_path / "results.jsonl").exists()


def test_first_seed_adds_seeds_after_those_measured_before(tmp_path):
    # A point recorded for seed 1 only: seeds 1..2 find it, seed 0 alone does not.
    record = dict(setting={"name": "rmat"}, task={"n_pairs": 2, "distance": 1, "show_answers": False, "lead": 0},
                  seed=1, steps=30, window=0, train_d=-1, loss="answers", token_shift=False, token_warmup=0,
                  accuracy=0.5, ceiling=0.5, params=1, seconds=1.0)
    (tmp_path / "results.jsonl").write_text(json.dumps(record) + "\n")
    base = [sys.executable, str(ROOT / "benchmarks" / "long_context.py"), "--n", "2", "--d", "1", "--settings", "rmat",
            "--steps", "30", "--report", "--out", str(tmp_path)]
    later = subprocess.run(base + ["--first-seed", "1", "--seeds", "2"], capture_output=True, text=True, timeout=300,
                           cwd=ROOT)
    assert later.returncode == 0, later.stderr
    assert "2 points, 1 already in" in later.stdout
    first = subprocess.run(base + ["--seeds", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "1 points, 0 already in" in first.stdout
