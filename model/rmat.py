"""The Recurrent Memory-Augmented Transformer (docs/design.md, sections 1 and 2).

A segment of at most S tokens is processed in parallel; every layer reads the memory
written by earlier segments and, after the segment, writes its own. ``forward`` runs
one segment, ``step`` one token with a cache, ``generate`` streams any prompt length
with O(S + M) state per layer.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import torch
from torch import Tensor, nn

from model.attention import MixedAttention
from model.config import RMATConfig
from model.layers import SwiGLU, TokenShift
from model.memory import MemoryWriter, push
from model.state import DecodeCache, MemoryState


class Block(nn.Module):
    """Pre-norm residual block: mixed attention, then SwiGLU; owns its memory writer."""

    def __init__(self, cfg: RMATConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = MixedAttention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.writer = MemoryWriter(cfg) if cfg.has_memory else None

    def forward(self, x: Tensor, mem_kv: Optional[Tensor], valid: Optional[Tensor], read_bias: Optional[Tensor]
                ) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attn(self.attn_norm(x), mem_kv, valid, read_bias)
        x = x + a
        return x + self.ffn(self.ffn_norm(x)), k, v

    def step(self, x: Tensor, k_cache: Tensor, v_cache: Tensor, pos: int, mem_kv: Optional[Tensor],
             valid: Optional[Tensor], read_bias: Optional[Tensor]) -> Tensor:
        x = x + self.attn.step(self.attn_norm(x), k_cache, v_cache, pos, mem_kv, valid, read_bias)
        return x + self.ffn(self.ffn_norm(x))

    def write(self, y: Tensor, mem: Tensor, valid: Tensor, read_bias: Tensor, carry: Tensor, kv: Tensor
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Write the memory from this block's output y [B, T, D]; the cached keys and values ``kv`` follow
        the FIFO, projecting only the entries this write pushed."""
        mem, valid, read_bias, carry = self.writer(y, mem, valid, read_bias, carry)
        pushed = min(self.writer.entries_written(y.shape[1]), mem.shape[1])
        kv = push(kv, self.attn.memory_kv(mem[:, -pushed:]))
        return mem, valid, read_bias, carry, kv


class RMAT(nn.Module):
    """The language model: embeddings, L blocks, final norm, (tied) output head."""

    def __init__(self, cfg: RMATConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.shift = TokenShift(cfg.d_model) if cfg.token_shift else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.layer_config(i)) for i in range(cfg.n_layers))
        self.norm_f = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # Residual projections scaled down with depth (GPT-2) so the stream's variance stays put.
        for block in self.blocks:
            for w in (block.attn.wo.weight, block.ffn.w2.weight):
                nn.init.normal_(w, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))
            if cfg.narrow_memory_read and block.writer is not None:
                # Widened at the scale it was read at, as a full-width read gives its values unchanged:
                # at init_std the memory path would start ~1 / (init_std * sqrt(m)) times fainter.
                nn.init.normal_(block.attn.wo_mem.weight, std=1 / math.sqrt(cfg.mem_head_width))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)

    @classmethod
    def from_pretrained(cls, folder: str, dtype: torch.dtype = torch.float32) -> RMAT:
        """The model of an ``rmat export`` folder, its files' sha256s checked first (model/pretrained.py)."""
        from model.pretrained import from_pretrained

        return from_pretrained(cls, folder, dtype)

    @property
    def memory_blocks(self) -> list[Block]:
        """The blocks that hold a memory, in the order of the memory state's layers."""
        return [block for block in self.blocks if block.writer is not None]

    # ---- state -----------------------------------------------------------------------

    def init_state(self, batch_size: int) -> MemoryState:
        """An empty memory for ``batch_size`` rows, on the model's device and dtype."""
        p = self.tok_emb.weight
        return MemoryState.empty(len(self.cfg.memory_layers), batch_size, self.cfg.memory_slots, self.cfg.d_model,
                                 device=p.device, dtype=p.dtype)

    def init_cache(self, batch_size: int) -> DecodeCache:
        """An empty decoding cache: memory plus room for one segment's keys and values."""
        c, p = self.cfg, self.tok_emb.weight
        kv_shape = (c.n_layers, batch_size, c.n_heads, c.segment_len, c.head_dim)
        return DecodeCache(
            state=self.init_state(batch_size),
            k=torch.zeros(kv_shape, device=p.device, dtype=p.dtype),
            v=torch.zeros(kv_shape, device=p.device, dtype=p.dtype),
            y=torch.zeros(c.n_layers, batch_size, c.segment_len, c.d_model, device=p.device, dtype=p.dtype),
            emb=torch.zeros(batch_size, 1, c.d_model, device=p.device, dtype=p.dtype),
        )

    def write_every_token(self, on: bool) -> None:
        """While ``on``, training writes every token of a chunk as an entry, not its top
        ``mem_tokens_per_chunk``; evaluation keeps the top ones.

        The first phase of a curriculum: the reads learn to bind while every token is there,
        and go on binding through the k chosen later; choosing from the first step left a seed
        at the value-set ceiling (docs/design.md, section 2).
        """
        if not (self.cfg.has_memory and self.cfg.token_entries):
            raise ValueError("write_every_token needs token entries; set mem_tokens_per_chunk > 0")
        for block in self.memory_blocks:
            block.writer.every_token_in_training = on

    # ---- segment forward -------------------------------------------------------------

    def forward(self, tokens: Tensor, state: MemoryState, reset: Optional[Tensor] = None
                ) -> tuple[Tensor, MemoryState]:
        """Run one segment: tokens [B, T <= S] -> logits [B, T, V] and the next state.

        ``reset`` [B] (bool) empties a row's memory before the segment (a new document).
        """
        self._check_tokens(tokens, state.batch_size)
        if reset is not None:
            if reset.shape != (state.batch_size,):
                raise ValueError(f"reset has shape {tuple(reset.shape)}; expected ({state.batch_size},)")
            state = state.reset_rows(reset)
        x, state, _ = self._run_layers(tokens, state, write_memory=True)
        return self.lm_head(self.norm_f(x)), state

    def embed(self, tokens: Tensor, before: Optional[Tensor] = None) -> Tensor:
        """Token embeddings [B, T, D], shifted when ``token_shift``; ``before`` [B, 1, D] precedes them."""
        x = self.tok_emb(tokens)
        return x if self.shift is None else self.shift(x, before)

    def _run_layers(self, tokens: Tensor, state: MemoryState, write_memory: bool
                    ) -> tuple[Tensor, MemoryState, list[tuple[Tensor, Tensor, Tensor]]]:
        x = self.drop(self.embed(tokens))
        state = self._with_memory_kv(state)
        layers, per_layer = [], []
        for block, memory in self._with_their_memory(state):
            mem, valid, read_bias, carry, kv = memory or (None,) * 5
            x, k, v = block(x, kv, valid, read_bias)
            per_layer.append((x, k, v))
            if write_memory and memory is not None:
                layers.append(block.write(x, mem, valid, read_bias, carry, kv))
        if not layers:
            return x, state, per_layer
        return x, stacked(layers), per_layer

    def _with_their_memory(self, state: MemoryState) -> list[tuple[Block, Optional[tuple[Tensor, ...]]]]:
        """Each block with its layer of ``state`` (``by_layer``), or None where the block holds no memory."""
        if not self.cfg.has_memory:
            return [(block, None) for block in self.blocks]
        memory = iter(by_layer(state))
        return [(block, None if block.writer is None else next(memory)) for block in self.blocks]

    def _with_memory_kv(self, state: MemoryState) -> MemoryState:
        """``state`` with every layer's memory keys and values projected, when they are not yet."""
        if state.kv is not None or not self.cfg.has_memory:
            return state
        slots = zip(self.memory_blocks, state.mem.unbind(0), strict=True)
        kv = torch.stack([block.attn.memory_kv(mem) for block, mem in slots])
        return replace(state, kv=kv)

    # ---- token-by-token decoding -----------------------------------------------------

    @torch.no_grad()
    def step(self, token_ids: Tensor, cache: DecodeCache) -> tuple[Tensor, DecodeCache]:
        """Feed one token per row, token_ids [B] -> logits [B, V], updating ``cache``.

        Gives the logits the segment forward gives at the same position; when the
        segment fills, the memory is written exactly as the segment forward writes it.
        The cache's tensors are updated in place.
        """
        if token_ids.dim() != 1:
            raise ValueError(f"step takes token_ids of shape [batch]; got {tuple(token_ids.shape)}")
        self._check_tokens(token_ids[:, None], cache.batch_size)
        pos, state = cache.pos, self._with_memory_kv(cache.state)
        emb = self.tok_emb(token_ids[:, None])
        x = emb if self.shift is None else self.shift(emb, cache.emb)
        for i, (block, memory) in enumerate(self._with_their_memory(state)):
            _, valid, read_bias, _, kv = memory or (None,) * 5
            x = block.step(x, cache.k[i], cache.v[i], pos, kv, valid, read_bias)
            cache.y[i, :, pos] = x[:, 0]
        logits = self.lm_head(self.norm_f(x))[:, 0]
        pos += 1
        if pos == self.cfg.segment_len:
            state, pos, emb = self._write_memory(cache.y, state), 0, torch.zeros_like(emb)
        return logits, replace(cache, state=state, emb=emb, pos=pos)

    def _write_memory(self, ys: Tensor, state: MemoryState) -> MemoryState:
        if not self.cfg.has_memory:
            return state
        state = self._with_memory_kv(state)
        layers = zip(self.memory_blocks, ys[self.cfg.memory_layers], by_layer(state), strict=True)
        return stacked([block.write(y, *layer) for block, y, layer in layers])

    @torch.no_grad()
    def prefill(self, tokens: Tensor) -> tuple[Tensor, DecodeCache]:
        """Read a prompt tokens [B, T >= 1] of any length; returns the last logits [B, V] and a cache.

        Whole segments go through the parallel forward, the remainder fills the cache.
        """
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise ValueError(f"prefill takes a non-empty prompt [batch, time]; got {tuple(tokens.shape)}")
        s = self.cfg.segment_len
        cache = self.init_cache(tokens.shape[0])
        state, logits = cache.state, None
        n_full = (tokens.shape[1] - 1) // s  # keep >= 1 token for the cache fill below
        for i in range(n_full):
            logits, state = self(tokens[:, i * s:(i + 1) * s], state)
        rest = tokens[:, n_full * s:]
        self._check_tokens(rest, state.batch_size)
        x, _, per_layer = self._run_layers(rest, state, write_memory=False)
        t = rest.shape[1]
        for i, (y, k, v) in enumerate(per_layer):
            cache.k[i, :, :, :t], cache.v[i, :, :, :t], cache.y[i, :, :t] = k, v, y
        logits = self.lm_head(self.norm_f(x[:, -1]))
        emb = self.tok_emb(rest[:, -1:])
        if t == s:
            state, t, emb = self._write_memory(cache.y, state), 0, torch.zeros_like(emb)
        return logits, replace(cache, state=state, emb=emb, pos=t)

    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None) -> Tensor:
        """Continue prompt_ids [B, T] (or [T]) by ``max_new_tokens``; returns prompt + new tokens.

        ``temperature`` 0 picks the most likely token; ``top_k`` keeps the k most likely.
        """
        squeeze = prompt_ids.dim() == 1
        prompt = prompt_ids[None] if squeeze else prompt_ids
        logits, cache = self.prefill(prompt)
        new = []
        for i in range(max_new_tokens):
            token = sample(logits, temperature, top_k)
            new.append(token)
            if i + 1 < max_new_tokens:
                logits, cache = self.step(token, cache)
        out = torch.cat([prompt, torch.stack(new, dim=1)], dim=1) if new else prompt
        return out[0] if squeeze else out

    # ---- accounting ------------------------------------------------------------------

    def num_params(self) -> int:
        """Distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward = 3x forward), matmuls and attention.

        Attention counts the context each token really attends: (S+1)/2 on average for
        the causal global path, (C+1)/2 for the local path, M memory slots. A memory entry's
        keys and values are projected once (``MemoryState.kv``); the M slots a TBPTT window
        starts from are projected again, which this count leaves out.
        """
        c = self.cfg
        d, f = c.d_model, c.ffn_dim
        per_layer = 2 * (4 * d * d + 3 * d * f)  # wqkv + wo, SwiGLU
        context = {"global": (c.segment_len + 1) / 2, "local": (c.chunk_len + 1) / 2}
        per_layer += 4 * d * sum(context[p] for p in c.paths if p in context)
        per_memory_layer = 0.0
        if c.has_memory:
            w = c.mem_read_heads * c.mem_head_width  # every memory head's keys (and values, and queries) side by side
            per_memory_layer += 4 * w * c.memory_slots  # the read
            entries = (c.segment_len // c.chunk_len) * (1 + c.token_entries)
            per_memory_layer += 2 * 2 * d * w * entries / c.segment_len  # memory keys and values of the new entries
            per_memory_layer += 2 * 6 * d * d / c.chunk_len  # GRU cell per chunk
            if c.narrow_memory_read:
                per_memory_layer += 2 * d * w + 2 * c.mem_head_width * d  # its own query, its answer widened
        forward = (c.n_layers * per_layer + len(c.memory_layers) * per_memory_layer + 2 * d * c.vocab_size
                   + (2 * d * d if c.token_shift else 0))
        return 3 * forward

    # ---- input checks ----------------------------------------------------------------

    def _check_tokens(self, tokens: Tensor, batch_size: int) -> None:
        c = self.cfg
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, time]; got shape {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"tokens must be integer ids; got dtype {tokens.dtype}")
        if not 0 < tokens.shape[1] <= c.segment_len:
            raise ValueError(f"a segment holds 1..{c.segment_len} tokens (segment_len); got {tokens.shape[1]}")
        if tokens.shape[0] != batch_size:
            raise ValueError(f"tokens have batch size {tokens.shape[0]} but the state was made for "
                             f"{batch_size} rows; call init_state({tokens.shape[0]})")
        lo, hi = torch.aminmax(tokens)
        if lo < 0 or hi >= c.vocab_size:
            raise ValueError(f"token ids must lie in [0, {c.vocab_size}) (vocab_size); "
                             f"got min {int(lo)}, max {int(hi)}")


def stacked(layers: list[tuple[Tensor, ...]]) -> MemoryState:
    """The state of every layer's (mem, valid, read_bias, carry[, kv]), stacked over layers."""
    mem, valid, read_bias, carry, *kv = (torch.stack(parts) for parts in zip(*layers, strict=True))
    return MemoryState(mem, valid, carry, read_bias, *kv)


def by_layer(state: MemoryState) -> list[tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]]:
    """Each layer's (mem, valid, read_bias, carry, kv); kv is None where the keys and values are not projected.

    One unbind per tensor: its backward stacks the layers' gradients once, where indexing layer
    by layer would fill a zero tensor the size of all layers for each of them.
    """
    kv = [None] * state.mem.shape[0] if state.kv is None else state.kv.unbind(0)
    return list(zip(state.mem.unbind(0), state.valid.unbind(0), state.read_bias.unbind(0), state.carry.unbind(0), kv,
                    strict=True))


def sample(logits: Tensor, temperature: float, top_k: Optional[int]) -> Tensor:
    """Draw one token per row from logits [B, V]."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1)[:, 0]
