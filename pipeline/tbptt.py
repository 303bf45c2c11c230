"""One truncated-backprop-through-time window: k segments, one backward."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model import MemoryState
from pipeline.streams import IGNORE_INDEX, Segment


def window_loss(model: nn.Module, segments: Sequence[Segment], state: MemoryState
                ) -> tuple[Tensor, MemoryState, int]:
    """Mean next-token loss over k consecutive segments with the memory carried between them.

    The graph spans the whole window, so a segment's loss reaches earlier segments of
    the window through the memory. The caller backpropagates once, then detaches the
    returned state before the next window. Returns (loss, state, counted tokens).
    """
    total = torch.zeros((), device=state.carry.device)
    count = 0
    for seg in segments:
        logits, state = model(seg.inputs, state, reset=seg.reset)
        total = total + F.cross_entropy(logits.flatten(0, 1).float(), seg.targets.flatten(),
                                        ignore_index=IGNORE_INDEX, reduction="sum")
        count += int((seg.targets != IGNORE_INDEX).sum())
    return total / max(count, 1), state, count
