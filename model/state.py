"""Recurrent state carried between segments, and the token-by-token decoding cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class MemoryState:
    """Every memory layer's gated FIFO memory, stacked over those layers (``RMATConfig.memory_layers``).

    ``mem`` [L, B, M, D] holds the last M entries (newest last), ``valid`` [L, B, M]
    marks the slots written since the row's last reset, ``carry`` [L, B, D] is the
    GRU's running state, ``read_bias`` [L, B, M] what each read adds to a slot's logit
    (zero but for token entries under ``mem_token_gate="read"``).

    ``kv`` [L, B, M, 2 G m] (G, m: ``RMATConfig.mem_read_heads``, ``mem_head_width``) caches each slot's memory keys
    and values as the model's current weights project them (None: not projected yet), so that
    a slot is projected once, not at every read. It is derived, never saved, and ``detach``
    drops it: after the window's backward the optimizer may change the weights that projected
    it. A state given other slots (``dataclasses.replace(state, mem=...)``) must drop it too:
    ``kv=None``.
    """

    mem: Tensor
    valid: Tensor
    carry: Tensor
    read_bias: Tensor
    kv: Optional[Tensor] = None

    @classmethod
    def empty(cls, n_layers: int, batch_size: int, mem_slots: int, d_model: int,
              device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> MemoryState:
        return cls(
            mem=torch.zeros(n_layers, batch_size, mem_slots, d_model, device=device, dtype=dtype),
            valid=torch.zeros(n_layers, batch_size, mem_slots, dtype=torch.bool, device=device),
            carry=torch.zeros(n_layers, batch_size, d_model, device=device, dtype=dtype),
            read_bias=torch.zeros(n_layers, batch_size, mem_slots, device=device, dtype=dtype),
        )

    @property
    def batch_size(self) -> int:
        return self.carry.shape[1]

    def detach(self) -> MemoryState:
        """Cut the graph: the TBPTT window ends here (and the cached keys and values with it)."""
        return MemoryState(self.mem.detach(), self.valid, self.carry.detach(), self.read_bias.detach())

    def reset_rows(self, reset: Tensor) -> MemoryState:
        """Empty the memory of the rows flagged in ``reset`` [B] (bool); keep the others."""
        keep = ~reset.to(device=self.carry.device, dtype=torch.bool)
        return MemoryState(
            mem=self.mem * keep.view(1, -1, 1, 1).to(self.mem.dtype),
            valid=self.valid & keep.view(1, -1, 1),
            carry=self.carry * keep.view(1, -1, 1).to(self.carry.dtype),
            read_bias=self.read_bias * keep.view(1, -1, 1).to(self.read_bias.dtype),
            # An emptied slot holds zeros, which RMSNorm and the bias-free projection keep at zero.
            kv=None if self.kv is None else self.kv * keep.view(1, -1, 1, 1).to(self.kv.dtype),
        )

    def select_rows(self, rows: Tensor) -> MemoryState:
        """The state whose row r is this state's row ``rows[r]``."""
        return MemoryState(self.mem[:, rows], self.valid[:, rows], self.carry[:, rows], self.read_bias[:, rows],
                           None if self.kv is None else self.kv[:, rows])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> MemoryState:
        return MemoryState(self.mem.to(device, dtype), self.valid.to(device), self.carry.to(device, dtype),
                           self.read_bias.to(device, dtype), None if self.kv is None else self.kv.to(device, dtype))

    def state_dict(self) -> dict[str, Tensor]:
        return {"mem": self.mem.detach().clone(), "valid": self.valid.clone(),
                "carry": self.carry.detach().clone(), "read_bias": self.read_bias.detach().clone()}

    @classmethod
    def from_state_dict(cls, sd: dict[str, Tensor]) -> MemoryState:
        missing = {"mem", "valid", "carry"} - set(sd)
        if missing:
            raise KeyError(f"memory state is missing {sorted(missing)}; was it saved by MemoryState.state_dict()?")
        # A state saved before read biases existed read every slot unbiased.
        read_bias = sd["read_bias"] if "read_bias" in sd else torch.zeros_like(sd["valid"], dtype=sd["mem"].dtype)
        return cls(sd["mem"], sd["valid"].to(torch.bool), sd["carry"], read_bias)


@dataclass
class DecodeCache:
    """What token-by-token decoding keeps: the memory plus the current segment so far.

    ``k``, ``v`` [L, B, H, S, d] are the segment's rotated keys and values, ``y``
    [L, B, S, D] the layers' outputs that feed the memory write when the segment is
    full, ``emb`` [B, 1, D] the embedding of the segment's last token so far (zeros at its
    start: what the token shift reads), ``pos`` the number of tokens of the segment seen.
    O(S + M) per layer.
    """

    state: MemoryState
    k: Tensor
    v: Tensor
    y: Tensor
    emb: Tensor
    pos: int = 0

    @property
    def batch_size(self) -> int:
        return self.state.batch_size
