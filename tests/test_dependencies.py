"""Every third-party package the code imports is a declared dependency of the installed project."""

import re
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

from tests.test_layering import imported_packages

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "data_prep", "pipeline", "orchestration")


def _name(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def declared() -> set[str]:
    """The project's own dependencies (not its extras), as pip normalizes their names."""
    return {_name(re.match(r"[A-Za-z0-9_.\-]+", r).group()) for r in requires("rmat") if "extra ==" not in r}


def test_every_imported_distribution_is_a_declared_dependency():
    owners = packages_distributions()
    imported = {name for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                for name in imported_packages(path)}
    third_party = imported - set(sys.stdlib_module_names) - set(PACKAGES)
    # A module may come from several distributions (mlflow from mlflow or mlflow-skinny): one must be declared.
    undeclared = {name for name in third_party if not {_name(d) for d in owners.get(name, [name])} & declared()}
    assert undeclared == set()
