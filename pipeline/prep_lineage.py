"""What a data-prep stage's MLflow run holds: its output folder as an MLflow dataset, the
tokenizer's files as artifacts, and the stage's figures.

The shard folder's dataset (digest: the manifest's sha256; source: the folder's URL, its
published copy when ``publish_to`` is set) is the one the training logs as its input.
"""

from __future__ import annotations

import json
import os

from data_prep.atomic import sha256_file
from data_prep.config import PrepConfig
from data_prep.ingest import MANIFEST as INGEST_REPORT
from data_prep.publish import remote_folder
from data_prep.shards import read_manifest
from data_prep.tokenizer import MANIFEST as TOKENIZER_INFO
from data_prep.tokenizer import MODEL, VOCAB
from pipeline.lineage import PipelineRun
from pipeline.prep_figures import ingest_figure, shards_figure
from pipeline.train.files import manifest_hash
from pipeline.train.tracking import folder_dataset

OUTPUT = "output"  # the dataset context of what a stage wrote


def log_stage_output(run: PipelineRun, cfg: PrepConfig, stage: str, folder: str) -> None:
    """Log what ``stage`` wrote into ``folder`` to ``run``."""
    if stage == "ingest":
        log_ingest(run, folder)
    elif stage == "tokenizer":
        run.log_files([os.path.join(folder, name) for name in (MODEL, VOCAB, TOKENIZER_INFO)], "tokenizer")
    else:
        log_shards(run, cfg, folder)


def log_ingest(run: PipelineRun, folder: str) -> None:
    """The ingest folder as a dataset (digest: its report's sha256), and its figure."""
    report = os.path.join(folder, INGEST_REPORT)
    run.log_dataset(folder_dataset(folder, sha256_file(report)), OUTPUT)
    with open(report) as f:
        run.log_bytes("ingest.png", ingest_figure(json.load(f)))


def log_shards(run: PipelineRun, cfg: PrepConfig, folder: str) -> None:
    """The shard folder (or its published copy) as a dataset, and its figure."""
    manifest = read_manifest(folder)
    url = remote_folder(cfg.publish_to, folder) if cfg.publish_to else folder
    run.log_dataset(folder_dataset(url, manifest_hash(manifest)), OUTPUT)
    run.log_bytes("shards.png", shards_figure(manifest))
