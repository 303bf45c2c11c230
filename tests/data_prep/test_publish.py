"""Object storage in data prep: corpora read from a bucket, shards published to one (a real moto_server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import fsspec
import pytest
from dataprep_helpers import small_config

from data_prep.atomic import PrepError
from data_prep.config import PrepConfig, SourceConfig
from data_prep.executor import LocalExecutor
from data_prep.ingest import run_ingest
from data_prep.prep import prep_status, run_prep
from data_prep.shards import read_manifest
from pipeline.config import to_yaml
from tests.s3_server import s3_environment, start_server, stop_server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUCKET = "rmat-prep"


@pytest.fixture(scope="module")
def s3():
    proc, endpoint = start_server()
    try:
        with s3_environment(endpoint):
            fsspec.filesystem("s3").mkdir(BUCKET)
            yield fsspec.filesystem("s3")
    finally:
        stop_server(proc)


def names(fs, prefix: str) -> list[str]:
    """The objects under ``prefix`` now (listing only: the publisher may move one meanwhile)."""
    fs.invalidate_cache()
    return fs.find(prefix)


def objects(fs, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix``, by name relative to it, with its bytes."""
    fs.invalidate_cache()  # other processes wrote there
    return {p[len(prefix) + 1:]: fs.cat_file(p) for p in fs.find(prefix)}


def test_prep_publishes_every_shard_and_the_manifest_to_a_bucket(s3, corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "out")
    cfg.publish_to = f"s3://{BUCKET}/clean"
    lines: list[str] = []
    result = run_prep(cfg, log=lines.append)
    local = result.folders["shards"]
    url = result.folders["publish"]
    assert url == f"s3://{BUCKET}/clean/{os.path.basename(local)}" and lines[-1].startswith("publish: ")
    remote = objects(s3, url.removeprefix("s3://"))
    manifest = read_manifest(url)
    assert manifest == read_manifest(local) and len(manifest["shards"]) > 3
    for shard in manifest["shards"]:
        with open(os.path.join(local, shard["path"]), "rb") as f:
            assert remote[shard["path"]] == f.read()
    assert not [name for name in remote if ".tmp-" in name]
    assert run_prep(cfg, log=lines.append).summaries["publish"].startswith("publish: done already")


def test_a_publish_killed_midway_and_rerun_leaves_the_objects_of_a_clean_publish(s3, corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "out")
    cfg.publish_to = f"s3://{BUCKET}/reference"
    reference = run_prep(cfg, log=lambda *_: None).folders["publish"].removeprefix("s3://")
    config = tmp_path / "prep.yaml"
    config.write_text(to_yaml(cfg))
    command = [sys.executable, "-m", "pipeline.cli", "prep", str(config), f"publish_to=s3://{BUCKET}/killed"]
    proc = subprocess.Popen(command, cwd=REPO, env={**os.environ, "RMAT_PUBLISH_DELAY": "0.3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    killed = f"{BUCKET}/killed/{os.path.basename(reference)}"
    deadline = time.monotonic() + 120
    while not [name for name in names(s3, killed) if name.endswith(".tar")]:  # a shard is published, more to go
        assert proc.poll() is None and time.monotonic() < deadline, "the publish ended before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "manifest.json" not in objects(s3, killed)
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert objects(s3, killed) == objects(s3, reference)


def test_publishing_to_a_missing_bucket_is_an_error_naming_the_url(s3, corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "out")
    cfg.publish_to = "s3://no-such-rmat-bucket/prep"
    with pytest.raises(PrepError, match=r"publish_to='s3://no-such-rmat-bucket/prep': .*bucket does not exist"):
        run_prep(cfg, log=lambda *_: None)


def test_sources_are_read_from_a_bucket(s3, tmp_path):
    for i in range(3):
        s3.pipe_file(f"{BUCKET}/corpus/doc{i}.txt", f"text number {i}\n".encode())
    source = SourceConfig(name="s", urls=[f"s3://{BUCKET}/corpus/*.txt"])
    cfg = PrepConfig(out_dir=str(tmp_path / "out"), sources=[source])
    plan, manifest = run_ingest(cfg, LocalExecutor(1))
    assert manifest["documents"] == 3
    with open(os.path.join(plan.folder, "train.jsonl")) as f:
        assert all(json.loads(line)["name"].startswith(f"s3://{BUCKET}/corpus/doc") for line in f)


def test_the_shard_stage_is_complete_only_once_published(s3, corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "out")
    run_prep(cfg, log=lambda *_: None)
    assert prep_status(cfg)[-1].complete
    cfg.publish_to = f"s3://{BUCKET}/later"
    shards = prep_status(cfg)[-1]
    assert not shards.complete
    assert shards.detail == f"to publish to s3://{BUCKET}/later/{os.path.basename(shards.folder)}"
    run_prep(cfg, stage="shards", log=lambda *_: None)
    assert prep_status(cfg)[-1].complete
