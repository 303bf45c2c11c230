"""``rmat compare``: which runs, from which store; then the tables on stdout and, with ``--out``, the report."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

from pipeline.compare.store import CompareError, RunQuery

RUN_ID = re.compile(r"^[0-9a-f]{32}$")  # MLflow's run ids


@dataclass
class CompareRequest:
    """What the command line asked for."""

    targets: list[str]  # run ids, or one pipeline name
    experiment: str = ""
    filter: str = ""
    tracking_uri: str = ""
    show_all: bool = False
    out: str = ""
    timeout_s: float = 10.0


def resolve(req: CompareRequest) -> tuple[str, RunQuery]:
    """(tracking URI, query): run ids or ``--experiment`` in the given store; a pipeline name in its own."""
    ids = [t for t in req.targets if RUN_ID.match(t)]
    names = [t for t in req.targets if not RUN_ID.match(t)]
    if names and (ids or len(names) > 1 or req.experiment):
        raise CompareError(f"{' '.join(req.targets)}: give run ids, or --experiment, or one pipeline name "
                           f"({names[0]!r} is not a run id)")
    if ids and req.experiment:
        raise CompareError("give run ids or --experiment, not both")
    if names:
        return _pipeline_query(names[0], req)
    if not ids and not req.experiment:
        raise CompareError("name the runs: rmat compare RUN_ID ..., rmat compare --experiment NAME [--filter F], "
                           "or rmat compare PIPELINE")
    if ids and req.filter:
        raise CompareError("--filter selects among an experiment's runs: use it with --experiment or a pipeline")
    uri = req.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        raise CompareError("no tracking store: pass --tracking-uri or set MLFLOW_TRACKING_URI "
                           "(or compare a pipeline by its name)")
    return uri, RunQuery(run_ids=ids, experiment=req.experiment, filter=req.filter)


def _pipeline_query(name: str, req: CompareRequest) -> tuple[str, RunQuery]:
    """A submitted pipeline's training runs: its experiment, in its store unless another is given."""
    from pipeline.config import ConfigError, load_config
    from pipeline.lineage import lineage_of
    from pipeline.pipeline_config import PipelineConfig
    from pipeline.runs import find_run
    from pipeline.submit import CONFIG_NAME

    try:
        folder = find_run(name)
    except ConfigError as e:
        raise CompareError(f"{name!r} is neither an MLflow run id (32 hex digits) nor a submitted pipeline: "
                           f"{e}") from None
    lineage = lineage_of(load_config(PipelineConfig, folder / CONFIG_NAME))
    return req.tracking_uri or lineage.uri, RunQuery(experiment=lineage.experiment, filter=req.filter)


def run_compare(req: CompareRequest, log=print) -> Optional[list[str]]:
    """Print the comparison; with ``req.out`` also write the report folder and return its files."""
    from pipeline.compare.store import Store
    from pipeline.compare.summary import compare
    from pipeline.compare.tables import as_text, build_tables, notes
    from pipeline.train.tracking import request_limits

    uri, query = resolve(req)
    with request_limits(req.timeout_s):
        store = Store(uri, req.timeout_s)
        runs = store.read(store.find(query))
    comparison = compare(runs)
    log(f"{len(runs)} run(s) from {uri}\n")
    log(as_text(build_tables(comparison, req.show_all), notes(comparison)))
    if not req.out:
        return None
    from pipeline.compare.report import write_report

    paths = write_report(req.out, comparison, runs, uri, req.show_all)
    log(f"\nreport: {', '.join(paths)}")
    return paths
