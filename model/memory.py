"""The gated FIFO memory write: chunk summaries through a GRU into a queue of M slots.

    for each chunk c of the segment, in order:
        s_c   = Pool(RMSNorm(y) over the chunk's tokens)
        carry = GRUCell(s_c, carry)
        push carry into the FIFO, drop the oldest past M slots, mark it valid

The norm keeps the pooled residual stream at a scale the GRU's gates can use. With
``mem_tokens_per_chunk`` k > 0 each chunk also pushes its k highest-scoring tokens as
entries of their own (``salient_tokens``), content a summary cannot address token by token;
with ``mem_token_sampling`` training draws them by Gumbel-top-k instead, and with
``mem_token_choice="spans"`` the k entries are the means of the chunk's k spans of C / k
tokens. Each slot also carries a read bias, added to its logit whenever the memory is read:
log sigmoid(score) for a token entry under ``mem_token_gate="read"``, zero otherwise.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import RMATConfig


def push(fifo: Tensor, new: Tensor) -> Tensor:
    """The FIFO fifo [B, M, ...] after pushing new [B, n, ...] (newest last): its last M entries.

    The old entries that stay are sliced before the concatenation, so neither the forward nor the
    backward builds the M + n entries only to drop n of them.
    """
    m, n = fifo.shape[1], new.shape[1]
    return new[:, n - m:] if n >= m else torch.cat([fifo[:, n:], new], dim=1)


class MemoryWriter(nn.Module):
    """Writes one layer's memory from that layer's output for a segment."""

    def __init__(self, cfg: RMATConfig) -> None:
        super().__init__()
        self.chunk_len = cfg.chunk_len
        self.pool = cfg.pool
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        if cfg.pool == "attn":
            # A learned query that can pick one salient token a mean would wash out.
            self.pool_query = nn.Parameter(torch.zeros(cfg.d_model))
        self.gru = nn.GRUCell(cfg.d_model, cfg.d_model)
        self.tokens_per_chunk = cfg.token_entries
        # Set by RMAT.write_every_token: in training, every token of a chunk becomes an entry.
        self.every_token_in_training = False
        self.sample_tokens = cfg.mem_token_sampling
        self.gate_reads = cfg.mem_token_gate == "read"
        self.spans = cfg.mem_token_choice == "spans"
        if self.tokens_per_chunk and not self.spans:
            self.token_score = nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, y: Tensor, mem: Tensor, valid: Tensor, read_bias: Tensor, carry: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """y [B, T, D] (T <= S; a partial last chunk pools its tokens); returns mem, valid, read_bias, carry."""
        summaries = self.summarize(y)  # [B, n, D]
        carries = []
        for c in range(summaries.shape[1]):
            carry = self.gru(summaries[:, c], carry)
            carries.append(carry)
        new = torch.stack(carries, dim=1)
        fresh = torch.ones(new.shape[:2], dtype=torch.bool, device=valid.device)
        bias = new.new_zeros(new.shape[:2])
        if self.tokens_per_chunk:
            tokens, tokens_real, tokens_bias = self.salient_tokens(y, summaries)
            new, fresh = torch.cat([new, tokens], dim=1), torch.cat([fresh, tokens_real], dim=1)
            bias = torch.cat([bias, tokens_bias], dim=1)
        return push(mem, new), push(valid, fresh), push(read_bias, bias.to(read_bias.dtype)), carry

    def entries_written(self, t: int) -> int:
        """How many entries a write of t tokens pushes: per chunk its summary, then its k tokens."""
        return -(-t // self.chunk_len) * (1 + self._tokens_written())

    def _tokens_written(self) -> int:
        return self.chunk_len if self.training and self.every_token_in_training else self.tokens_per_chunk

    def salient_tokens(self, y: Tensor, summaries: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The k highest-scoring tokens of each chunk as entries (in training with ``mem_token_sampling``:
        k drawn without replacement with probabilities softmax(score); with ``spans``, the means of its
        k spans): [B, n * k, D], which are real, and their read biases."""
        x, present = self._chunks(y)  # [B, n, C, D], [n, C]
        if self.spans:
            return span_entries(x, present, self._tokens_written())
        noise = gumbel_noise(x[..., 0]) if self.training and self.sample_tokens else None
        return token_entries(x, present, summaries, self.token_score.to(x.dtype), self._tokens_written(),
                             self.gate_reads, noise)

    def summarize(self, y: Tensor) -> Tensor:
        """Pool each chunk of y [B, T, D] into one vector: [B, ceil(T / C), D]."""
        x, present = self._chunks(y)
        d = x.shape[-1]
        if self.pool == "mean":
            w = present.to(x.dtype) / present.sum(-1, keepdim=True).to(x.dtype)
            return torch.einsum("bncd,nc->bnd", x, w)
        scores = (x @ self.pool_query.to(x.dtype)) / d ** 0.5  # [B, n, C]
        w = scores.masked_fill(~present, float("-inf")).softmax(dim=-1)
        return torch.einsum("bncd,bnc->bnd", x, w)

    def _chunks(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """RMSNorm(y) [B, T, D] cut into chunks, [B, n, C, D], and which positions [n, C] are real."""
        b, t, d = y.shape
        pad = -t % self.chunk_len
        n = (t + pad) // self.chunk_len
        x = F.pad(self.norm(y), (0, 0, 0, pad)).view(b, n, self.chunk_len, d)
        present = (torch.arange(n * self.chunk_len, device=y.device) < t).view(n, self.chunk_len)
        return x, present


def gumbel_noise(like: Tensor) -> Tensor:
    """Gumbel(0, 1) noise shaped like ``like``: the top k of scores + this noise are k draws without
    replacement with probabilities softmax(scores) (Gumbel-top-k)."""
    return -torch.empty_like(like).exponential_().log()  # -log of an Exp(1) draw is Gumbel(0, 1)


def span_entries(x: Tensor, present: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The means of the k spans of C / k consecutive tokens of each of the normed chunks x [B, n, C, D]
    (``present`` [n, C]: the real positions, which alone are averaged) as entries [B, n * k, D], which
    entries hold a real token [B, n * k], and their read biases (zero) [B, n * k].

    Written for TorchScript too: the ONNX graphs' memory writes call it.
    """
    b, n, c, d = x.size(0), x.size(1), x.size(2), x.size(3)
    w = present.to(x.dtype).view(n, k, c // k)
    count = w.sum(-1)  # [n, k]
    entries = torch.einsum("bnksd,nks->bnkd", x.view(b, n, k, c // k, d), w) / count.clamp(min=1.0).unsqueeze(-1)
    real = (count > 0).unsqueeze(0).expand(b, -1, -1)
    return entries.flatten(1, 2), real.flatten(1, 2), x.new_zeros(b, n * k)


def token_entries(x: Tensor, present: Tensor, summaries: Tensor, token_score: Tensor, k: int,
                  gate_reads: bool = False, noise: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """The k highest-scoring of the normed chunks' tokens x [B, n, C, D] (``present`` [n, C]: the real
    positions) as entries [B, n * k, D], which entries are real tokens [B, n * k], and the entries'
    read biases [B, n * k]. ``noise`` [B, n, C], when given, is added to the scores for the choice only.
    With k = C every token is an entry, in order: scores that tie (an untrained model's are all zero)
    would otherwise leave the order to the sort, which PyTorch and ONNX runtimes break differently.

    The choice itself has no gradient; a gate g = sigmoid(score) has, so the score learns which
    tokens pay to keep. By default an entry is g * token + (1 - g) * its chunk's summary, read
    unbiased; with ``gate_reads`` it is the token, and every read adds log g to its logit.
    Written for TorchScript too: the ONNX graphs' memory writes call it.
    """
    scores = torch.matmul(x, token_score).masked_fill(~present, float("-inf"))  # [B, n, C]
    if k == x.size(2):  # every token: nothing to choose, so the entries keep the chunk's order, not the scores'
        idx = torch.arange(k, device=x.device).expand(x.size(0), x.size(1), k)
    else:
        idx = (scores if noise is None else scores + noise).topk(k, dim=-1).indices  # [B, n, k]
    top = scores.gather(2, idx)
    picked = x.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, x.size(3)))  # [B, n, k, D]
    real = present.unsqueeze(0).expand(x.size(0), -1, -1).gather(2, idx)
    if gate_reads:
        # A padded position scores -inf; its entry is never valid, so its bias is never read.
        bias = F.logsigmoid(top.masked_fill(~real, 0.0))
        return picked.flatten(1, 2), real.flatten(1, 2), bias.flatten(1, 2)
    g = torch.sigmoid(top).unsqueeze(-1)
    entries = g * picked + (1 - g) * summaries.unsqueeze(2)
    return entries.flatten(1, 2), real.flatten(1, 2), torch.zeros_like(top).flatten(1, 2)
