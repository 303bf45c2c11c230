"""Running a stage's units with skip-if-done, progress and a timing summary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from data_prep.atomic import read_done
from data_prep.executor import Executor, UnitFn


@dataclass
class UnitRun:
    """The records of every unit of a stage (in spec order) and how many ran now."""

    records: list[dict]
    ran: int
    seconds: float


def run_units(name: str, fn: UnitFn, specs: Sequence[Any], executor: Executor, force: bool) -> UnitRun:
    """Run ``fn`` on every spec whose output (``spec.out``) does not verify; ``force`` reruns all."""
    start = time.perf_counter()
    records: list[dict | None] = [None if force else read_done(spec.out) for spec in specs]
    todo = [i for i, r in enumerate(records) if r is None]
    with tqdm(total=len(specs), initial=len(specs) - len(todo), desc=name, unit="unit", disable=None) as bar:
        for j, record in executor.run(fn, [specs[i] for i in todo]):
            records[todo[j]] = record
            bar.update(1)
    return UnitRun(records=records, ran=len(todo), seconds=time.perf_counter() - start)


def count_done(specs: Sequence[Any]) -> int:
    return sum(read_done(spec.out) is not None for spec in specs)
