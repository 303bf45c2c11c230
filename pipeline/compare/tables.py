"""A comparison as tables (runs are columns), written for the terminal or as Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.compare.summary import TRAIN_LOSS, VAL_LOSS, Comparison, RunSummary

MISSING = "-"
SHOWN_STEPS = 5  # a note lists this many steps of a gap or duplicate, then how many more


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]


def short_id(run_id: str) -> str:
    return run_id[:8]


def build_tables(c: Comparison, show_all: bool) -> list[Table]:
    """Runs, config differences (all params with ``show_all``), val losses, losses at the budget, by position."""
    header = ["run", *(short_id(r.run_id) for r in c.runs)]
    return [Table("runs", header, _run_rows(c.runs)),
            _config_table(c, header, show_all),
            Table("val loss (final and best of every evaluation)", header, _val_rows(c.runs)),
            _budget_table(c, header),
            Table("val loss by position (last evaluation)", header, _position_rows(c.runs))]


def notes(c: Comparison) -> list[str]:
    """What makes a number absent or doubtful: runs in progress, missing metrics, gaps, duplicate steps."""
    out = []
    for r in c.runs:
        who = f"run {short_id(r.run_id)} ({r.name})"
        if r.in_progress:
            out.append(f"{who}: in progress ({r.status}); its numbers are those logged so far")
        if r.missing:
            out.append(f"{who}: has no {', '.join(r.missing)}")
        for key, steps in r.integrity.duplicates.items():
            out.append(f"{who}: {key} holds several points at {len(steps)} step(s): {_steps(steps)}")
        for key, steps in r.integrity.gaps.items():
            out.append(f"{who}: {key} has no point at {len(steps)} step(s): {_steps(steps)}")
    if all(r.integrity.clean for r in c.runs):
        out.append("every run holds exactly one point per step per metric")
    return out


def as_text(tables: list[Table], lines_after: list[str]) -> str:
    """Aligned columns, a title line above each table, then the notes."""
    out: list[str] = []
    for t in tables:
        rows = [t.header, *t.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(t.header))]
        out.append(t.title)
        out.extend("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                   for row in rows)
        out.append("")
    out.extend(["notes", *(f"  {line}" for line in lines_after)])
    return "\n".join(out)


def as_markdown(tables: list[Table], lines_after: list[str]) -> str:
    """Each table under a level-3 heading, then the notes as a list."""
    out: list[str] = []
    for t in tables:
        out += [f"### {t.title}", "", _md_row(t.header), _md_row(["---"] * len(t.header))]
        out += [_md_row(row) for row in t.rows] + [""]
    out += ["### notes", "", *(f"- {line}" for line in lines_after), ""]
    return "\n".join(out)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _run_rows(runs: list[RunSummary]) -> list[list[str]]:
    return [["name", *(r.name for r in runs)],
            ["status", *(r.status + (" (in progress)" if r.in_progress else "") for r in runs)],
            ["steps", *(_int(r.steps) for r in runs)],
            ["tokens seen", *(_int(r.tokens) for r in runs)],
            ["tokens/s (median)", *(_int(r.tokens_per_s) for r in runs)],
            ["MFU (median)", *(_percent(r.mfu) for r in runs)],
            ["wall time", *(duration(r.wall_time_s) for r in runs)]]


def _config_table(c: Comparison, header: list[str], show_all: bool) -> Table:
    differing = c.differing()
    shown = c.params if show_all else differing
    title = (f"config: all {len(c.params)} params ({len(differing)} differ)" if show_all else
             f"config: {len(differing)} of {len(c.params)} params differ (--all shows every one)")
    return Table(title, header, [[key, *(MISSING if v is None else v for v in values)]
                                 for key, values in shown.items()])


def _val_rows(runs: list[RunSummary]) -> list[list[str]]:
    names = _ordered({n for r in runs for n in r.val_final})
    rows = []
    for name in names:
        label = "val loss" if name == "loss" else f"val {name} loss"
        rows.append([f"{label}, final", *(_loss(r.val_final.get(name)) for r in runs)])
        rows.append([f"{label}, best", *(_loss(r.val_best.get(name)) for r in runs)])
    return rows


def _budget_table(c: Comparison, header: list[str]) -> Table:
    b = c.budget
    title = (f"at the largest budget every run reached: train {_int(b.train_tokens)} tokens, "
             f"val {_int(b.val_tokens)} tokens")
    keys = [TRAIN_LOSS, VAL_LOSS, *sorted({k for r in c.runs for k in r.at_budget} - {TRAIN_LOSS, VAL_LOSS})]
    return Table(title, header, [[key, *(_loss(r.at_budget.get(key)) for r in c.runs)] for key in keys])


def _position_rows(runs: list[RunSummary]) -> list[list[str]]:
    buckets = sorted({b for r in runs for b in r.position_loss})
    return [[b, *(_loss(r.position_loss.get(b)) for r in runs)] for b in buckets]


def _ordered(names: set[str]) -> list[str]:
    """The overall loss first, then the domains by name."""
    return sorted(names, key=lambda n: (n != "loss", n))


def _steps(steps: list[int]) -> str:
    shown = ", ".join(str(s) for s in steps[:SHOWN_STEPS])
    return shown + (f" and {len(steps) - SHOWN_STEPS} more" if len(steps) > SHOWN_STEPS else "")


def _loss(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:.4f}"


def _int(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:,.0f}"


def _percent(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value * 100:.2f}%"


def duration(seconds: float) -> str:
    """``1h 02m 03s``, ``2m 03s`` or ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m {s:02d}s" if hours else f"{m}m {s:02d}s"
