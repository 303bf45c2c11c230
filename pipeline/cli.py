"""The ``rmat`` command."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rmat", description="Pretrain Recurrent Memory-Augmented Transformers.")
    sub = parser.add_subparsers(dest="command", required=True)
    quick = sub.add_parser("quickstart", help="a short real training of RMAT on bytes of real text")
    quick.add_argument("config", nargs="?", help="YAML config (default: built-in quickstart)")
    quick.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=100")
    prep = sub.add_parser("prep", help="prepare data: corpora -> tokenizer -> WebDataset shards (rerunnable)")
    prep.add_argument("config", help="YAML config, e.g. configs/data/quickstart.yaml")
    prep.add_argument("overrides", nargs="*", help="dotted overrides, e.g. workers=2 tokenizer.vocab_size=4000")
    prep.add_argument("--stage", choices=["ingest", "tokenizer", "shards"], help="run only this stage")
    prep.add_argument("--force", action="store_true", help="redo finished units too")
    prep.add_argument("--status", action="store_true", help="say per stage what is done, what is missing, where")
    args = parser.parse_args(argv)
    try:
        if args.command == "quickstart":
            return _quickstart(args)
        if args.command == "prep":
            return _prep(args)
    except ConfigError as e:
        print(f"rmat: config error: {e}", file=sys.stderr)
        return 2
    return 1


def _quickstart(args: argparse.Namespace) -> int:
    from pipeline.quickstart import QuickstartConfig, run_quickstart

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # no file given, only overrides
        config, overrides = None, [config, *overrides]
    run_quickstart(load_config(QuickstartConfig, config, overrides))
    return 0


def _prep(args: argparse.Namespace) -> int:
    from data_prep.atomic import PrepError
    from data_prep.config import PrepConfig
    from data_prep.prep import prep_status, run_prep

    config = load_config(PrepConfig, args.config, list(args.overrides))
    try:
        if args.status:
            print(prep_status(config))
        else:
            run_prep(config, stage=args.stage, force=args.force)
    except PrepError as e:
        print(f"rmat prep: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
