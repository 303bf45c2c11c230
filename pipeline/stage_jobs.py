"""What each stage's job runs: module-level functions of picklable arguments (submitit pickles by reference)."""

from __future__ import annotations

from data_prep.config import PrepConfig
from data_prep.prep import run_prep
from orchestration.array import ArrayExecutor, ArraySettings
from orchestration.launcher import Launcher
from orchestration.records import RecordBook
from orchestration.resources import Resources


def prep_stage(cfg: PrepConfig, stage: str, cluster: str, logs: str, records: str, units: Resources,
               array: ArraySettings) -> str:
    """One data-prep stage; its units run as job arrays of the same cluster. Returns the stage's summary."""
    executor = ArrayExecutor(Launcher(cluster, logs), units, stage, array, RecordBook(records))
    return run_prep(cfg, stage=stage, executor=executor).summaries[stage]
