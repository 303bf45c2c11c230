"""Sweeps: the grid of a pipeline's ``sweep`` section, each point one training over the same data.

``sweep: {train.model.pool: [mean, attn], train.optim.lr: [3e-3, 1e-3]}`` (or ``rmat submit
--sweep train.model.pool=mean,attn ...``) makes 4 points, in the order of the keys and their
values. Data prep runs once; each point gets its own train, evaluate and export stages,
named ``train-p<n>`` etc. (n from 1), whose training folder is keyed by its own config, so a
resubmission skips the points that are complete. A pipeline without a sweep is one point
whose stages keep their plain names.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pipeline.pipeline_config import SWEPT, PipelineConfig, with_overrides

POINT_STAGES = ("train", "evaluate", "export")  # one of each per point


@dataclass(frozen=True)
class SweepPoint:
    """One point of the grid: its position (from 1) and the value of each swept key."""

    index: int
    values: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        """``model.pool=attn optim.lr=0.001``: the training keys as ``rmat train`` spells them."""
        return " ".join(f"{k.removeprefix(SWEPT)}={v}" for k, v in self.values)

    def stage(self, name: str) -> str:
        """The name of this point's ``name`` stage (``train-p2``), or ``name`` for a pipeline without a sweep."""
        return f"{name}-p{self.index}" if self.values else name


def grid(cfg: PipelineConfig) -> list[SweepPoint]:
    """Every combination of the swept values, the last key varying fastest; one empty point without a sweep."""
    keys = list(cfg.sweep)
    return [SweepPoint(i, tuple(zip(keys, combo, strict=True)))
            for i, combo in enumerate(itertools.product(*cfg.sweep.values()), start=1)]


def point_config(cfg: PipelineConfig, point: SweepPoint) -> PipelineConfig:
    """The pipeline config this point trains with: the swept keys set to its values."""
    if not point.values:
        return cfg
    return with_overrides(cfg, [f"{k}={v}" for k, v in point.values], f"sweep point p{point.index} ({point.label})")
