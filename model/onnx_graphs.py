"""RMAT as two stateless graphs for ONNX: the memory and the decoding cache are inputs and outputs.

``segment.onnx``  tokens [B, T <= S] + memory            -> logits [B, T, V] + next memory
``step.onnx``     one token per row + segment cache + pos + memory
                                                        -> logits [B, V] + next cache, pos, memory

The graphs compute what ``RMAT.forward`` and ``RMAT.step`` compute, written so that every
shape inside is static (the segment is padded to S, positions are masks, not slices) and
every branch but one is a select. The one is the step's memory write, needed once per
segment: a scripted ``if`` that exports as an ONNX ``If``, so other steps skip it. The
GRU cell's gates and RMSNorm are written out: the TorchScript exporter has no mapping for
``aten::gru_cell`` or ``aten::rms_norm``.
"""

from __future__ import annotations

import copy
import os
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.attention import MixedAttention
from model.layers import rotate_half
from model.memory import MemoryWriter

SEGMENT_INPUTS = ["tokens", "mem", "valid", "carry"]
SEGMENT_OUTPUTS = ["logits", "mem_out", "valid_out", "carry_out"]
STEP_INPUTS = ["token", "k_cache", "v_cache", "y_cache", "pos", "mem", "valid", "carry"]
STEP_OUTPUTS = ["logits", "k_cache_out", "v_cache_out", "y_cache_out", "pos_out", "mem_out", "valid_out",
                "carry_out"]
SEGMENT_FILE, STEP_FILE = "segment.onnx", "step.onnx"


class ExplicitRMSNorm(nn.Module):
    """``nn.RMSNorm`` as elementary ops: the TorchScript exporter has no mapping for ``aten::rms_norm``."""

    def __init__(self, norm: nn.RMSNorm) -> None:
        super().__init__()
        self.weight, self.eps = norm.weight, norm.eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def exportable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (fp32, eval) whose RMSNorms are written out; the weights are copies."""
    model = copy.deepcopy(model).float().eval()
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.RMSNorm):
                setattr(module, name, ExplicitRMSNorm(child))
    return model


def gru_gates(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One ``nn.GRUCell`` step with its gates written out (PyTorch's r, z, n weight order)."""
    i_r, i_z, i_n = F.linear(x, w_ih, b_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    return (1 - z) * torch.tanh(i_n + r * h_n) + z * h


def gru_cell(cell: nn.GRUCell, x: Tensor, h: Tensor) -> Tensor:
    """``cell(x, h)`` through ``gru_gates``."""
    return gru_gates(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)


def write_memory(writer: MemoryWriter, y: Tensor, present: Tensor, mem: Tensor, valid: Tensor, carry: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """``MemoryWriter.forward`` on y [B, S, D] of which the positions ``present`` [S] are real.

    Every one of the S / C chunks is computed; a chunk with no real token leaves the GRU
    carry as it was, and the FIFO keeps the last M of (old slots, carries of real chunks).
    """
    b, s, d = y.shape
    c = writer.chunk_len
    n_chunks = s // c
    x = writer.norm(y).view(b, n_chunks, c, d)
    in_chunk = present.view(n_chunks, c)
    if writer.pool == "mean":
        w = in_chunk.to(x.dtype)
        w = w / w.sum(-1, keepdim=True).clamp(min=1)
        summaries = torch.einsum("bncd,nc->bnd", x, w)
    else:
        scores = (x @ writer.pool_query.to(x.dtype)) / d ** 0.5
        w = scores.masked_fill(~in_chunk, torch.finfo(x.dtype).min).softmax(dim=-1)
        summaries = torch.einsum("bncd,bnc->bnd", x, w)
    chunk_real = in_chunk.any(dim=-1)  # [n_chunks]
    carries = []
    for i in range(n_chunks):
        carry = torch.where(chunk_real[i], gru_cell(writer.gru, summaries[:, i], carry), carry)
        carries.append(carry)
    slots = mem.shape[1]
    # Real chunks come first, so the FIFO's next state is a window of (old slots, new carries).
    window = torch.arange(slots, device=y.device) + chunk_real.sum()
    mem = torch.cat([mem, torch.stack(carries, dim=1)], dim=1).index_select(1, window)
    fresh = torch.ones(b, n_chunks, dtype=torch.bool, device=valid.device)
    valid = torch.cat([valid, fresh], dim=1).index_select(1, window)
    return mem, valid, carry


def write_full_segment(y: Tensor, mem: Tensor, valid: Tensor, carry: Tensor, norm_weight: Tensor, eps: float,
                       attn_pool: bool, pool_query: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
                       chunk_len: int) -> tuple[Tensor, Tensor, Tensor]:
    """``MemoryWriter.forward`` on a whole segment y [B, S, D], its parameters passed as tensors (TorchScript)."""
    b, s, d = y.size(0), y.size(1), y.size(2)
    n_chunks = s // chunk_len
    x = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps) * norm_weight).view(b, n_chunks, chunk_len, d)
    if attn_pool:
        w = torch.softmax(torch.matmul(x, pool_query) / float(d) ** 0.5, dim=-1)
        summaries = (x * w.unsqueeze(-1)).sum(2)
    else:
        summaries = x.mean(2)
    carries = []
    for i in range(n_chunks):
        carry = gru_gates(summaries[:, i], carry, w_ih, w_hh, b_ih, b_hh)
        carries.append(carry)
    mem = torch.cat([mem, torch.stack(carries, dim=1)], dim=1)[:, n_chunks:]
    valid = torch.cat([valid, torch.ones(b, n_chunks, dtype=torch.bool, device=valid.device)], dim=1)[:, n_chunks:]
    return mem, valid, carry


def write_if_full(full: Tensor, y: Tensor, mem: Tensor, valid: Tensor, carry: Tensor, norm_weight: Tensor,
                  eps: float, attn_pool: bool, pool_query: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                  b_hh: Tensor, chunk_len: int) -> tuple[Tensor, Tensor, Tensor]:
    """The memory write when the segment is full, else the state unchanged: an ONNX ``If``, so a step
    that does not end a segment does not pay for the write."""
    if bool(full):
        return write_full_segment(y, mem, valid, carry, norm_weight, eps, attn_pool, pool_query, w_ih, w_hh,
                                  b_ih, b_hh, chunk_len)
    return mem, valid, carry


with warnings.catch_warnings():
    # Scripted, not traced: a trace would keep one branch of the `if`, a script exports it as an ONNX If.
    # torch.jit.script is deprecated, but torch.export's ONNX path would add onnxscript as a dependency.
    warnings.simplefilter("ignore", DeprecationWarning)
    scripted_write_if_full = torch.jit.script(write_if_full)


class SegmentGraph(nn.Module):
    """``RMAT.forward`` with T dynamic: (tokens, mem, valid, carry) -> (logits, mem, valid, carry)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, mem: Tensor, valid: Tensor, carry: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m, s = self.model, self.model.cfg.segment_len
        b = tokens.shape[0]
        # Padding at the end: causal attention keeps it from every real token, the memory write masks it.
        padded = torch.cat([tokens, tokens.new_zeros(b, s)], dim=1)[:, :s]
        present = torch.cat([torch.ones_like(tokens[0], dtype=torch.bool),
                             torch.zeros(s, dtype=torch.bool, device=tokens.device)])[:s]
        x = m.tok_emb(padded)
        mems, valids, carries = [], [], []
        for i, block in enumerate(m.blocks):
            x, _, _ = block(x, mem[i], valid[i])
            if block.writer is None:
                mems.append(mem[i]), valids.append(valid[i]), carries.append(carry[i])
                continue
            parts = write_memory(block.writer, x, present, mem[i], valid[i], carry[i])
            mems.append(parts[0]), valids.append(parts[1]), carries.append(parts[2])
        logits = m.lm_head(m.norm_f(x[:, :tokens.shape[1]]))
        return logits, torch.stack(mems), torch.stack(valids), torch.stack(carries)


def _attend_step(attn: MixedAttention, u: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor,
                 mem: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``MixedAttention.step`` with the position as a tensor: masks over the whole cache instead of slices."""
    cfg = attn.cfg
    s = k_cache.shape[2]
    q, k, v = (attn._heads(x) for x in attn.wqkv(u).chunk(3, dim=-1))
    where = pos.view(1)
    cos, sin = attn.rotary.cos.index_select(0, where).to(u.dtype), attn.rotary.sin.index_select(0, where).to(u.dtype)
    q_rot, k_rot = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    index = torch.arange(s, device=u.device)
    here = (index == pos).view(1, 1, s, 1)
    k_cache, v_cache = torch.where(here, k_rot, k_cache), torch.where(here, v, v_cache)
    seen = index <= pos
    outs = []
    for path in cfg.paths:
        if path == "global":
            outs.append(F.scaled_dot_product_attention(q_rot, k_cache, v_cache, attn_mask=seen.view(1, 1, 1, s)))
        elif path == "local":
            in_chunk = seen & (index >= pos - pos % cfg.chunk_len)
            outs.append(F.scaled_dot_product_attention(q_rot, k_cache, v_cache, attn_mask=in_chunk.view(1, 1, 1, s)))
        else:
            outs.append(attn._read_memory(q, mem, valid))
    return attn._mix(outs), k_cache, v_cache


class StepGraph(nn.Module):
    """``RMAT.step``: one token per row against the segment's cache; writes the memory when the segment fills."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: Tensor, k_cache: Tensor, v_cache: Tensor, y_cache: Tensor, pos: Tensor,
                mem: Tensor, valid: Tensor, carry: Tensor) -> tuple[Tensor, ...]:
        m, s = self.model, self.model.cfg.segment_len
        x = m.tok_emb(token[:, None])
        here = (torch.arange(s, device=token.device) == pos).view(1, s, 1)
        ks, vs, ys = [], [], []
        for i, block in enumerate(m.blocks):
            a, k_i, v_i = _attend_step(block.attn, block.attn_norm(x), k_cache[i], v_cache[i], pos, mem[i], valid[i])
            x = x + a
            x = x + block.ffn(block.ffn_norm(x))
            ks.append(k_i), vs.append(v_i), ys.append(torch.where(here, x, y_cache[i]))
        logits = m.lm_head(m.norm_f(x))[:, 0]
        full = pos == s - 1
        mems, valids, carries = [], [], []
        for i, block in enumerate(m.blocks):
            w = block.writer
            if w is None:
                mems.append(mem[i]), valids.append(valid[i]), carries.append(carry[i])
                continue
            query = w.pool_query if w.pool == "attn" else torch.zeros(m.cfg.d_model)
            parts = scripted_write_if_full(full, ys[i], mem[i], valid[i], carry[i], w.norm.weight,
                                           float(w.norm.eps), w.pool == "attn", query, w.gru.weight_ih,
                                           w.gru.weight_hh, w.gru.bias_ih, w.gru.bias_hh, w.chunk_len)
            mems.append(parts[0]), valids.append(parts[1]), carries.append(parts[2])
        next_pos = torch.where(full, torch.zeros_like(pos), pos + 1)
        return (logits, torch.stack(ks), torch.stack(vs), torch.stack(ys), next_pos,
                torch.stack(mems), torch.stack(valids), torch.stack(carries))


def example_inputs(model: nn.Module, batch: int = 2, tokens: int = 3) -> tuple[tuple, tuple]:
    """Inputs to trace both graphs with: batch and length >= 2, so the exporter keeps them dynamic."""
    c = model.cfg
    state = model.init_state(batch)
    seg = (torch.zeros(batch, tokens, dtype=torch.long), state.mem, state.valid, state.carry)
    cache = model.init_cache(batch)
    step = (torch.zeros(batch, dtype=torch.long), cache.k, cache.v, cache.y, torch.tensor(min(2, c.segment_len - 1)),
            state.mem, state.valid, state.carry)
    return seg, step


def export_onnx(model: nn.Module, folder: str) -> list[str]:
    """Write segment.onnx and step.onnx of ``model`` (fp32, eval) into ``folder``; returns their names."""
    if model.cfg.mem_tokens_per_chunk:
        raise ValueError(f"ONNX export does not write token memory entries (model.mem_tokens_per_chunk="
                         f"{model.cfg.mem_tokens_per_chunk}); export with --format safetensors")
    if model.cfg.token_shift:
        raise ValueError("ONNX export does not carry the token shift's previous embedding through step.onnx "
                         "(model.token_shift=true); export with --format safetensors")
    model = exportable(model)
    seg_inputs, step_inputs = example_inputs(model)
    batch = {"tokens": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    for name in ("mem", "valid", "carry", "mem_out", "valid_out", "carry_out"):
        batch[name] = {1: "batch"}
    step_axes = {"token": {0: "batch"}, "logits": {0: "batch"}}
    for name in ("k_cache", "v_cache", "y_cache", "mem", "valid", "carry"):
        step_axes[name] = step_axes[f"{name}_out"] = {1: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # local_attention's `if pad:` is traced once; the segment graph pads to S, a multiple of C, so pad is 0.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The TorchScript exporter (dynamo=False), on purpose: these graphs have no data-dependent control
        # flow for torch.export to capture, and the newer exporter would add onnxscript as a dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(SegmentGraph(model), seg_inputs, os.path.join(folder, SEGMENT_FILE),
                          input_names=SEGMENT_INPUTS, output_names=SEGMENT_OUTPUTS, dynamic_axes=batch,
                          opset_version=17, dynamo=False)
        torch.onnx.export(StepGraph(model), step_inputs, os.path.join(folder, STEP_FILE),
                          input_names=STEP_INPUTS, output_names=STEP_OUTPUTS, dynamic_axes=step_axes,
                          opset_version=17, dynamo=False)
    return [SEGMENT_FILE, STEP_FILE]
