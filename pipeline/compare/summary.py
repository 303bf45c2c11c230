"""The numbers ``rmat compare`` reports, computed from runs as the store holds them (no MLflow here).

Runs of unequal length compare fairly on tokens seen (``train/tokens``, logged at every
step and evaluation), not on steps: the *budget* is the largest count of tokens every run
reached, and each run's loss there is read off its own curve.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from pipeline.compare.store import Point, RunData

TOKENS, TRAIN_LOSS, VAL_LOSS = "train/tokens", "train/loss", "val/loss"
TOKENS_PER_S, MFU = "perf/tokens_per_s", "perf/mfu"
PER_STEP = ("train/", "perf/")  # logged at every `tracking.log_every`-th step: a missing step is a gap
EXPECTED = (TRAIN_LOSS, TOKENS, VAL_LOSS, TOKENS_PER_S, MFU)
DOMAIN_LOSS = re.compile(r"^val/(?!pos_)([^/]+)/loss$")
POSITION_LOSS = re.compile(r"^val/(pos_\d+_\d+-\d+)/loss$")
TRAIN_WINDOW = 0.05  # the train loss at a budget: the mean over the last 5% of the tokens before it


@dataclass
class Integrity:
    """Steps that break "exactly one point per step per metric"."""

    duplicates: dict[str, list[int]] = field(default_factory=dict)  # metric -> steps holding several points
    gaps: dict[str, list[int]] = field(default_factory=dict)  # per-step metric -> steps holding none

    @property
    def clean(self) -> bool:
        return not self.duplicates and not self.gaps


@dataclass
class RunSummary:
    """One run's numbers; None (or absent keys) where the run has not logged what they need."""

    run_id: str
    name: str
    status: str
    steps: Optional[int]  # the last step with a train loss
    tokens: Optional[float]  # tokens seen at that step
    wall_time_s: float  # start to end, or to now for a run in progress
    val_final: dict[str, float]  # "loss" and each domain: the last evaluation's loss
    val_best: dict[str, float]  # the lowest of every evaluation
    tokens_per_s: Optional[float]  # median over the logged steps
    mfu: Optional[float]  # median over the logged steps
    position_loss: dict[str, float]  # "pos_<bb>_<first>-<end>" -> the last evaluation's val loss there
    at_budget: dict[str, float] = field(default_factory=dict)  # "train/loss", "val/loss", "val/<domain>/loss"
    missing: list[str] = field(default_factory=list)  # expected metrics the run has not logged
    integrity: Integrity = field(default_factory=Integrity)

    @property
    def in_progress(self) -> bool:
        return self.status in ("RUNNING", "SCHEDULED")


@dataclass
class Budget:
    """The largest count of tokens every run reached: in training, and at an evaluation."""

    train_tokens: Optional[float]
    val_tokens: Optional[float]


@dataclass
class Comparison:
    runs: list[RunSummary]
    budget: Budget
    params: dict[str, list[Optional[str]]]  # every param key -> its value in each run (None: not set)

    def differing(self) -> dict[str, list[Optional[str]]]:
        """The params whose values are not the same in every run."""
        return {k: v for k, v in self.params.items() if len(set(v)) > 1}


def compare(runs: list[RunData], now_ms: Optional[int] = None) -> Comparison:
    """Every run's summary, the common budget and each run's losses at it, and the runs' params side by side."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    summaries = [summarize(r, now_ms) for r in runs]
    budget = common_budget(runs)
    for run, summary in zip(runs, summaries, strict=True):
        summary.at_budget = losses_at_budget(run, budget)
    keys = sorted({k for r in runs for k in r.params})
    return Comparison(summaries, budget, {k: [r.params.get(k) for r in runs] for k in keys})


def summarize(run: RunData, now_ms: int) -> RunSummary:
    """The run's own numbers: final and best val losses, throughput, wall time, position buckets, integrity."""
    h = run.history
    train = h.get(TRAIN_LOSS, [])
    steps = train[-1].step if train else None
    return RunSummary(
        run_id=run.run_id, name=run.name, status=run.status, steps=steps,
        tokens=_value_at_step(h.get(TOKENS, []), steps) if steps is not None else None,
        wall_time_s=((run.end_ms or now_ms) - run.start_ms) / 1000,
        val_final={k: points[-1].value for k, points in val_losses(h).items()},
        val_best={k: min(p.value for p in points) for k, points in val_losses(h).items()},
        tokens_per_s=_median(h.get(TOKENS_PER_S)), mfu=_median(h.get(MFU)),
        position_loss={m.group(1): points[-1].value for key, points in sorted(h.items())
                       if (m := POSITION_LOSS.match(key)) and points},
        missing=[k for k in EXPECTED if not h.get(k)],
        integrity=integrity(h, int(run.params.get("tracking.log_every", "1"))))


def val_losses(history: dict[str, list[Point]]) -> dict[str, list[Point]]:
    """"loss" -> the overall val loss's points, and each domain's name -> its val loss's points."""
    out = {"loss": history[VAL_LOSS]} if history.get(VAL_LOSS) else {}
    out.update({m.group(1): points for key, points in sorted(history.items())
                if (m := DOMAIN_LOSS.match(key)) and points})
    return out


def integrity(history: dict[str, list[Point]], log_every: int) -> Integrity:
    """Duplicate steps of every metric; missing steps of those logged every ``log_every`` steps."""
    out = Integrity()
    for key, points in sorted(history.items()):
        counts = Counter(p.step for p in points)
        repeated = sorted(s for s, n in counts.items() if n > 1)
        if repeated:
            out.duplicates[key] = repeated
        if key.startswith(PER_STEP) and counts:
            missing = sorted(set(range(log_every, max(counts) + 1, log_every)) - set(counts))
            if missing:
                out.gaps[key] = missing
    return out


def tokens_axis(history: dict[str, list[Point]], key: str) -> list[tuple[float, float]]:
    """(tokens seen, value) of each point of ``key`` whose step has a token count; in step order."""
    tokens = {p.step: p.value for p in history.get(TOKENS, [])}
    return [(tokens[p.step], p.value) for p in _one_per_step(history.get(key, [])) if p.step in tokens]


def common_budget(runs: list[RunData]) -> Budget:
    """The largest token count every run reached in training, and at an evaluation (None if a run has no axis)."""
    trained = [tokens_axis(r.history, TRAIN_LOSS) for r in runs]
    evaluated = [tokens_axis(r.history, VAL_LOSS) for r in runs]
    return Budget(train_tokens=min((t[-1][0] for t in trained), default=None) if all(trained) else None,
                  val_tokens=min((v[-1][0] for v in evaluated), default=None) if all(evaluated) else None)


def losses_at_budget(run: RunData, budget: Budget) -> dict[str, float]:
    """The run's train loss (mean over the last ``TRAIN_WINDOW`` of the budget) and val losses (interpolated)."""
    out: dict[str, float] = {}
    if budget.train_tokens is not None:
        curve = tokens_axis(run.history, TRAIN_LOSS)
        window = [v for t, v in curve if budget.train_tokens * (1 - TRAIN_WINDOW) <= t <= budget.train_tokens]
        before = [v for t, v in curve if t <= budget.train_tokens]
        if window or before:
            out[TRAIN_LOSS] = statistics.fmean(window or before[-1:])
    if budget.val_tokens is not None:
        for name in val_losses(run.history):
            key = VAL_LOSS if name == "loss" else f"val/{name}/loss"
            value = interpolate(tokens_axis(run.history, key), budget.val_tokens)
            if value is not None:
                out[key] = value
    return out


def interpolate(curve: list[tuple[float, float]], x: float) -> Optional[float]:
    """The curve's value at ``x``, linear between the points around it; None outside the points."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if curve and curve[-1][0] == x:
        return curve[-1][1]
    return None


def _one_per_step(points: list[Point]) -> list[Point]:
    """The last point of each step (a duplicate is reported by ``integrity``, not drawn twice)."""
    last = {p.step: p for p in points}
    return [last[s] for s in sorted(last)]


def _value_at_step(points: list[Point], step: int) -> Optional[float]:
    return next((p.value for p in reversed(points) if p.step == step), None)


def _median(points: Optional[list[Point]]) -> Optional[float]:
    return statistics.median(p.value for p in points) if points else None
