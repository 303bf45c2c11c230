"""Passkey through `rmat train` in chained stages: the schedule's grammar and a smoke run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from passkey_pipeline import Stage, cached_scores, parse_schedule, point_folder, reuse_finished  # noqa: E402


def test_a_schedule_lists_each_trainings_max_distance_steps_and_learning_rate_in_order():
    assert parse_schedule("0:600,1:2200,8:800", 3e-3) == [Stage(0, 600, 3e-3), Stage(1, 2200, 3e-3),
                                                          Stage(8, 800, 3e-3)]


def test_a_stage_may_name_its_own_learning_rate_and_lead():
    assert parse_schedule("1:2200:lead=3,8:800:lr=1e-3:lead=3", 3e-3) == [Stage(1, 2200, 3e-3, 3),
                                                                         Stage(8, 800, 1e-3, 3)]


def test_a_stage_may_repeat_until_the_memory_carries_three_rounds_unless_told():
    assert parse_schedule("1:1000:until=0.6,8:50:until=0.9:rounds=5", 3e-3) == [
        Stage(1, 1000, 3e-3, 0, 0.6, 3), Stage(8, 50, 3e-3, 0, 0.9, 5)]


def test_a_stage_may_align_its_documents_to_windows_starts_or_ends():
    assert parse_schedule("1:20:lead=3:align=end,1:20:align=start", 3e-3) == [
        Stage(1, 20, 3e-3, 3, align="end"), Stage(1, 20, 3e-3, align="start")]


def test_a_round_ends_its_stage_once_recall_past_distance_0_reaches_until():
    scores = {"d0": [1.0, 0.0, 1.0], "d1": [0.7, 0.0, 0.1], "d8": [0.5, 0.0, 0.1]}
    assert Stage(1, 10, 3e-3, until=0.6, rounds=3).done(scores)
    assert not Stage(1, 10, 3e-3, until=0.61, rounds=3).done(scores)  # d = 0, the copy, does not count
    assert Stage(1, 10, 3e-3).done({"d0": [0.0, 0.0, 0.0]})


@pytest.mark.parametrize("spec", ["0:600,1", "0:0", "-1:5", "a:5", "8:800:lr=0", "8:800:lr=x", "8:800:1e-3",
                                  "8:800:lead=-1", "8:800:leads=2", "8:800:rounds=2", "8:800:until=0",
                                  "8:800:until=1.5", "0:800:until=0.5", "8:800:until=0.5:rounds=0",
                                  "8:800:align=middle"])
def test_a_malformed_schedule_is_refused_naming_it(spec):
    with pytest.raises(ValueError, match="schedule"):
        parse_schedule(spec, 3e-3)


def _checkpointed_run(run_dir: Path, tag: str) -> Path:
    (run_dir / "checkpoints" / tag).mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints" / tag / "meta.json").write_text(json.dumps({"step": 1, "world_size": 1}))
    (run_dir / "checkpoints" / "latest").write_text(tag)
    return run_dir


def test_a_run_scored_alike_before_is_read_back_not_rescored(tmp_path):
    run, calls = _checkpointed_run(tmp_path, "global_step1"), []
    score = lambda: calls.append(1) or {"d1": [0.5, 0.0, 0.4]}  # noqa: E731
    settings = {"distances": [0, 1], "samples": 4, "seed": 0}
    assert cached_scores(run, settings, score) == cached_scores(run, settings, score) == {"d1": [0.5, 0.0, 0.4]}
    assert len(calls) == 1


def test_a_new_checkpoint_or_other_settings_are_scored_afresh(tmp_path):
    run, calls = _checkpointed_run(tmp_path, "global_step1"), []
    score = lambda: calls.append(1) or {"d1": [float(len(calls)), 0.0, 0.0]}  # noqa: E731
    cached_scores(run, {"samples": 4}, score)
    assert cached_scores(run, {"samples": 8}, score) == {"d1": [2.0, 0.0, 0.0]}
    _checkpointed_run(tmp_path, "global_step2")
    assert cached_scores(run, {"samples": 4}, score) == {"d1": [3.0, 0.0, 0.0]}


def _point(out: Path, schedule: str, seed: int = 0) -> dict:
    return dict(setting="one_path_per_head", schedule=schedule, seed=seed, batch=16, tbptt=2, lr=3e-3, whole=True,
                out=str(out))


def _trained(args: dict, tag: str, finished: bool = True) -> Path:
    point = point_folder(args, args["schedule"])
    (point / f"shards-{tag}").mkdir(parents=True)
    (point / "schedule.txt").write_text(args["schedule"])
    (point / f"shards-{tag}" / "manifest.json").write_text("{}")
    (point / f"run-{tag}").mkdir()
    if finished:
        (point / f"run-{tag}" / "final_metrics.json").write_text('{"step": 2}')
    return point


def test_a_schedule_extending_a_finished_one_copies_its_finished_trainings(tmp_path):
    _trained(_point(tmp_path, "0:2,1:4:lr=1e-3"), "0")
    _trained(_point(tmp_path, "0:2,1:4:lr=1e-3"), "1", finished=False)
    longer = _point(tmp_path, "0:2,1:4:lr=0.001,8:2")
    point, stages = point_folder(longer, longer["schedule"]), parse_schedule(longer["schedule"], 3e-3)
    reuse_finished(point, "0", stages, 0, longer)
    reuse_finished(point, "1", stages, 1, longer)
    assert json.loads((point / "run-0" / "final_metrics.json").read_text()) == {"step": 2}
    assert (point / "shards-0" / "manifest.json").exists()
    assert not (point / "run-1").exists()  # the donor's second training never finished


def test_a_schedule_too_long_for_a_file_name_names_its_folder_by_hash_and_still_lends_its_trainings(tmp_path):
    long = ",".join(["1:2000:lr=1e-4:lead=3:align=end"] * 12)
    donor = _point(tmp_path, long)
    assert len(point_folder(donor, long).name) <= 255
    _trained(donor, "11")
    longer = _point(tmp_path, long + ",8:2")
    point = point_folder(longer, longer["schedule"])
    reuse_finished(point, "11", parse_schedule(longer["schedule"], 3e-3), 11, longer)
    assert (point / "run-11" / "final_metrics.json").exists()


def test_trainings_of_another_seed_or_after_another_stage_are_not_copied(tmp_path):
    _trained(_point(tmp_path, "0:3,1:4"), "1")
    _trained(_point(tmp_path, "0:2,1:4", seed=1), "1")
    longer = _point(tmp_path, "0:2,1:4,8:2")
    point = point_folder(longer, longer["schedule"])
    reuse_finished(point, "1", parse_schedule(longer["schedule"], 3e-3), 1, longer)
    assert not point.exists()


def test_the_smoke_run_trains_each_stage_from_the_last_ones_weights_and_scores_each(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/passkey_pipeline.py", "--smoke", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "memory reset, d > 0" in out.stdout and "the key after 2 - d segments of filler" in out.stdout
    record, = map(json.loads, (tmp_path / "smoke" / "results.jsonl").read_text().splitlines())
    assert [s["max_distance"] for s in record["scores"]] == [0, 2]
    assert [s["steps"] for s in record["scores"]] == [2, 10]  # the second stage's 2 rounds (until=1: never met)
    assert [s["rounds"] for s in record["scores"]] == [1, 2]
    assert all(len(s["d2"]) == 3 for s in record["scores"])  # carried, reset, carried with the key led
    point = tmp_path / "smoke" / "one_path_per_head-0x2,2x4xlead=1xalign=endxuntil=1xrounds=2-b2-w2-lr0.003-s0"
    assert (point / "schedule.txt").read_text() == "0:2,2:4:lead=1:align=end:until=1:rounds=2"
    first, second = (yaml.safe_load((point / f"train-{i}.yaml").read_text()) for i in (0, 1))
    assert second["init_from"] == str(point / "run-0") and second["steps"] == 4
    assert second["data"]["align_document_ends"] and not first["data"]["align_document_ends"]
    assert json.loads((point / "run-1" / "final_metrics.json").read_text())["step"] == 4
    assert all((point / f"run-{tag}" / "passkey_scores.json").exists() for tag in ("0", "1", "1.1"))
    again = yaml.safe_load((point / "train-1.1.yaml").read_text())
    assert again["init_from"] == str(point / "run-1") and again["data"]["shards"] == str(point / "shards-1.1")
    assert "2 rounds by seed" in out.stdout
