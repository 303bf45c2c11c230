"""Imports point one way: pipeline wires model, data_prep and orchestration; those three are leaves.

orchestration only launches (it turns any picklable call into a local or SLURM job),
so it knows nothing of what the stages do. Benchmarks measure the package, so they
import it and never the tests. Inside pipeline, each stage module is a leaf of the
stage list: stages do not import one another's modules.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "model": {"data_prep", "pipeline", "orchestration", "tests"},
    "data_prep": {"model", "pipeline", "orchestration", "tests"},
    "orchestration": {"model", "data_prep", "pipeline", "tests"},
    "pipeline": {"tests"},
    "benchmarks": {"tests"},
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute name ``path`` imports: ``a.b`` and ``a.b.x`` for ``from a.b import x``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_above_it(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


STAGES = sorted(p.stem for p in (ROOT / "pipeline" / "stages").glob("*.py") if p.stem != "__init__")
WIRING = {"pipeline.stage_graph", "pipeline.submit", "pipeline.runs", "pipeline.cli"}


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage_and_nothing_that_wires_stages(stage):
    others = {f"pipeline.stages.{s}" for s in STAGES if s != stage} | WIRING
    assert imported_modules(ROOT / "pipeline" / "stages" / f"{stage}.py") & others == set()


def test_training_knows_nothing_of_stages_jobs_or_the_command():
    above = {f"pipeline.stages.{s}" for s in STAGES} | WIRING | {"pipeline.stages", "orchestration"}
    offenders = {str(path.relative_to(ROOT)): sorted({m for m in imported_modules(path)
                                                      if m in above or m.split(".")[0] in above})
                 for path in sorted((ROOT / "pipeline" / "train").rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}
