"""Shards in object storage: a real S3 server (moto_server over HTTP) started by the test.

Credentials and endpoint come from the standard environment variables only. The server
runs in its own session and is stopped by its pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import fsspec
import pytest

from pipeline.config import ConfigError
from pipeline.pipeline_config import load_pipeline
from pipeline.stage_graph import build_graph
from pipeline.train.loader import open_split, read_documents
from tests.pipeline.conftest import REPO, pipeline_yaml, read_jsonl, run_train, train_command
from tests.s3_server import s3_environment, start_server, stop_server

BUCKET = "rmat-shards"


@pytest.fixture(scope="module")
def s3_shards(shards):
    """The byte-token shards copied into a bucket of a fresh S3 server; their s3:// URL."""
    proc, endpoint = start_server()
    try:
        with s3_environment(endpoint):
            fs = fsspec.filesystem("s3")
            fs.mkdir(BUCKET)
            fs.put(shards.rstrip("/") + "/", f"{BUCKET}/shards/", recursive=True)
            yield f"s3://{BUCKET}/shards"
    finally:
        stop_server(proc)


def test_the_loader_reads_the_same_documents_from_a_bucket(s3_shards, shards):
    remote, local = open_split(s3_shards, "train"), open_split(shards, "train")
    assert remote.manifest_hash == local.manifest_hash
    got, want = read_documents(remote, 1000), read_documents(local, 1000)
    assert len(got) == len(want) == 96
    assert all((a == b).all() and da == db for (a, da, _), (b, db, _) in zip(got, want, strict=True))


def test_a_pipeline_with_publish_to_trains_from_the_published_shard_folder(s3_shards, tmp_path):
    cfg = load_pipeline(pipeline_yaml(tmp_path), [f"data.publish_to=s3://{BUCKET}/pipeline"])
    shards_stage, train_stage = build_graph(cfg, "local")[2:4]
    (t,) = train_stage.fn.args
    assert t.data.shards == f"s3://{BUCKET}/pipeline/{os.path.basename(shards_stage.output)}"


def test_a_missing_bucket_is_an_error_naming_the_url(s3_shards):
    with pytest.raises(ConfigError, match=r"s3://no-such-rmat-bucket/shards/manifest.json: .*bucket does not exist"):
        open_split("s3://no-such-rmat-bucket/shards", "train")


def test_denied_access_is_an_error_naming_the_url(s3_shards):
    proc, endpoint = start_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # checks keys: ours are unknown
    try:
        denied = rf"access to {s3_shards}/manifest.json was denied .*AWS_ACCESS_KEY_ID"
        with s3_environment(endpoint), pytest.raises(ConfigError, match=denied):
            open_split(s3_shards, "train")
    finally:
        stop_server(proc)


def _kill_after(run_dir: str, shards: str, steps: int, *overrides: str) -> None:
    """Start `rmat train`, SIGKILL its whole session once ``steps`` losses are logged."""
    proc = subprocess.Popen(train_command(run_dir, shards, *overrides), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    log, deadline = os.path.join(run_dir, "losses.jsonl"), time.monotonic() + 240
    while not (os.path.exists(log) and len(read_jsonl(log)) >= steps):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_two_processes_killed_and_resumed_from_a_bucket_log_the_losses_of_local_shards(s3_shards, shards, tmp_path):
    reference, remote = str(tmp_path / "local"), str(tmp_path / "s3")
    args = ("steps=8", "checkpoint.every=3")
    assert run_train(reference, shards, *args).returncode == 0
    _kill_after(remote, s3_shards, 5, *args)
    resumed = run_train(remote, s3_shards, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def losses(run_dir):  # a step logged twice (redone after the resume) keeps the last
        return {r["step"]: r["loss_hex"] for r in read_jsonl(os.path.join(run_dir, "losses.jsonl"))}

    assert losses(remote) == losses(reference) and sorted(losses(remote)) == list(range(1, 9))
    assert len(read_jsonl(os.path.join(remote, "losses.jsonl"))) > 8  # steps after the checkpoint were redone
