"""benchmarks/context_scaling.py: a smoke run times RMAT, a variant and full attention at every length."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("clock", [[], ["--one-thread"]], ids=["wall", "one_thread"])
def test_smoke_run_prints_a_row_per_context_with_the_variant_beside_the_default(clock):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "context_scaling.py"), "--smoke", *clock,
           "--variant", "tok:token_shift=true,mem_tokens_per_chunk=4,mem_slots=48"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    header = next(line for line in run.stdout.splitlines() if line.startswith("context |"))
    assert [h.strip() for h in header.split("|")][-3:] == ["tok us/tok", "tok / RMAT", "tok speedup"]
    rows = [[c.strip() for c in line.split("|")] for line in run.stdout.splitlines()
            if line.strip()[:1].isdigit() and "|" in line]
    assert [r[0] for r in rows] == ["1024", "2048"]
    for r in rows:  # RMAT, full attention and the variant each timed: positive times, ratios that agree
        rmat, full, variant = float(r[1]), float(r[4]), float(r[8])
        assert min(rmat, full, variant) > 0
        assert float(r[9].rstrip("x")) == pytest.approx(variant / rmat, abs=0.01)
    assert "tok time per token, slowest vs fastest context" in run.stdout
    assert ("1 threads, timed on the CPU time of that thread" in run.stdout) == bool(clock)
