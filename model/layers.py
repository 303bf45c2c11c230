"""Small building blocks: rotary positions, the SwiGLU feed-forward and the token shift."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Rotary(nn.Module):
    """Rotary positions (rotate-half form), applied per head to queries and keys.

    Positions count from the start of the segment: attention never leaves a segment,
    and RoPE scores depend only on relative position, so absolute offsets are moot.
    """

    def __init__(self, head_dim: int, max_len: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """Rotate ``x`` [..., T, d] as if its tokens sat at positions start..start+T-1."""
        t = x.shape[-2]
        cos = self.cos[start:start + t].to(x.dtype)
        sin = self.sin[start:start + t].to(x.dtype)
        return x * cos + rotate_half(x) * sin


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class SwiGLU(nn.Module):
    """The gated feed-forward of LLaMA: W2 (silu(W1 x) * W3 x)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.w13 = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.dropout(self.w2(F.silu(gate) * up))


class TokenShift(nn.Module):
    """Adds a learned projection of the previous token's embedding to each token's.

    A layer can then match on "the token before me" directly; through attention alone that
    takes a previous-token head in one layer feeding a matching head in the next, which the
    tiny models of ``benchmarks/long_context.py`` never formed on CPU budgets (docs/design.md,
    section 1). The shift stays inside the segment, like attention: a segment's first token
    has no predecessor (zeros).
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor, before: Tensor | None = None) -> Tensor:
        """x [B, T, D] embeddings -> shifted; ``before`` [B, 1, D] precedes x[:, 0] (None: zeros)."""
        if before is None:
            before = torch.zeros_like(x[:, :1])
        return x + self.proj(torch.cat([before, x[:, :-1]], dim=1))
