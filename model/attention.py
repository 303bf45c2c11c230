"""The three attention paths of an RMAT block and their learned per-head mix.

    global:  causal attention over the whole segment          O(S^2)
    local:   causal attention inside each chunk of C tokens    O(S*C)
    memory:  attention over the valid slots of the FIFO        O(S*M)

The memory is read by content: its queries are not rotated, since a slot has no
position relative to the reading token that a rotation could express.

Each path has a segment form (all tokens at once, through SDPA) and a step form (one
new query against the cached keys of the segment) that give the same numbers.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import RMATConfig
from model.layers import Rotary


def global_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal attention over the segment; q, k, v are [B, H, T, d]."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def local_attention(q: Tensor, k: Tensor, v: Tensor, chunk_len: int) -> Tensor:
    """Causal attention inside each chunk of ``chunk_len`` tokens.

    Chunks become extra heads (a free view when T is a multiple of the chunk), so SDPA
    does O(T * C) work instead of masking an O(T^2) score matrix. A partial last chunk
    is padded at its end, which causal masking keeps from reaching any real token.
    """
    b, h, t, d = q.shape
    pad = -t % chunk_len
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    n = (t + pad) // chunk_len
    q, k, v = (x.reshape(b, h * n, chunk_len, d) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return out.reshape(b, h, n * chunk_len, d)[:, :, :t]


def memory_attention(q: Tensor, km: Tensor, vm: Tensor, valid: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """Attention of q [B, H, T, d] over memory slots km, vm [B, H, M, d].

    Only slots with ``valid`` [B, M] take part; a row with no valid slot reads zero.
    Such a row attends to every slot (so the softmax stays finite) and is zeroed after.
    ``bias`` [B, M], when given, is added to each slot's logit.
    """
    any_valid = valid.any(dim=-1)
    readable = valid | ~any_valid[:, None]
    mask = readable if bias is None else bias.to(q.dtype).masked_fill(~readable, float("-inf"))
    out = F.scaled_dot_product_attention(q, km, vm, attn_mask=mask[:, None, None, :])
    return out * any_valid.view(-1, 1, 1, 1).to(out.dtype)


def with_sink(km: Tensor, vm: Tensor, valid: Tensor, sink_key: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Memory slots km, vm [B, H, M, d] and ``valid`` [B, M] with an always-valid first slot whose
    key is ``sink_key`` [H, d] and whose value is zero: the softmax over slots may put weight on
    no entry. A row with no valid entry then reads zero through the sink, as without it."""
    b, h, _, d = km.shape
    km = torch.cat([sink_key.to(km.dtype).view(1, h, 1, d).expand(b, -1, -1, -1), km], dim=2)
    vm = torch.cat([vm.new_zeros(b, h, 1, d), vm], dim=2)
    return km, vm, torch.cat([valid.new_ones(b, 1), valid], dim=1)


# Head h on its own path takes softmax weight e^5 / (e^5 + 2) = 0.987 of three.
HEAD_PATH_LOGIT = 5.0


def initial_mix_logits(cfg: RMATConfig) -> Tensor:
    """One logit per head and path, [H, n_paths]: zeros (an equal mix) or, for
    ``one_path_per_head``, head h starting almost wholly on path h mod n_paths.

    An equal mix gives the segment's global attention a third of every head, and the
    in-segment copy that induction needs is learned far more slowly (docs/design.md, section 2).
    """
    logits = torch.zeros(cfg.n_heads, len(cfg.paths))
    if cfg.mix_init == "one_path_per_head":
        heads = torch.arange(cfg.n_heads)
        logits[heads, heads % len(cfg.paths)] = HEAD_PATH_LOGIT
    return logits


class MixedAttention(nn.Module):
    """Pre-projected q, k, v shared by the enabled paths, mixed per head by softmax(w_h)."""

    def __init__(self, cfg: RMATConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.wqkv = nn.Linear(d, 3 * d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        self.rotary = Rotary(cfg.head_dim, cfg.segment_len, cfg.rope_base)
        self.mix_logits = nn.Parameter(initial_mix_logits(cfg))
        if cfg.has_memory:
            self.mem_norm = nn.RMSNorm(d, eps=cfg.norm_eps)
            self.wkv_mem = nn.Linear(d, cfg.mem_kv_width, bias=False)
            if cfg.narrow_memory_read:
                # The segment's queries are n_heads x head_dim: a narrow read asks with its own, and each
                # memory head's answer is widened back to the heads it answers for (one map shared by the
                # memory heads; wo tells the heads apart).
                self.wq_mem = nn.Linear(d, cfg.mem_read_heads * cfg.mem_head_width, bias=False)
                self.wo_mem = nn.Linear(cfg.mem_head_width, cfg.n_heads // cfg.mem_read_heads * cfg.head_dim,
                                        bias=False)
            if cfg.mem_sink:
                # A slot whose value is zero: a head can read "nothing here" instead of spreading its
                # weight over entries that do not hold what it asks for.
                self.mem_sink_key = nn.Parameter(torch.zeros(cfg.mem_read_heads, cfg.mem_head_width))
        self.dropout = nn.Dropout(cfg.dropout)

    def mix_weights(self) -> Tensor:
        """The per-head path weights a_h, [H, n_paths], rows summing to 1."""
        return self.mix_logits.softmax(dim=-1)

    def forward(self, u: Tensor, mem_kv: Optional[Tensor], valid: Optional[Tensor], read_bias: Optional[Tensor]
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Attend a whole segment u [B, T, D] and the memory's projected slots mem_kv [B, M, 2 G m]
        (``memory_kv``); returns (output, rotated keys, values)."""
        q_mem, q, k, v = self._qkv(u, start=0)
        outs = []
        for path in self.cfg.paths:
            if path == "global":
                outs.append(global_attention(q, k, v))
            elif path == "local":
                outs.append(local_attention(q, k, v, self.cfg.chunk_len))
            else:
                outs.append(self._read_memory(q_mem, mem_kv, valid, read_bias))
        return self._mix(outs), k, v

    def step(self, u: Tensor, k_cache: Tensor, v_cache: Tensor, pos: int,
             mem_kv: Optional[Tensor], valid: Optional[Tensor], read_bias: Optional[Tensor]) -> Tensor:
        """Attend one new token u [B, 1, D] at segment position ``pos``.

        Writes its key and value into k_cache, v_cache [B, H, S, d] in place.
        """
        q_mem, q, k, v = self._qkv(u, start=pos)
        k_cache[:, :, pos:pos + 1] = k
        v_cache[:, :, pos:pos + 1] = v
        chunk_start = pos - pos % self.cfg.chunk_len
        outs = []
        for path in self.cfg.paths:
            if path == "global":
                outs.append(F.scaled_dot_product_attention(q, k_cache[:, :, :pos + 1], v_cache[:, :, :pos + 1]))
            elif path == "local":
                outs.append(F.scaled_dot_product_attention(
                    q, k_cache[:, :, chunk_start:pos + 1], v_cache[:, :, chunk_start:pos + 1]))
            else:
                outs.append(self._read_memory(q_mem, mem_kv, valid, read_bias))
        return self._mix(outs)

    def memory_kv(self, mem: Tensor) -> Tensor:
        """Memory slots mem [B, M, D] -> their keys and values [B, M, 2 G m] (G: ``mem_read_heads``,
        m: ``mem_head_width``), what a read attends.

        Row by row: a slot's projection does not depend on the others, so the state keeps it
        from the write that pushed the slot to the read that drops it (``MemoryState.kv``).
        """
        return self.wkv_mem(self.mem_norm(mem))

    def memory_query(self, u: Tensor, q: Tensor) -> Tensor:
        """What the tokens u [B, T, D] ask the memory, given their unrotated queries q [B, H, T, d]:
        q itself, or for a narrow read the query [B, G, T, m] of its own projection."""
        return self._heads(self.wq_mem(u), self.cfg.mem_read_heads) if self.cfg.narrow_memory_read else q

    def _qkv(self, u: Tensor, start: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The memory's query, then the rotated query and key and the value of the segment."""
        q, k, v = (self._heads(x, self.cfg.n_heads) for x in self.wqkv(u).chunk(3, dim=-1))
        return self.memory_query(u, q), self.rotary(q, start), self.rotary(k, start), v

    @staticmethod
    def _heads(x: Tensor, n_heads: int) -> Tensor:
        """[B, T, n_heads * w] -> [B, n_heads, T, w], for any width w a head has on a path."""
        b, t, _ = x.shape
        return x.view(b, t, n_heads, -1).transpose(1, 2)

    def _widen(self, out: Tensor) -> Tensor:
        """A narrow read's answer [B, G, T, m] -> [B, H, T, head_dim]: memory head g answers for
        heads g r .. g r + r - 1 (r = H / G)."""
        b, g, t, _ = out.shape
        c = self.cfg
        wide = self.wo_mem(out).view(b, g, t, c.n_heads // g, c.head_dim)
        return wide.transpose(2, 3).reshape(b, c.n_heads, t, c.head_dim)

    def _read_memory(self, q: Tensor, mem_kv: Tensor, valid: Tensor, read_bias: Tensor) -> Tensor:
        km, vm = (self._heads(x, self.cfg.mem_read_heads) for x in mem_kv.chunk(2, dim=-1))
        bias = read_bias if self.cfg.mem_token_gate == "read" else None
        if self.cfg.mem_sink:
            km, vm, valid = with_sink(km, vm, valid, self.mem_sink_key)
            bias = None if bias is None else F.pad(bias, (1, 0))  # the sink's logit is unbiased
        out = memory_attention(q, km, vm, valid, bias)
        return self._widen(out) if self.cfg.narrow_memory_read else out

    def _mix(self, outs: list[Tensor]) -> Tensor:
        a = self.mix_weights().to(outs[0].dtype)  # [H, P]
        mixed = sum(a[:, i].view(1, -1, 1, 1) * o for i, o in enumerate(outs))
        b, h, t, d = mixed.shape
        return self.dropout(self.wo(mixed.transpose(1, 2).reshape(b, t, h * d)))
