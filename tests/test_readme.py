"""Every ``rmat`` command the README shows runs as written on a fresh clone, in the README's order.

The commands run in a folder holding only a copy of ``configs/`` (what a clone has after
``bash scripts/bootstrap.sh``), each with a few overrides appended that shrink it to
seconds (2 training steps, 2 evaluation documents): what is tested is that the command
parses, its config loads and everything it needs exists. The README's other commands are
listed in NOT_RUN with the reason, so that a new one cannot slip in untested.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.pipeline.conftest import rmat

ROOT = Path(__file__).resolve().parents[1]
SHRINK = {
    "quickstart": ["steps=2", "eval.max_docs=2", "engine.threads_per_proc=1"],
    "train": ["steps=2", "eval.max_docs=2", "engine.threads_per_proc=1"],
    "submit": ["train.steps=2", "train.eval.max_docs=2", "evaluate.max_docs=2", "evaluate.passkey.samples=2",
               "train.engine.threads_per_proc=1"],
}
NOT_RUN = {
    "bash scripts/bootstrap.sh": "the install this test runs in",
    "bash scripts/test.sh": "the suite this test is part of",
    "python benchmarks/": "measurements of minutes, run by hand",
    "mlflow ui ": "a server for people to browse",
    "pip install ": "an optional extra",
    "orchestration/dev_cluster.sh up": "tests/orchestration starts and stops it",
}


def readme_commands() -> list[str]:
    """The commands of the README's bash blocks and inline code, in order (comments and ``&&`` split off)."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block, prose in re.findall(r"```bash\n(.*?)```|([^`]+(?:`[^`\n]+`[^`]*?)*)", text, re.S):
        if block:
            lines = [line.split(" #")[0].strip() for line in block.splitlines() if not line.startswith("#")]
            commands += [part.strip() for line in lines if line for part in line.split("&&")]
        else:
            commands += [span for span in re.findall(r"`([^`\n]+)`", prose) if _is_command(span)]
    return commands


def _is_command(span: str) -> bool:
    words = span.split()
    if "..." in span or not words:
        return False
    if words[0] in ("rmat", ".venv/bin/rmat"):
        return len(words) >= 3 or words[1:] == ["quickstart"]  # `rmat train` alone names the command
    return any(span.startswith(prefix) for prefix in NOT_RUN)


def test_every_repository_file_the_readme_names_exists():
    folders = ("model", "data_prep", "pipeline", "orchestration", "configs", "docs", "benchmarks", "scripts", "tests")
    text = (ROOT / "README.md").read_text()
    named = {m for m in re.findall(r"`([\w./-]+)`|\]\(([\w./-]+)\)", text) for m in m if m}
    files = {p.rstrip("/") for p in named if (p.endswith(".md") and "/" not in p) or p.split("/")[0] in folders}
    assert files and {f for f in files if "<" not in f and not (ROOT / f).exists()} == set()


def test_every_readme_command_is_run_or_listed_with_a_reason():
    for command in readme_commands():
        runs = command.split()[0] in ("rmat", ".venv/bin/rmat")
        assert runs or any(command.startswith(prefix) for prefix in NOT_RUN), command


@pytest.mark.slow
def test_readme_commands_run_as_written_on_a_fresh_clone(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    for command in readme_commands():
        argv = shlex.split(command)
        if argv[0] not in ("rmat", ".venv/bin/rmat"):
            continue
        code, out = rmat(*argv[1:], *SHRINK.get(argv[1], []))
        assert code == 0, f"{command}\n{out}"
