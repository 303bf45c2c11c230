"""The decoding-latency benchmark runs end to end on a tiny model and prints one row per prompt length."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_prints_torch_onnx_and_full_attention_latency_per_prompt_length():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate_latency.py"), "--smoke"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    point = r"\s*([\d.]+) \(([\d.]+)\)"
    rows = re.findall(rf"^\s*(\d+) \|{point} \|{point} \|{point}$", out.stdout, re.M)
    assert [r[0] for r in rows] == ["32", "128"]
    assert all(float(x) > 0 for r in rows for x in r[1:])
    for clock in ("cpu", "wall"):
        assert re.search(rf"spread across lengths \({clock}\): torch \d+%, onnxruntime \d+%, full attention \d+%",
                         out.stdout)
