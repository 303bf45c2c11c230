"""The whole pipeline on the real one-machine SLURM cluster: data prep, 2-node training, evaluation.

One tiny pipeline is submitted once per module (training 2 nodes x 1 task, gloo); the
tests then read its status and MLflow store, resubmit it, damage a shard, and train
the same config again under a preemption signal to compare its losses bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pipeline_helpers import code_source, rmat, tiny_corpus, wait_until_finished, write_pipeline

from orchestration.records import RecordBook

STAGES = ("ingest", "tokenizer", "shards", "train", "evaluate", "export")
STEPS = 100
# A model that takes ~0.04 s a step on 2 shared cores: 100 steps leave seconds to signal it mid-run.
TRAIN = {"model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "segment_len": 32, "chunk_len": 16},
         "data": {"batch_size": 2, "tbptt_segments": 2}, "optim": {"warmup_steps": 5},
         "engine": {"threads_per_proc": 0}, "checkpoint": {"every": 0, "keep": 2},  # threads: cpus_per_task (1)
         "eval": {"every": 0, "max_docs": 8, "batch_size": 2}, "steps": STEPS}
EVALUATE = {"max_docs": 8, "batch_size": 2, "passkey": {"distances": []}}  # segments of 32: too short for it


def pipeline_config(root: Path, name: str) -> Path:
    slurm = {"array": {"max_tasks": 2, "retries": 0, "poll_s": 1},
             "train": {"nodes": 2, "tasks_per_node": 1, "time_min": 10, "max_requeues": 2}}
    return write_pipeline(root, [code_source(root / "corpus")], name=name, train=TRAIN, evaluate=EVALUATE,
                          slurm=slurm)


@pytest.fixture(scope="module")
def pipeline(slurm_cluster, tmp_path_factory):
    """The tiny pipeline submitted once and run to the end: (config, run folder, root, seconds)."""
    root = tmp_path_factory.mktemp("pipeline")
    tiny_corpus(root)
    config = pipeline_config(root, "tiny")
    start = time.time()
    code, out = rmat("submit", str(config))
    assert code == 0, out
    run_dir = root / "runs" / "tiny"
    wait_until_finished(run_dir, timeout_s=400)
    seconds = time.time() - start
    print(f"\n2-node pipeline, submit to complete: {seconds:.0f} s")
    return config, run_dir, root, seconds


def train_dir(run_dir: Path) -> Path:
    (folder,) = run_dir.glob("train-*")
    return folder


def losses(run_dir: Path) -> list[tuple[int, str]]:
    lines = (train_dir(run_dir) / "losses.jsonl").read_text().splitlines()
    return [(r["step"], r["loss_hex"]) for r in map(json.loads, lines)]


def test_every_stage_completes_and_the_mlflow_run_has_training_and_final_metrics(pipeline):
    _, run_dir, _, _ = pipeline
    code, status = rmat("status", str(run_dir))
    assert code == 0
    lines = {line.split()[0]: line for line in status.splitlines() if line.split()[0] in STAGES}
    assert sorted(lines) == sorted(STAGES), status
    for line in lines.values():
        assert " COMPLETED " in line and "output complete" in line, status
    assert [s for s, _ in losses(run_dir)] == list(range(1, STEPS + 1))
    folder = train_dir(run_dir)
    report = json.loads((folder / "final_eval.json").read_text())
    assert report["step"] == STEPS and {"val/loss", "test/loss", "test/code/loss"} <= set(report["metrics"])
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")  # the pipeline's one store
    run = client.get_run((folder / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED" and run.data.tags["world_size"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == STEPS
    assert run.data.metrics["final/test/loss"] == report["metrics"]["test/loss"]


def test_training_and_evaluation_run_as_many_threads_as_cpus_per_task(pipeline):
    _, run_dir, _, _ = pipeline
    logs = {r.stage: Path(r.logs()[0]).read_text() for r in RecordBook(run_dir / "jobs").all()
            if r.stage in ("train", "evaluate")}
    assert "(1 thread(s) per process, 2 process(es), device cpu, from step 0)" in logs["train"], logs["train"]
    assert "evaluate: rank 0 of 1, 1 thread(s), device cpu" in logs["evaluate"], logs["evaluate"]


def test_resubmitting_a_complete_pipeline_submits_nothing(pipeline):
    config, run_dir, _, _ = pipeline
    before = RecordBook(run_dir / "jobs").all()
    code, out = rmat("submit", str(config))
    assert code == 0 and "nothing to submit" in out, out
    assert RecordBook(run_dir / "jobs").all() == before


def test_a_deleted_shard_resubmits_its_unit_and_not_training(pipeline):
    config, run_dir, root, _ = pipeline
    shard = sorted((root / "data").glob("shards-*/train-*.tar"))[0]
    original = shard.read_bytes()
    trained = (train_dir(run_dir) / "trained_on.json").stat().st_mtime_ns
    shard.unlink()
    known = {r.job_id for r in RecordBook(run_dir / "jobs").all()}
    code, out = rmat("submit", str(config))
    assert code == 0, out
    assert [line.split()[0] for line in out.splitlines() if " job " in line] == ["shards"], out
    assert "train      complete, skipped" in out and "evaluate   complete, skipped" in out
    wait_until_finished(run_dir)
    new = [r for r in RecordBook(run_dir / "jobs").all() if r.job_id not in known]
    assert [r.stage for r in new] == ["shards", "shards"]
    assert new[1].what == "units 0-0 of 1, attempt 1"  # only the deleted shard's unit
    assert shard.read_bytes() == original
    assert (train_dir(run_dir) / "trained_on.json").stat().st_mtime_ns == trained
    assert "nothing to submit" in rmat("submit", str(config))[1]  # the same manifest: training still counts


def test_preempted_training_checkpoints_is_requeued_and_resumes_exactly(pipeline):
    _, reference, root, _ = pipeline
    config = pipeline_config(root, "requeue")  # same data (skipped) and training config, another run folder
    code, out = rmat("submit", str(config))
    assert code == 0, out
    run_dir = root / "runs" / "requeue"
    (record,) = [r for r in RecordBook(run_dir / "jobs").all() if r.stage == "train"]
    deadline = time.time() + 240
    while not (log := next(run_dir.glob("train-*/losses.jsonl"), None)) or len(log.read_text().splitlines()) < 10:
        assert time.time() < deadline, "training never reached step 10"
        time.sleep(0.1)
    # What SLURM sends every task before a preemption or the time limit (--signal=USR2@...).
    subprocess.run(["scancel", "--signal=USR2", record.job_id], check=True)
    signalled = time.time()
    stopped_at = _wait_for_checkpoint(run_dir)
    while len(log.read_text().splitlines()) <= stopped_at:  # the requeued job has run a step
        assert time.time() < deadline, "the requeued job never resumed"
        time.sleep(0.2)
    resumed = time.time()
    wait_until_finished(run_dir, timeout_s=240)
    print(f"\nsignal at step {stopped_at}, signal to first resumed step: {resumed - signalled:.1f} s")
    assert 10 <= stopped_at < STEPS
    assert [p.name for p in train_dir(reference).glob("checkpoints/step_*")] == [f"step_{STEPS:08d}"]  # never stopped
    checkpoints = sorted(p.name for p in train_dir(run_dir).glob("checkpoints/step_*"))
    assert checkpoints == [f"step_{stopped_at:08d}", f"step_{STEPS:08d}"]
    assert losses(run_dir) == losses(reference)  # every step once, bit for bit as the uninterrupted run
    assert " COMPLETED " in next(line for line in rmat("status", str(run_dir))[1].splitlines()
                                 if line.startswith("evaluate"))


def test_cancel_ends_training_for_good_and_a_later_submit_resumes_it_exactly(pipeline):
    _, reference, root, _ = pipeline
    config = pipeline_config(root, "cancel")  # same data (skipped) and training config, another run folder
    code, out = rmat("submit", str(config))
    assert code == 0, out
    run_dir = root / "runs" / "cancel"
    (train,) = [r for r in RecordBook(run_dir / "jobs").all() if r.stage == "train"]
    _wait_for_steps(run_dir, 10, deadline=time.time() + 240)
    code, out = rmat("cancel", str(run_dir))
    assert code == 0 and f"cancelled train job {train.job_id} (RUNNING)" in out, out
    cancelled = time.time()
    states = wait_until_finished(run_dir, timeout_s=60)
    ended = time.time() - cancelled
    assert {r.stage: states[r.job_id].split()[0] for r in RecordBook(run_dir / "jobs").all()
            if r.stage in ("train", "evaluate")} == {"train": "CANCELLED", "evaluate": "CANCELLED"}, states
    while time.time() < cancelled + 30:  # a requeued job was RUNNING again ~15 s after its cancel
        queued = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True).stdout.strip()
        assert not queued, f"the cancelled training came back: {queued}"
        time.sleep(1)
    assert not _processes_of_job(train.job_id)
    stopped_at = int(next(run_dir.glob("train-*/checkpoints/latest")).read_text().removeprefix("step_"))
    assert 10 <= stopped_at < STEPS and losses(run_dir)[-1][0] == stopped_at  # checkpointed where it stopped
    print(f"\ncancel at step {stopped_at}: every job ended {ended:.1f} s after the cancel")

    code, out = rmat("submit", str(config))
    resubmitted = [line.split()[0] for line in out.splitlines() if " job " in line]
    assert code == 0 and resubmitted == ["train", "evaluate", "export"]
    wait_until_finished(run_dir, timeout_s=300)
    assert losses(run_dir) == losses(reference)  # resumed from the checkpoint, bit for bit


def _wait_for_steps(run_dir: Path, steps: int, deadline: float) -> None:
    while not (log := next(run_dir.glob("train-*/losses.jsonl"), None)) or len(log.read_text().splitlines()) < steps:
        assert time.time() < deadline, f"training never reached step {steps}"
        time.sleep(0.1)


def _processes_of_job(job_id: str) -> list[int]:
    """Processes on this machine that run in SLURM job ``job_id`` (its tasks and what they started)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"SLURM_JOB_ID={job_id}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _wait_for_checkpoint(run_dir: Path, timeout_s: float = 60) -> int:
    """The step of the checkpoint the signalled training wrote (checkpoint.every=0: only on a stop)."""
    deadline = time.time() + timeout_s
    while not (pointer := next(run_dir.glob("train-*/checkpoints/latest"), None)):
        assert time.time() < deadline, "no checkpoint after the signal"
        time.sleep(0.1)
    return int(pointer.read_text().removeprefix("step_"))
