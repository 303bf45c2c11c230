"""`rmat prep`: the quickstart over the real corpora, --status, --stage, errors as messages."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from dataprep_helpers import small_config

from data_prep.shards import iter_shard, read_manifest
from pipeline.cli import main
from pipeline.config import to_yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quickstart_prepares_all_three_kinds_of_real_text(tmp_path):
    out = tmp_path / "q"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "prep", "configs/data/quickstart.yaml",
                           f"out_dir={out}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["ingest", "tokenizer", "shards"]
    assert "duplicates dropped" in lines[0] and "tokens/s" in lines[2]
    folder = lines[2].rsplit("-> ", 1)[1]
    manifest = read_manifest(folder)
    assert manifest["dtype"] == "uint16" and manifest["splits"]["train"]["tokens"] > 100_000
    domains = set()
    for shard in manifest["shards"]:
        listing = subprocess.run(["tar", "tf", os.path.join(folder, shard["path"])], capture_output=True, text=True)
        samples = -(-shard["tokens"] // manifest["sample_tokens"])  # packed: every sample full but the last
        assert listing.returncode == 0 and len(listing.stdout.splitlines()) == 2 * samples
    for shard in manifest["shards"]:
        domains |= {m["domain"] for _, _, m in iter_shard(os.path.join(folder, shard["path"]), shard["documents"])}
    assert domains == {"documents", "code", "dialogue"}


def test_status_says_what_is_missing_then_what_is_done(corpus, tmp_path, capsys):
    cfg_path = tmp_path / "prep.yaml"
    cfg_path.write_text(to_yaml(small_config(corpus, tmp_path / "out")))
    assert main(["prep", str(cfg_path), "--status"]) == 0
    before = capsys.readouterr().out
    assert re.search(r"^ingest +(\d+) of \1 units to run", before, re.M), before
    assert "shards     units planned once ingest and tokenizer are done" in before
    assert main(["prep", str(cfg_path), "--stage", "ingest"]) == 0
    assert main(["prep", str(cfg_path), "--status"]) == 0
    middle = capsys.readouterr().out
    assert "ingest     done" in middle and "tokenizer  to train" in middle
    assert main(["prep", str(cfg_path)]) == 0
    assert main(["prep", str(cfg_path), "--status"]) == 0
    after = capsys.readouterr().out.splitlines()[-3:]
    assert [line.split()[1] for line in after] == ["done", "done", "done"]
    assert all(os.path.isdir(line.split()[-1]) for line in after)


def test_a_later_stage_alone_asks_for_the_earlier_one(corpus, tmp_path, capsys):
    cfg_path = tmp_path / "prep.yaml"
    cfg_path.write_text(to_yaml(small_config(corpus, tmp_path / "out")))
    assert main(["prep", str(cfg_path), "--stage", "shards"]) == 1
    assert "run `rmat prep CONFIG --stage ingest` first" in capsys.readouterr().err


def test_errors_are_one_line_messages_not_tracebacks(tmp_path, capsys):
    cfg_path = tmp_path / "prep.yaml"
    cfg_path.write_text(f"out_dir: {tmp_path}/out\nsources: [{{name: t, urls: ['{tmp_path}/none/*.txt']}}]\n")
    assert main(["prep", str(cfg_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rmat prep: error: source 't'") and "Traceback" not in err
