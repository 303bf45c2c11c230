"""One rank of a short real training that also records what its DeepSpeed engine holds at the end.

Run under torchrun: ``python -m torch.distributed.run --nproc_per_node 2 engine_weights.py
CONFIG OUT OVERRIDE...``. After ``rmat train``'s own loop has trained and checkpointed,
rank 0 writes to OUT (torch.save) the engine's fp32 weights, gathered from every rank's
partition under ZeRO-3, and the engine's logits and next memory on a fixed segment: what
an export of the final checkpoint must reproduce.
"""

from __future__ import annotations

import os
import sys

import deepspeed
import torch
import torch.distributed as dist

from pipeline.config import load_config
from pipeline.train.config import TrainConfig
from pipeline.train.loop import Trainer


def engine_record(trainer: Trainer) -> dict:
    """The engine's fp32 weights (gathered) and its output on a fixed segment (a collective)."""
    module = trainer.engine.module
    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, enabled=trainer.cfg.engine.zero_stage == 3):
        weights = {name: p.detach().clone().float() for name, p in module.named_parameters()}
    tokens = torch.arange(trainer.cfg.model.segment_len).remainder(trainer.cfg.model.vocab_size)[None]
    state = module.init_state(1)
    with torch.no_grad():
        logits, next_state = trainer.engine(tokens, state)
    return {"weights": weights, "tokens": tokens, "logits": logits, "carry": next_state.carry}


def main(config: str, out: str, overrides: list[str]) -> None:
    cfg = load_config(TrainConfig, config, overrides)
    trainer = Trainer(cfg, int(os.environ["LOCAL_WORLD_SIZE"]))
    try:
        trainer.run()
        record = engine_record(trainer)
        if trainer.rank == 0:
            torch.save(record, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
