"""RMAT as two stateless graphs for ONNX: the memory and the decoding cache are inputs and outputs.

``segment.onnx``  tokens [B, T <= S] + memory            -> logits [B, T, V] + next memory
``step.onnx``     one token per row + segment cache + pos + memory
                                                        -> logits [B, V] + next cache, pos, memory

With ``token_shift`` the step also takes and gives ``emb`` [B, 1, D], the embedding of the
segment's last token so far (zeros at its start), after ``y_cache``: ``step_names(cfg)``. With
``mem_token_gate="read"`` both graphs take and give the memory's ``read_bias`` [L, B, M] after
``carry``. A model with a memory path takes and gives ``mem_kv`` [L, B, M, 2 G m] last: each slot's
keys and values as the read attends them (``MemoryState.kv``), so a write projects only its new
entries and a step none (``segment_names(cfg)``).

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
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.attention import MixedAttention
from model.layers import rotate_half
from model.memory import MemoryWriter, span_entries, token_entries
from model.rmat import stacked
from model.state import MemoryState

MEMORY_STATE = ["mem", "valid", "carry"]
STEP_CACHE = ["k_cache", "v_cache", "y_cache"]
SEGMENT_FILE, STEP_FILE = "segment.onnx", "step.onnx"


def memory_state_names(cfg) -> list[str]:
    """The memory both graphs take and give back, in order."""
    return (MEMORY_STATE + (["read_bias"] if cfg.mem_token_gate == "read" else [])
            + (["mem_kv"] if cfg.has_memory else []))


def segment_names(cfg) -> tuple[list[str], list[str]]:
    """segment.onnx's input and output names for a model of config ``cfg``."""
    state = memory_state_names(cfg)
    return ["tokens", *state], ["logits", *(f"{name}_out" for name in state)]


def step_state_names(cfg) -> list[str]:
    """The state step.onnx takes and gives back (each output named with ``_out``), in order."""
    return STEP_CACHE + (["emb"] if cfg.token_shift else []) + ["pos"] + memory_state_names(cfg)


def step_names(cfg) -> tuple[list[str], list[str]]:
    """step.onnx's input and output names for a model of config ``cfg``."""
    state = step_state_names(cfg)
    return ["token", *state], ["logits", *(f"{name}_out" for name in state)]


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


def write_memory(writer: MemoryWriter, attn: MixedAttention, y: Tensor, present: Tensor, mem: Tensor, valid: Tensor,
                 read_bias: Tensor, carry: Tensor, kv: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``Block.write`` on y [B, S, D] of which the positions ``present`` [S] are real.

    Every one of the S / C chunks is computed; a chunk with no real token leaves the GRU
    carry as it was, and the FIFO keeps the last M of (old slots, carries of real chunks,
    token entries of real chunks); the slots' keys and values ``kv`` follow it, only the new
    entries projected.
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
    new, fresh = torch.stack(carries, dim=1), torch.ones(b, n_chunks, dtype=torch.bool, device=valid.device)
    bias = new.new_zeros(b, n_chunks)
    k = writer.tokens_per_chunk
    if k:
        if writer.spans:
            tokens, tokens_real, tokens_bias = span_entries(x, in_chunk, k)
        else:
            tokens, tokens_real, tokens_bias = token_entries(x, in_chunk, summaries, writer.token_score.to(x.dtype),
                                                             k, writer.gate_reads)
        new, fresh = torch.cat([new, tokens], dim=1), torch.cat([fresh, tokens_real], dim=1)
        bias = torch.cat([bias, tokens_bias], dim=1)
    # Real chunks come first. The eager write appends (carries, tokens) of the r real chunks only;
    # here all n are appended, so the last M slots of the eager FIFO, e = r(1 + k) .. M + r(1 + k) - 1,
    # lie at e here, or past the n - r unreal carries once e reaches the tokens.
    slots, r = mem.shape[1], chunk_real.sum()
    e = torch.arange(slots, device=y.device) + r * (1 + k)
    window = e + (e >= slots + r).long() * (n_chunks - r)
    kv = torch.cat([kv, attn.memory_kv(new)], dim=1).index_select(1, window)
    mem = torch.cat([mem, new], dim=1).index_select(1, window)
    valid = torch.cat([valid, fresh], dim=1).index_select(1, window)
    read_bias = torch.cat([read_bias, bias], dim=1).index_select(1, window)
    return mem, valid, read_bias, carry, kv


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """``nn.RMSNorm`` written out, for TorchScript."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def write_full_segment(y: Tensor, mem: Tensor, valid: Tensor, read_bias: Tensor, carry: Tensor, kv: Tensor,
                       norm_weight: Tensor, eps: float, attn_pool: bool, pool_query: Tensor, w_ih: Tensor, w_hh: Tensor,
                       b_ih: Tensor, b_hh: Tensor, chunk_len: int, tokens_per_chunk: int, token_score: Tensor,
                       gate_reads: bool, spans: bool, kv_norm_weight: Tensor, kv_eps: float, w_kv: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``Block.write`` on a whole segment y [B, S, D], its parameters passed as tensors (TorchScript): the
    writer's, then the memory keys' and values' norm and projection."""
    b, s, d = y.size(0), y.size(1), y.size(2)
    n_chunks = s // chunk_len
    x = rms_norm(y, norm_weight, eps).view(b, n_chunks, chunk_len, d)
    if attn_pool:
        w = torch.softmax(torch.matmul(x, pool_query) / float(d) ** 0.5, dim=-1)
        summaries = (x * w.unsqueeze(-1)).sum(2)
    else:
        summaries = x.mean(2)
    carries = []
    for i in range(n_chunks):
        carry = gru_gates(summaries[:, i], carry, w_ih, w_hh, b_ih, b_hh)
        carries.append(carry)
    new = torch.stack(carries, dim=1)
    bias = torch.zeros(b, n_chunks, dtype=y.dtype, device=y.device)
    if tokens_per_chunk > 0:
        every = torch.ones(n_chunks, chunk_len, dtype=torch.bool, device=y.device)
        if spans:
            tokens, _, tokens_bias = span_entries(x, every, tokens_per_chunk)
        else:
            tokens, _, tokens_bias = token_entries(x, every, summaries, token_score, tokens_per_chunk, gate_reads)
        new, bias = torch.cat([new, tokens], dim=1), torch.cat([bias, tokens_bias], dim=1)
    n_new = new.size(1)
    kv = torch.cat([kv, F.linear(rms_norm(new, kv_norm_weight, kv_eps), w_kv)], dim=1)[:, n_new:]
    mem = torch.cat([mem, new], dim=1)[:, n_new:]
    valid = torch.cat([valid, torch.ones(b, n_new, dtype=torch.bool, device=valid.device)], dim=1)[:, n_new:]
    read_bias = torch.cat([read_bias, bias], dim=1)[:, n_new:]
    return mem, valid, read_bias, carry, kv


def write_if_full(full: Tensor, y: Tensor, mem: Tensor, valid: Tensor, read_bias: Tensor, carry: Tensor, kv: Tensor,
                  norm_weight: Tensor, eps: float, attn_pool: bool, pool_query: Tensor, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Tensor, b_hh: Tensor, chunk_len: int, tokens_per_chunk: int, token_score: Tensor,
                  gate_reads: bool, spans: bool, kv_norm_weight: Tensor, kv_eps: float, w_kv: Tensor
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The memory write when the segment is full, else the state unchanged: an ONNX ``If``, so a step
    that does not end a segment does not pay for the write."""
    if bool(full):
        return write_full_segment(y, mem, valid, read_bias, carry, kv, norm_weight, eps, attn_pool, pool_query,
                                  w_ih, w_hh, b_ih, b_hh, chunk_len, tokens_per_chunk, token_score, gate_reads,
                                  spans, kv_norm_weight, kv_eps, w_kv)
    return mem, valid, read_bias, carry, kv


with warnings.catch_warnings():
    # Scripted, not traced: a trace would keep one branch of the `if`, a script exports it as an ONNX If.
    # torch.jit.script is deprecated, but torch.export's ONNX path would add onnxscript as a dependency.
    warnings.simplefilter("ignore", DeprecationWarning)
    scripted_write_if_full = torch.jit.script(write_if_full)


def memory_of(state: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(mem, valid, read_bias, carry, mem_kv) of a graph's named state; a graph without ``read_bias`` reads
    every slot unbiased, one without a memory path has no keys and values (an empty [L, B, M, 0])."""
    mem, valid = state["mem"], state["valid"]
    read_bias = state["read_bias"] if "read_bias" in state else torch.zeros_like(valid, dtype=mem.dtype)
    kv = state["mem_kv"] if "mem_kv" in state else mem[..., :0]
    return mem, valid, read_bias, state["carry"], kv


def memory_rows(cfg) -> dict[int, int]:
    """Which row of the graphs' memory each layer holding a memory reads and writes: {layer: row}."""
    return {layer: row for row, layer in enumerate(cfg.memory_layers)} if cfg.has_memory else {}


def named_memory(state: MemoryState) -> dict[str, Tensor]:
    """A state's tensors under the graphs' names."""
    return {"mem": state.mem, "valid": state.valid, "carry": state.carry, "read_bias": state.read_bias,
            "mem_kv": state.kv}


class SegmentGraph(nn.Module):
    """``RMAT.forward`` with T dynamic: (tokens, *memory) -> (logits, *next memory), the memory named by
    ``memory_state_names``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.state_names = memory_state_names(model.cfg)

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        mem, valid, read_bias, carry, kv = memory_of(dict(zip(self.state_names, state, strict=True)))
        m, s = self.model, self.model.cfg.segment_len
        b = tokens.shape[0]
        # Padding at the end: causal attention keeps it from every real token, the memory write masks it.
        padded = torch.cat([tokens, tokens.new_zeros(b, s)], dim=1)[:, :s]
        present = torch.cat([torch.ones_like(tokens[0], dtype=torch.bool),
                             torch.zeros(s, dtype=torch.bool, device=tokens.device)])[:s]
        x = m.embed(padded)  # the shift's first token has no predecessor: a segment starts here
        rows, layers = memory_rows(m.cfg), []
        for i, block in enumerate(m.blocks):
            if i not in rows:
                x, _, _ = block(x, None, None, None)
                continue
            r = rows[i]
            x, _, _ = block(x, kv[r], valid[r], read_bias[r])
            layers.append(write_memory(block.writer, block.attn, x, present, mem[r], valid[r], read_bias[r], carry[r],
                                       kv[r]))
        logits = m.lm_head(m.norm_f(x[:, :tokens.shape[1]]))
        out = named_memory(stacked(layers)) if layers else named_memory(MemoryState(mem, valid, carry, read_bias, kv))
        return (logits, *(out[name] for name in self.state_names))


def _attend_step(attn: MixedAttention, u: Tensor, k_cache: Tensor, v_cache: Tensor, pos: Tensor,
                 mem_kv: Optional[Tensor], valid: Optional[Tensor], read_bias: Optional[Tensor]
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """``MixedAttention.step`` with the position as a tensor: masks over the whole cache instead of slices."""
    cfg = attn.cfg
    s = k_cache.shape[2]
    q, k, v = (attn._heads(x, attn.cfg.n_heads) for x in attn.wqkv(u).chunk(3, dim=-1))
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
            outs.append(attn._read_memory(attn.memory_query(u, q), mem_kv, valid, read_bias))
    return attn._mix(outs), k_cache, v_cache


class StepGraph(nn.Module):
    """``RMAT.step``: one token per row against the segment's cache; writes the memory when the segment fills.

    Takes (token, *state) and gives (logits, *next state), the state named by ``step_state_names``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.state_names = step_state_names(model.cfg)

    def forward(self, token: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        st = dict(zip(self.state_names, state, strict=True))
        k_cache, v_cache, y_cache, pos = st["k_cache"], st["v_cache"], st["y_cache"], st["pos"]
        mem, valid, read_bias, carry, kv = memory_of(st)
        m, s = self.model, self.model.cfg.segment_len
        emb = m.tok_emb(token[:, None])
        x = emb if m.shift is None else m.shift(emb, st["emb"])
        here = (torch.arange(s, device=token.device) == pos).view(1, s, 1)
        rows, ks, vs, ys = memory_rows(m.cfg), [], [], []
        for i, block in enumerate(m.blocks):
            r = rows.get(i)
            memory = (None, None, None) if r is None else (kv[r], valid[r], read_bias[r])
            a, k_i, v_i = _attend_step(block.attn, block.attn_norm(x), k_cache[i], v_cache[i], pos, *memory)
            x = x + a
            x = x + block.ffn(block.ffn_norm(x))
            ks.append(k_i), vs.append(v_i), ys.append(torch.where(here, x, y_cache[i]))
        logits = m.lm_head(m.norm_f(x))[:, 0]
        full = pos == s - 1
        layers = []
        for i, r in rows.items():
            block = m.blocks[i]
            w, before = block.writer, (mem[r], valid[r], read_bias[r], carry[r], kv[r])
            zeros = torch.zeros(m.cfg.d_model)
            query = w.pool_query if w.pool == "attn" else zeros
            token_score = w.token_score if w.tokens_per_chunk and not w.spans else zeros
            layers.append(scripted_write_if_full(full, ys[i], *before, w.norm.weight, float(w.norm.eps),
                                                 w.pool == "attn", query, w.gru.weight_ih, w.gru.weight_hh,
                                                 w.gru.bias_ih, w.gru.bias_hh, w.chunk_len, w.tokens_per_chunk,
                                                 token_score, w.gate_reads, w.spans, block.attn.mem_norm.weight,
                                                 float(block.attn.mem_norm.eps), block.attn.wkv_mem.weight))
        next_pos = torch.where(full, torch.zeros_like(pos), pos + 1)
        out = {"k_cache": torch.stack(ks), "v_cache": torch.stack(vs), "y_cache": torch.stack(ys), "pos": next_pos,
               "emb": torch.where(full, torch.zeros_like(emb), emb),
               **named_memory(stacked(layers) if layers else MemoryState(mem, valid, carry, read_bias, kv))}
        return (logits, *(out[name] for name in self.state_names))


def example_inputs(model: nn.Module, batch: int = 2, tokens: int = 3) -> tuple[tuple, tuple]:
    """Inputs to trace both graphs with: batch and length >= 2, so the exporter keeps them dynamic."""
    c = model.cfg
    state = model.init_state(batch)
    memory = {"mem": state.mem, "valid": state.valid, "carry": state.carry, "read_bias": state.read_bias,
              "mem_kv": state.mem.new_zeros(*state.mem.shape[:-1], c.mem_kv_width)}
    seg = (torch.zeros(batch, tokens, dtype=torch.long), *(memory[name] for name in memory_state_names(c)))
    cache = model.init_cache(batch)
    values = {"k_cache": cache.k, "v_cache": cache.v, "y_cache": cache.y, "emb": cache.emb,
              "pos": torch.tensor(min(2, c.segment_len - 1)), **memory}
    step = (torch.zeros(batch, dtype=torch.long), *(values[name] for name in step_state_names(c)))
    return seg, step


def export_onnx(model: nn.Module, folder: str) -> list[str]:
    """Write segment.onnx and step.onnx of ``model`` (fp32, eval) into ``folder``; returns their names."""
    model = exportable(model)
    seg_inputs, step_inputs = example_inputs(model)
    batch = {"tokens": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    for name in memory_state_names(model.cfg):
        batch[name] = batch[f"{name}_out"] = {1: "batch"}
    seg_input_names, seg_output_names = segment_names(model.cfg)
    step_input_names, step_output_names = step_names(model.cfg)
    step_axes = {"token": {0: "batch"}, "logits": {0: "batch"}}
    for name in step_state_names(model.cfg):
        if name != "pos":
            step_axes[name] = step_axes[f"{name}_out"] = {0 if name == "emb" else 1: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # local_attention's `if pad:` is traced once; the segment graph pads to S, a multiple of C, so pad is 0.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The TorchScript exporter (dynamo=False), on purpose: these graphs have no data-dependent control
        # flow for torch.export to capture, and the newer exporter would add onnxscript as a dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(SegmentGraph(model), seg_inputs, os.path.join(folder, SEGMENT_FILE),
                          input_names=seg_input_names, output_names=seg_output_names, dynamic_axes=batch,
                          opset_version=17, dynamo=False)
        torch.onnx.export(StepGraph(model), step_inputs, os.path.join(folder, STEP_FILE),
                          input_names=step_input_names, output_names=step_output_names, dynamic_axes=step_axes,
                          opset_version=17, dynamo=False)
    return [SEGMENT_FILE, STEP_FILE]
