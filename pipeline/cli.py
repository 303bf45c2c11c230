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
    train = sub.add_parser("train", help="train RMAT with DeepSpeed ZeRO and TBPTT; resumes from the last checkpoint")
    train.add_argument("config", help="YAML config, e.g. configs/train/small.yaml")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. engine.zero_stage=3")
    train.add_argument("--nproc", type=int, default=1, help="local processes (ignored under SLURM/torchrun)")
    args = parser.parse_args(argv)
    try:
        if args.command == "quickstart":
            return _quickstart(args)
        if args.command == "train":
            return _train(args)
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


def _train(args: argparse.Namespace) -> int:
    from pipeline.train.config import TrainConfig
    from pipeline.train.launch import launch

    launch(load_config(TrainConfig, args.config, list(args.overrides)), args.nproc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
