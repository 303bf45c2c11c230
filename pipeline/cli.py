"""The ``rmat`` command."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rmat", description="Pretrain Recurrent Memory-Augmented Transformers.")
    sub = parser.add_subparsers(dest="command", required=True)
    quick = sub.add_parser("quickstart", help="a short real training of RMAT on bytes of real text (one process)")
    quick.add_argument("config", nargs="?", help="training YAML config (default: configs/quickstart.yaml)")
    quick.add_argument("overrides", nargs="*", help="dotted overrides, e.g. steps=100")
    prep = sub.add_parser("prep", help="prepare data: corpora -> tokenizer -> WebDataset shards (rerunnable)")
    prep.add_argument("config", help="YAML config, e.g. configs/data/quickstart.yaml")
    prep.add_argument("overrides", nargs="*", help="dotted overrides, e.g. workers=2 tokenizer.vocab_size=4000")
    prep.add_argument("--stage", choices=["ingest", "tokenizer", "shards"], help="run only this stage")
    prep.add_argument("--force", action="store_true", help="redo finished units too")
    prep.add_argument("--status", action="store_true", help="say per stage what is done, what is missing, where")
    _add_run_commands(sub)
    train = sub.add_parser("train", help="train RMAT with DeepSpeed ZeRO and TBPTT; resumes from the last checkpoint")
    train.add_argument("config", help="YAML config, e.g. configs/train/small.yaml")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. engine.zero_stage=3")
    train.add_argument("--nproc", type=int, default=1, help="local processes (ignored under SLURM/torchrun)")
    _add_inference_commands(sub)
    _add_compare_command(sub)
    # Options may stand anywhere, so dotted overrides may come after them too: argparse leaves those over.
    args, extras = parser.parse_known_args(argv)
    args.overrides = _overrides(parser, args, extras)
    try:
        if args.command == "quickstart":
            return _quickstart(args)
        if args.command == "prep":
            return _prep(args)
        if args.command in ("submit", "status", "cancel"):
            return _run_command(args)
        if args.command == "train":
            return _train(args)
        if args.command == "export":
            return _export(args)
        if args.command == "generate":
            return _generate(args)
        if args.command == "compare":
            return _compare(args)
    except ConfigError as e:
        print(f"rmat: config error: {e}", file=sys.stderr)
        return 2
    return 1


def _overrides(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]) -> list[str]:
    """The command's dotted overrides, wherever they stood: before, between or after its options."""
    takes = hasattr(args, "overrides")
    bad = [a for a in extras if not takes or a.startswith("-") or "=" not in a]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    return [*args.overrides, *extras] if takes else []


def _quickstart(args: argparse.Namespace) -> int:
    from pipeline.quickstart import CONFIG, run_quickstart
    from pipeline.train.config import TrainConfig

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # no file given, only overrides
        config, overrides = None, [config, *overrides]
    run_quickstart(load_config(TrainConfig, config or CONFIG, overrides))
    return 0


def _prep(args: argparse.Namespace) -> int:
    from data_prep.atomic import PrepError
    from data_prep.config import PrepConfig
    from data_prep.prep import format_status, prep_status, run_prep

    config = load_config(PrepConfig, args.config, list(args.overrides))
    try:
        if args.status:
            print(format_status(prep_status(config)))
        else:
            run_prep(config, stage=args.stage, force=args.force)
    except PrepError as e:
        print(f"rmat prep: error: {e}", file=sys.stderr)
        return 1
    return 0


def _add_run_commands(sub) -> None:
    submit = sub.add_parser("submit", help="submit the whole pipeline (data prep, training, evaluation) as jobs")
    submit.add_argument("config", help="pipeline YAML, e.g. configs/pipeline/quickstart.yaml")
    submit.add_argument("overrides", nargs="*", help="dotted overrides, e.g. slurm.units.partition=cpu")
    submit.add_argument("--cluster", choices=["slurm", "local", "debug"], default="slurm",
                        help="slurm: queue every job with afterok dependencies; local: run them as local processes "
                             "one after another; debug: in this process")
    submit.add_argument("--dry-run", action="store_true", help="print what would be submitted, submit nothing")
    submit.add_argument("--sweep", action="append", default=[], metavar="KEY=A,B",
                        help="train once per value (repeat for a grid), e.g. --sweep train.model.pool=mean,attn; "
                             "replaces the YAML's sweep values of that key")
    for name, what in (("status", "each stage's job state, logs and output completeness"),
                       ("cancel", "cancel a run's queued and running jobs")):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("run", nargs="?", help="run folder or name under runs/pipelines (default: the latest)")


def _run_command(args: argparse.Namespace) -> int:
    from data_prep.atomic import PrepError
    from pipeline import runs, submit
    from pipeline.pipeline_config import load_pipeline

    try:
        if args.command == "status":
            print(runs.status(runs.find_run(args.run)))
            return 0
        if args.command == "cancel":
            runs.cancel(runs.find_run(args.run))
            return 0
        cfg = load_pipeline(args.config, list(args.overrides), args.sweep)
        if args.dry_run:
            print(submit.describe(cfg, *submit.plan(cfg, args.cluster), args.cluster))
            return 0
        jobs = submit.submit(cfg, args.cluster)
    except PrepError as e:
        print(f"rmat {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 1 if any(j.state not in ("", "COMPLETED") for j in jobs) else 0


def _train(args: argparse.Namespace) -> int:
    from pipeline.train.config import TrainConfig
    from pipeline.train.launch import launch

    launch(load_config(TrainConfig, args.config, list(args.overrides)), args.nproc)
    return 0


def _add_inference_commands(sub) -> None:
    export = sub.add_parser("export", help="a checkpoint as a self-contained folder: safetensors, config, "
                                           "tokenizer, ONNX graphs with the memory as explicit state")
    export.add_argument("run_dir", help="a training run folder (it holds checkpoints/)")
    export.add_argument("--checkpoint", help="checkpoint tag, e.g. step_00000300 (default: the latest)")
    export.add_argument("--out", required=True, help="folder to create (must not exist)")
    export.add_argument("--format", default="safetensors", help="comma-separated: safetensors[,onnx]")
    export.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="dtype of the weights")
    export.add_argument("--log-model", action="store_true",
                        help="also log the export (with onnx) to the training's MLflow run as the model 'model'")
    gen = sub.add_parser("generate", help="continue a prompt with an exported model, streaming the text")
    gen.add_argument("folder", help="a folder written by `rmat export`")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="the prompt text")
    source.add_argument("--prompt-file", help="a UTF-8 file holding the prompt (any length)")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--backend", choices=["torch", "onnx"], default="torch")


def _export(args: argparse.Namespace) -> int:
    from pipeline.export import ExportError, export_run

    try:
        info = export_run(args.run_dir, args.out, args.checkpoint, tuple(args.format.split(",")), args.dtype)
    except ExportError as e:
        print(f"rmat export: error: {e}", file=sys.stderr)
        return 1
    print(f"exported {info['checkpoint']} of {args.run_dir} to {args.out}: {', '.join(sorted(info['sha256']))}")
    if args.log_model:
        from pipeline.serving import log_exported_model

        try:
            print(f"logged as {log_exported_model(args.out, args.run_dir)}")
        except FileNotFoundError as e:
            print(f"rmat export: error: {e}", file=sys.stderr)
            return 1
    return 0


def _generate(args: argparse.Namespace) -> int:
    from model.pretrained import ExportedFolderError
    from pipeline.inference import Sampling, stream_text

    try:
        if args.prompt_file is not None:
            with open(args.prompt_file, encoding="utf-8") as f:
                text = f.read()
        else:
            text = args.prompt
        sampling = Sampling(args.max_new_tokens, args.temperature, args.top_k, args.seed)
        ids, rate = stream_text(args.folder, text, sampling, args.backend, _write_now)
    except (ExportedFolderError, ValueError, OSError) as e:
        print(f"rmat generate: error: {e}", file=sys.stderr)
        return 1
    print(file=sys.stdout)
    print(f"{len(ids)} tokens, {rate:.1f} tokens/s ({args.backend})", file=sys.stderr)
    return 0


def _add_compare_command(sub) -> None:
    cmp = sub.add_parser("compare", help="runs side by side from an MLflow store: config differences, val loss "
                                         "final, best and at a common token budget, throughput, loss by position")
    cmp.add_argument("targets", nargs="*", metavar="RUN_ID|PIPELINE",
                     help="MLflow run ids, or the name of a submitted pipeline (its training runs)")
    cmp.add_argument("--experiment", default="", help="every run of this MLflow experiment (with --filter: some)")
    cmp.add_argument("--filter", default="", help="MLflow search filter, e.g. \"params.`model.pool` = 'attn'\"")
    cmp.add_argument("--tracking-uri", default="",
                     help="the store (default: $MLFLOW_TRACKING_URI, else the pipeline's own store)")
    cmp.add_argument("--all", action="store_true", help="every param, not only those that differ")
    cmp.add_argument("--out", default="", help="folder for the report: PNG plots, report.md, compare.json")
    cmp.add_argument("--timeout", type=float, default=10.0,
                     help="seconds a tracking server may take to answer a request before compare gives up")


def _compare(args: argparse.Namespace) -> int:
    from pipeline.compare.command import CompareRequest, run_compare
    from pipeline.compare.store import CompareError

    req = CompareRequest(args.targets, args.experiment, args.filter, args.tracking_uri, args.all, args.out,
                         args.timeout)
    try:
        run_compare(req)
    except CompareError as e:
        print(f"rmat compare: error: {e}", file=sys.stderr)
        return 1
    return 0


def _write_now(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
