"""benchmarks/tbptt_memory.py: a smoke run prints a row per window with both ways of holding it."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_run_prints_memory_and_time_kept_and_recomputed_for_each_window():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tbptt_memory.py"), "--smoke"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    rows = [line.split("|") for line in run.stdout.splitlines() if line.strip()[:1].isdigit() and "|" in line]
    assert [r[0].strip() for r in rows] == ["1", "2"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 and float(r[5]) > 0 for r in rows)
