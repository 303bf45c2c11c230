"""The comparison's figures as PNG bytes (matplotlib's Agg backend: no display needed).

Loss is drawn against tokens seen, so runs of other batch sizes, segment lengths or
lengths line up; a long run's train curve is averaged down to ``MAX_POINTS`` points
(consecutive steps pooled), which keeps its trend and drops the step-to-step noise.
"""

from __future__ import annotations

import numpy as np

from pipeline.compare.store import RunData
from pipeline.compare.summary import TRAIN_LOSS, VAL_LOSS, RunSummary, tokens_axis
from pipeline.compare.tables import short_id
from pipeline.figures import panels, png

MAX_POINTS = 500


def downsample(curve: list[tuple[float, float]], max_points: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most ``max_points`` points: the means of runs of consecutive points."""
    if len(curve) <= max_points:
        return curve
    return [(float(chunk[:, 0].mean()), float(chunk[:, 1].mean()))
            for chunk in np.array_split(np.asarray(curve, dtype=np.float64), max_points)]


def loss_curves(runs: list[RunData]) -> bytes:
    """Train loss (left) and val loss (right) of every run against tokens seen, on one x range."""
    fig, (train_ax, val_ax) = panels(2)
    for run in runs:
        label = f"{short_id(run.run_id)} {run.name}"
        train = downsample(tokens_axis(run.history, TRAIN_LOSS))
        if train:
            train_ax.plot(*zip(*train, strict=True), label=label, linewidth=1)
        val = tokens_axis(run.history, VAL_LOSS)
        if val:
            val_ax.plot(*zip(*val, strict=True), marker="o", markersize=3, label=label)
    for ax, title in ((train_ax, "train loss"), (val_ax, "val loss")):
        ax.set(title=title, xlabel="tokens seen", ylabel="loss")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    val_ax.sharex(train_ax)
    return png(fig)


def position_losses(summaries: list[RunSummary]) -> bytes:
    """Each run's val loss per position bucket of its last evaluation (does the memory help later tokens?)."""
    fig, (ax,) = panels(1)
    buckets = sorted({b for s in summaries for b in s.position_loss})
    for s in summaries:
        xs = [i for i, b in enumerate(buckets) if b in s.position_loss]
        if xs:
            ax.plot(xs, [s.position_loss[buckets[i]] for i in xs], marker="o", markersize=3,
                    label=f"{short_id(s.run_id)} {s.name}")
    ax.set_xticks(range(len(buckets)), [b.split("_", 2)[2] for b in buckets], rotation=45, ha="right",
                  fontsize="small")
    ax.set(title="val loss by position (tokens from the document's start)", xlabel="token positions",
           ylabel="loss")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    return png(fig)
