"""The pipeline's stages, one module each: ``prep`` (ingest, tokenizer, shards), ``train``, ``evaluate``, ``export``.

Each module owns its stage's output folder, says from that output alone whether the
stage is ``complete``, gives the job's ``run`` (a module-level function of picklable
arguments: submitit pickles calls by reference) and builds its ``Stage``.
``pipeline/stage_graph.py`` lists them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestration.resources import Resources


@dataclass
class Stage:
    """One node of the graph: a job to submit unless ``complete``."""

    name: str
    fn: Callable[..., Any]
    args: tuple
    resources: Resources
    after: list[str] = field(default_factory=list)  # stages that must succeed first
    complete: bool = False
    detail: str = ""  # what is done or missing, for people
    output: str = ""  # the stage's output folder
    time_budget: str = ""  # where a job's time limit interrupts it: what each attempt spends besides working
    refused: str = ""  # why its time limit cannot work under a scheduler; ``rmat submit`` then submits nothing
