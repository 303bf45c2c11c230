"""rmat submit without SLURM: the dry run submits nothing; --cluster local runs every stage here."""

from __future__ import annotations

import json
import operator
import os
from pathlib import Path

import pytest

from orchestration.records import RecordBook
from orchestration.resources import Resources
from pipeline.config import ConfigError
from pipeline.pipeline_config import load_pipeline
from pipeline.stages import Stage
from pipeline.submit import plan, submit_stages
from tests.pipeline.conftest import pipeline_yaml, rmat

STAGES = ["ingest", "tokenizer", "shards", "train", "evaluate", "export"]


def test_dry_run_shows_stages_resources_and_sbatch_parameters_and_submits_nothing(tmp_path):
    units = {"partition": "cpu", "account": "lm", "qos": "high", "time_min": 30, "mem_gb": 2.5,
             "constraint": "avx2", "extra": {"exclusive": "user"}}
    config = pipeline_yaml(tmp_path, prep=units)
    code, out = rmat("submit", config, "slurm.prep.cpus_per_task=2", "--dry-run")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines if not line.startswith(" ")] == STAGES
    assert "3 of 3 units to run; after nothing" in lines[0]
    assert "after ingest" in lines[2] and "after tokenizer" in lines[4]
    assert lines[1].split() == ["sbatch", "--job-name=ingest", "--time=30", "--nodes=1", "--ntasks-per-node=1",
                                    "--cpus-per-task=2", "--partition=cpu", "--account=lm", "--qos=high",
                                    "--constraint=avx2", "--mem=2560M", "--exclusive=user", "--signal=USR2@90"]
    assert "--dependency=afterok:<ingest>" in lines[3]
    assert lines[6].startswith("train      20 steps into ") and lines[6].endswith("; after shards")
    assert lines[7].split() == ["sbatch", "--job-name=train", "--time=120", "--nodes=1", "--ntasks-per-node=2",
                                "--cpus-per-task=1", "--dependency=afterok:<shards>", "--signal=USR2@90"]
    assert lines[8].split()[:7] == ["time_min", "120", "min", "=", "7200", "s", "per"]
    assert lines[9].startswith("evaluate   splits val, test into ") and lines[9].endswith("; after train")
    assert "--dependency=afterok:<train>" in lines[10]
    assert lines[11].startswith("export     safetensors+onnx of the final checkpoint into ")
    assert lines[11].endswith("; after evaluate") and "--dependency=afterok:<evaluate>" in lines[12]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_local_cluster_runs_the_whole_pipeline_then_resubmit_skips_it(tmp_path):
    config = pipeline_yaml(tmp_path)
    code, out = rmat("submit", config, "--cluster", "local")
    assert code == 0, out
    records = RecordBook(tmp_path / "runs" / "t" / "jobs").all()
    assert [(r.stage, r.state) for r in records if r.kind == "stage"] == [(s, "COMPLETED") for s in STAGES]
    assert any(r.kind == "units" for r in records)  # units ran as their own local processes
    evaluate_log = Path(next(r for r in records if r.stage == "evaluate").logs()[0]).read_text()
    assert "evaluate: rank 0 of 1, 1 thread(s), device cpu" in evaluate_log  # its cpus_per_task, not every core
    code, status = rmat("status", str(tmp_path / "runs" / "t"))
    assert code == 0 and status.count("output complete") == 6
    (train_dir,) = (tmp_path / "runs" / "t").glob("train-*")
    assert len((train_dir / "losses.jsonl").read_text().splitlines()) == 20
    report = json.loads((train_dir / "final_eval.json").read_text())
    assert report["step"] == 20 and {"val/loss", "test/loss"} <= set(report["metrics"])
    assert {"test/passkey/d01/accuracy", "test/passkey/d02/accuracy_reset",
            "test/passkey/d02/accuracy_after_text"} <= set(report["metrics"])
    assert json.loads((train_dir / "export" / "step_00000020" / "export.json").read_text())["checkpoint"] == \
        "step_00000020"
    for shard in (tmp_path / "data").glob("shards-*/*.tar"):
        os.utime(shard, (1, 1))  # file times are not what training was complete for
    assert rmat("submit", config, "--cluster", "local")[1].endswith("nothing to submit: every stage is complete\n")
    (manifest,) = (tmp_path / "data").glob("shards-*/manifest.json")
    data = json.loads(manifest.read_text())
    data["shards"] = data["shards"][::-1]  # other data in the same folder: its hash no longer matches
    manifest.write_text(json.dumps(data))
    _, dry = rmat("submit", config, "--cluster", "local", "--dry-run")
    assert [line.split()[0] for line in dry.splitlines() if " complete, skipped" not in line
            and not line.startswith(" ")] == ["train", "evaluate", "export"], dry


def test_a_time_limit_that_leaves_too_little_time_to_train_is_refused_with_the_numbers(tmp_path, capsys):
    config = pipeline_yaml(tmp_path, train={"tasks_per_node": 2, "max_requeues": 1, "time_min": 1,
                                            "signal_delay_s": 30})
    for dry in ([], ["--dry-run"]):
        code, _ = rmat("submit", config, *dry)
        message = capsys.readouterr().err
        assert code == 2 and "slurm.train.time_min=1 leaves too little time to train" in message, message
        assert ("time_min 1 min = 60 s per attempt, of which 110 s do not train: start-up 60 s (assumed) + "
                "signal_delay_s 30 s + a checkpoint 20 s (assumed)") in message
        assert "slurm.train.time_min >= 4" in message and "nothing submitted" in message
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_the_time_budget_uses_what_the_last_attempt_of_the_training_measured(tmp_path):
    config = pipeline_yaml(tmp_path, train={"tasks_per_node": 2, "max_requeues": 1, "time_min": 1,
                                            "signal_delay_s": 10})
    train_dir = Path(plan(load_pipeline(config), "local")[0][3].output)  # no time limit there
    train_dir.mkdir(parents=True)
    (train_dir / "timings.json").write_text(json.dumps({"startup_s": 12.4, "checkpoint_s": 0.6}))
    code, out = rmat("submit", config, "--dry-run")
    assert code == 0, out
    assert ("of which 23 s do not train: start-up 12 s (measured) + signal_delay_s 10 s + a checkpoint 1 s "
            "(measured)") in out, out


def test_a_failed_local_stage_leaves_out_only_the_stages_after_it(tmp_path):
    cfg = load_pipeline(pipeline_yaml(tmp_path))
    one = Resources(time_min=5)
    stages = [Stage("fails", operator.truediv, (1, 0), one), Stage("after-it", operator.add, (1, 2), one, ["fails"]),
              Stage("after-that", operator.add, (1, 2), one, ["after-it"]), Stage("other", operator.add, (1, 2), one)]
    said: list[str] = []
    out = submit_stages(cfg, "local", stages, said.append)
    assert [(s.stage, s.state) for s in out] == [("fails", "FAILED"), ("other", "COMPLETED")]
    assert "after-it   not run: after fails" in said and "after-that not run: after after-it" in said


def test_a_passkey_mix_counts_its_distances_in_the_trainings_segments(tmp_path):
    cfg = load_pipeline(pipeline_yaml(tmp_path), ["data.shard.passkey.per_shard=4"])
    assert cfg.data.shard.passkey.segment_tokens == cfg.train.model.segment_len == 64


def test_a_passkey_mix_with_another_segment_length_is_refused_naming_both_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"data.shard.passkey.segment_tokens=32 .*train.model.segment_len=64"):
        load_pipeline(pipeline_yaml(tmp_path),
                      ["data.shard.passkey.per_shard=4", "data.shard.passkey.segment_tokens=32"])
