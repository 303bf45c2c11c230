"""A run killed with SIGKILL and resumed gives the losses of a run that never stopped, to the bit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from pipeline.train.checkpoint import latest_meta
from tests.pipeline.conftest import REPO, read_jsonl, run_train, train_command

STEPS, EVERY, KILL_AFTER = 24, 5, 13
# The outbox takes points every 0.1 s, so that those of the steps past the checkpoint reach it (and MLflow)
# before the kill: the resumed run redoes those steps and must not log them again.
FAST_OUTBOX = "tracking.flush_seconds=0.1"


def _losses(run_dir: str) -> dict[int, str]:
    """step -> loss as float.hex(); a step logged twice (redone after a resume) keeps the last."""
    return {r["step"]: r["loss_hex"] for r in read_jsonl(os.path.join(run_dir, "losses.jsonl"))}


def _kill_at_step(run_dir: str, shards: str, step: int) -> None:
    proc = subprocess.Popen(train_command(run_dir, shards, f"steps={STEPS}", f"checkpoint.every={EVERY}", FAST_OUTBOX),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = os.path.join(run_dir, "losses.jsonl")
    deadline = time.monotonic() + 240
    while not (os.path.exists(log) and len(read_jsonl(log)) >= step):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, with no chance to clean up
    proc.wait()


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> dict:
    """An uninterrupted run, and the same run killed at step 13 and started again."""
    reference, killed = str(tmp_path_factory.mktemp("reference")), str(tmp_path_factory.mktemp("killed"))
    out = run_train(reference, shards, f"steps={STEPS}", f"checkpoint.every={EVERY}")
    assert out.returncode == 0, out.stderr[-3000:]
    _kill_at_step(killed, shards, KILL_AFTER)
    logged_before_kill = len(read_jsonl(os.path.join(killed, "losses.jsonl")))
    resumed_from = latest_meta(killed)["step"]
    out = run_train(killed, shards, f"steps={STEPS}", f"checkpoint.every={EVERY}", FAST_OUTBOX)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"reference": reference, "killed": killed, "logged_before_kill": logged_before_kill,
            "resumed_from": resumed_from, "resumed_stdout": out.stdout}


def test_sigkill_then_resume_gives_bitwise_equal_losses(runs):
    reference, killed, logged = runs["reference"], runs["killed"], runs["logged_before_kill"]
    assert runs["resumed_from"] < logged  # some steps were lost and had to be redone
    records = read_jsonl(os.path.join(killed, "losses.jsonl"))
    assert [r["step"] for r in records[logged:]] == list(range(runs["resumed_from"] + 1, STEPS + 1))
    assert _losses(killed) == _losses(reference)
    first_pass = {r["step"]: r["loss_hex"] for r in records[:logged]}
    assert all(_losses(reference)[s] == h for s, h in first_pass.items())


def test_resumed_run_continues_the_same_mlflow_run(runs):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs['killed']}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("rmat").experiment_id])
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "perf/step_time_s"):  # exactly one point per step: the redone steps add none
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == list(range(1, STEPS + 1)), key


def test_tokens_seen_count_on_through_a_resume_as_in_a_run_that_never_stopped(runs):
    from mlflow.tracking import MlflowClient

    def tokens(run_dir: str) -> dict[int, float]:
        client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
        (run,) = client.search_runs([client.get_experiment_by_name("rmat").experiment_id])
        return {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/tokens")}

    reference = tokens(runs["reference"])
    assert sorted(reference) == list(range(1, STEPS + 1))
    assert all(reference[s] > reference[s - 1] > 0 for s in range(2, STEPS + 1))
    assert tokens(runs["killed"]) == reference


def test_a_run_killed_before_its_first_checkpoint_leaves_its_mlflow_run_killed_not_running(shards, tmp_path):
    run_dir = str(tmp_path)
    proc = subprocess.Popen(train_command(run_dir, shards, "steps=1000000", "checkpoint.every=0"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_id_file, deadline = os.path.join(run_dir, "mlflow_run_id"), time.monotonic() + 240
    while not os.path.exists(run_id_file):  # the first attempt reached MLflow
        assert proc.poll() is None and time.monotonic() < deadline, "the first attempt never reached MLflow"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(run_id_file) as f:
        first = f.read().strip()
    out = run_train(run_dir, shards, "steps=3", "checkpoint.every=0")  # no checkpoint: a fresh start
    assert out.returncode == 0, out.stderr[-3000:]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("rmat").experiment_id])
    assert sorted((r.info.run_id == first, r.info.status) for r in runs) == [(False, "FINISHED"), (True, "KILLED")]


def test_resume_with_another_world_size_is_refused(runs, shards):
    out = run_train(runs["killed"], shards, f"steps={STEPS + 5}", nproc=1)
    assert out.returncode == 2
    assert "written by 2 process(es)" in out.stderr and "--nproc 2" in out.stderr
    assert max(r["step"] for r in read_jsonl(os.path.join(runs["killed"], "losses.jsonl"))) == STEPS


def test_resume_with_another_model_is_refused(runs, shards):
    out = run_train(runs["killed"], shards, f"steps={STEPS + 5}", "model.pool=attn", "model.mem_slots=8")
    assert out.returncode == 2
    assert "holds another model (model.mem_slots, model.pool differ)" in out.stderr and "run_dir" in out.stderr


def test_sigterm_checkpoints_the_current_step_then_the_run_continues(shards, tmp_path):
    run_dir = str(tmp_path)
    proc = subprocess.Popen(train_command(run_dir, shards, "steps=500", "checkpoint.every=0"), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    log = os.path.join(run_dir, "losses.jsonl")
    while not (os.path.exists(log) and len(read_jsonl(log)) >= 5):
        assert proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the launcher, which passes it on to both ranks
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped by a signal" in stdout
    stopped_at = read_jsonl(log)[-1]["step"]
    assert stopped_at < 500 and latest_meta(run_dir)["step"] == stopped_at

    out = run_train(run_dir, shards, f"steps={stopped_at + 3}", "checkpoint.every=0")
    assert out.returncode == 0, out.stderr[-3000:]
    assert [r["step"] for r in read_jsonl(log)] == list(range(1, stopped_at + 4))


def test_only_the_last_k_checkpoints_are_kept(runs):
    root = os.path.join(runs["reference"], "checkpoints")
    steps = sorted(name for name in os.listdir(root) if name.startswith("step_"))
    assert steps == ["step_00000020", "step_00000024"]  # checkpoint.keep=2 of 5, 10, 15, 20, 24
    with open(os.path.join(root, "latest")) as f:
        assert f.read() == "step_00000024"


def test_training_says_how_long_its_start_up_and_last_checkpoint_took(runs):
    out = runs["resumed_stdout"]
    assert re.search(r"rmat train: start-up took \d+\.\d s \(1 thread\(s\) per process, 2 process\(es\), "
                     rf"device cpu, from step {runs['resumed_from']}\)", out), out
    assert re.search(rf"rmat train: checkpoint at step {STEPS} took \d+\.\d\d s", out), out
    with open(os.path.join(runs["killed"], "timings.json")) as f:
        timings = json.load(f)
    assert timings["checkpoint_step"] == STEPS and 0 < timings["checkpoint_s"] < timings["startup_s"], timings
