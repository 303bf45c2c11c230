"""rmat submit without SLURM: the dry run submits nothing; --cluster local runs every stage here."""

from __future__ import annotations

import json
import os

from orchestration.records import RecordBook
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
    assert lines[8].startswith("evaluate   splits val, test into ") and lines[8].endswith("; after train")
    assert "--dependency=afterok:<train>" in lines[9]
    assert lines[10].startswith("export     safetensors+onnx of the final checkpoint into ")
    assert lines[10].endswith("; after evaluate") and "--dependency=afterok:<evaluate>" in lines[11]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_local_cluster_runs_the_whole_pipeline_then_resubmit_skips_it(tmp_path):
    config = pipeline_yaml(tmp_path)
    code, out = rmat("submit", config, "--cluster", "local")
    assert code == 0, out
    records = RecordBook(tmp_path / "runs" / "t" / "jobs").all()
    assert [(r.stage, r.state) for r in records if r.kind == "stage"] == [(s, "COMPLETED") for s in STAGES]
    assert any(r.kind == "units" for r in records)  # units ran as their own local processes
    code, status = rmat("status", str(tmp_path / "runs" / "t"))
    assert code == 0 and status.count("output complete") == 6
    (train_dir,) = (tmp_path / "runs" / "t").glob("train-*")
    assert len((train_dir / "losses.jsonl").read_text().splitlines()) == 20
    report = json.loads((train_dir / "final_eval.json").read_text())
    assert report["step"] == 20 and {"val/loss", "test/loss"} <= set(report["metrics"])
    assert {"test/passkey/d01/accuracy", "test/passkey/d02/accuracy_reset"} <= set(report["metrics"])
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
