"""The report folder of ``rmat compare --out DIR``: PNG figures, ``report.md`` embedding them, ``compare.json``.

Every file is written under a temporary name and renamed into place: a reader (or a
report being regenerated) never sees half a file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

from data_prep.atomic import write_atomic
from pipeline.compare.plots import loss_curves, position_losses
from pipeline.compare.store import RunData
from pipeline.compare.summary import Comparison
from pipeline.compare.tables import as_markdown, build_tables, notes

LOSS_PNG, POSITION_PNG = "loss_vs_tokens.png", "position_loss.png"
REPORT_MD, NUMBERS_JSON = "report.md", "compare.json"


def numbers(c: Comparison, uri: str) -> dict:
    """Everything the tables show, as JSON: per run its summary, the budget, every param per run."""
    return {"tracking_uri": uri, "budget": asdict(c.budget), "runs": [asdict(r) for r in c.runs],
            "params": c.params, "differing_params": sorted(c.differing()), "notes": notes(c)}


def markdown(c: Comparison, uri: str, show_all: bool) -> str:
    """The report: where the runs come from, the figures, then the tables and notes."""
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    head = [f"# Comparison of {len(c.runs)} runs", "", f"Tracking store: `{uri}`; read {when}.", "",
            f"![train and val loss against tokens seen]({LOSS_PNG})", "",
            f"![val loss by position]({POSITION_PNG})", ""]
    return "\n".join(head) + as_markdown(build_tables(c, show_all), notes(c))


def write_report(out_dir: str, c: Comparison, runs: list[RunData], uri: str, show_all: bool) -> list[str]:
    """Write the report folder (created if needed); returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    files = {LOSS_PNG: loss_curves(runs), POSITION_PNG: position_losses(c.runs),
             NUMBERS_JSON: json.dumps(numbers(c, uri), indent=1).encode(),
             REPORT_MD: markdown(c, uri, show_all).encode()}
    paths = []
    for name, data in files.items():
        path = os.path.join(out_dir, name)
        write_atomic(path, data)
        paths.append(path)
    return paths
