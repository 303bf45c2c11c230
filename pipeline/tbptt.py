"""Truncated backprop through time: a window of k segments with one backward, and the memory carried on."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model import MemoryState, RMATConfig
from pipeline.streams import IGNORE_INDEX, Segment


def window_loss(model: nn.Module, segments: Sequence[Segment], state: MemoryState, recompute: bool = False
                ) -> tuple[Tensor, MemoryState, int]:
    """Mean next-token loss over k consecutive segments with the memory carried between them.

    The graph spans the whole window, so a segment's loss reaches earlier segments of
    the window through the memory. The caller backpropagates once, then detaches the
    returned state before the next window. With ``recompute`` each segment keeps only its
    inputs and recomputes its activations in the backward, so the window holds one
    segment's activations and the memory between segments, however many segments it spans
    (one more forward per segment). Returns (loss, state, counted tokens).
    """
    total = torch.zeros((), device=state.carry.device)
    count = 0
    for seg in segments:
        if recompute:
            loss, state = checkpoint(_segment_loss, model, seg, state, use_reentrant=False)
        else:
            loss, state = _segment_loss(model, seg, state)
        total = total + loss
        count += int((seg.targets != IGNORE_INDEX).sum())
    return total / max(count, 1), state, count


def _segment_loss(model: nn.Module, seg: Segment, state: MemoryState) -> tuple[Tensor, MemoryState]:
    """One segment's summed next-token loss and the memory it leaves."""
    logits, state = model(seg.inputs, state, reset=seg.reset)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), seg.targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction="sum")
    return loss, state


class CarriedMemory:
    """The detached memory each micro-batch carries from one window into the next (checkpointed per rank)."""

    def __init__(self, cfg: RMATConfig, groups: int, rows: int, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        self.states = [MemoryState.empty(len(cfg.memory_layers), rows, cfg.memory_slots, cfg.d_model, device=device,
                                         dtype=dtype) for _ in range(groups)]

    def state_dict(self) -> list[dict[str, Tensor]]:
        return [s.state_dict() for s in self.states]

    def load_state_dict(self, state: list[dict[str, Tensor]]) -> None:
        if len(state) != len(self.states):
            raise ValueError(f"saved memory has {len(state)} micro-batches; this run has {len(self.states)}")
        self.states = [MemoryState.from_state_dict(sd).to(self.device) for sd in state]
