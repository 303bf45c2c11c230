"""segment.onnx and step.onnx under onnxruntime compute what the PyTorch model computes, memory carried outside."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_model
from torch import nn

from model import RMAT, RMATConfig
from model.onnx_graphs import export_onnx, gru_cell, segment_names, step_names
from model.pretrained import config_from_dict
from pipeline.inference import OnnxDecoder, Sampling, TorchDecoder, generate_ids

S = 16
# Large initial weights: an untrained model whose greedy choice changes from token to token.
CFG = RMATConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=2, segment_len=S, chunk_len=4, mem_slots=6,
                 init_std=0.5)


VARIANTS = {"mean_pool": {"pool": "mean"}, "attn_pool": {"pool": "attn"}, "mem_sink": {"mem_sink": True},
            # 4 chunks of a segment write 4 carries + 8 tokens: a FIFO of 18 holds one and a half segments
            "token_entries": {"mem_tokens_per_chunk": 2, "mem_slots": 18},
            "read_gated_tokens": {"mem_tokens_per_chunk": 2, "mem_slots": 18, "mem_token_gate": "read"},
            "token_spans": {"mem_tokens_per_chunk": 2, "mem_slots": 18, "mem_token_choice": "spans"},
            "token_shift": {"token_shift": True},
            # keys, values and queries 4 wide instead of the heads' 16, the read widened back
            "narrow_read": {"mem_tokens_per_chunk": 2, "mem_slots": 18, "mem_head_dim": 4},
            # one head of 8 reads the memory for both heads of 16
            "one_memory_head": {"mem_tokens_per_chunk": 2, "mem_slots": 18, "mem_heads": 1, "mem_head_dim": 8},
            # the second layer alone holds a memory: the graphs' memory has one layer
            "memory_in_one_layer": {"mem_tokens_per_chunk": 2, "mem_slots": 18, "mem_heads": 1, "mem_layers": [1]}}


@pytest.fixture(scope="module", params=list(VARIANTS))
def graphs(request, tmp_path_factory):
    """(model, folder holding config.json, segment.onnx and step.onnx), for each way a chunk is pooled,
    a memory read with a sink, token memory entries (mixed with their summary or read through a bias)
    the token shift, a memory read by narrower or fewer heads, and a memory in one layer of two."""
    torch.manual_seed(0)
    cfg = replace(CFG, **VARIANTS[request.param])
    model = RMAT(cfg).eval()
    if request.param == "attn_pool":  # its query starts at zero (a mean): make it pick tokens
        for block in model.memory_blocks:
            torch.nn.init.normal_(block.writer.pool_query, std=1.0)
    if request.param == "mem_sink":  # its key starts at zero: make it score unlike an entry
        for block in model.memory_blocks:
            torch.nn.init.normal_(block.attn.mem_sink_key, std=1.0)
    if cfg.token_entries and cfg.mem_token_choice == "score":  # the score starts at zero: make it choose
        for block in model.memory_blocks:
            torch.nn.init.normal_(block.writer.token_score, std=1.0)
    folder = tmp_path_factory.mktemp("onnx")
    (folder / "config.json").write_text(json.dumps(asdict(cfg)))
    export_onnx(model, str(folder))
    return model, str(folder)


def test_gru_cell_written_out_equals_nn_grucell():
    cell = nn.GRUCell(8, 8)
    x, h = torch.randn(3, 8), torch.randn(3, 8)
    torch.testing.assert_close(gru_cell(cell, x, h), cell(x, h), rtol=0, atol=1e-6)


def test_graphs_take_and_give_the_documented_names_with_dynamic_batch_and_time(graphs):
    model, folder = graphs
    seg, step = (onnx.load(f"{folder}/{name}.onnx").graph for name in ("segment", "step"))
    assert ([i.name for i in seg.input], [o.name for o in seg.output]) == segment_names(model.cfg)
    assert ([i.name for i in step.input], [o.name for o in step.output]) == step_names(model.cfg)
    assert ("emb" in step_names(model.cfg)[0]) == model.cfg.token_shift
    assert ("read_bias" in segment_names(model.cfg)[0]) == ("read_bias" in step_names(model.cfg)[0]) == \
        (model.cfg.mem_token_gate == "read")
    assert "mem_kv" in segment_names(model.cfg)[0] and "mem_kv" in step_names(model.cfg)[0]
    tokens = seg.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in tokens] == ["batch", "time"]
    assert not seg.initializer or all(i.name not in segment_names(model.cfg)[0] for i in seg.initializer)


def test_segment_graph_matches_pytorch_over_a_stream_of_segments(graphs):
    model, folder = graphs
    decoder = OnnxDecoder(folder)
    decoder.reset(2)
    state = model.init_state(2)
    worst = 0.0
    for length in (S, S, 7, S, 2, S):  # whole and partial segments: T is dynamic
        tokens = torch.randint(0, CFG.vocab_size, (2, length))
        with torch.no_grad():
            logits, state = model(tokens, state)
        onnx_logits = decoder.run_segment(tokens.numpy())
        read_bias = decoder.state.get("read_bias", np.zeros_like(state.read_bias.numpy()))  # none: unbiased
        pairs = [(onnx_logits, logits), (decoder.state["mem"], state.mem), (read_bias, state.read_bias),
                 (decoder.state["mem_kv"], state.kv)]
        # Logits and keys reach 10 at this init, and float32 rounding compounds through the recurrence:
        # each within 2e-5 of its scale.
        worst = max(worst, *(float(np.abs(a - b.numpy()).max() / max(1.0, np.abs(b.numpy()).max()))
                             for a, b in pairs))
        assert (decoder.state["valid"] == state.valid.numpy()).all()
    assert worst < 2e-5


def test_greedy_decoding_after_a_three_segment_prompt_is_the_same_with_onnxruntime(graphs):
    model, folder = graphs
    prompt = torch.randint(0, CFG.vocab_size, (3 * S + 5,)).tolist()
    greedy = Sampling(max_new_tokens=64, temperature=0.0)
    from_torch = list(generate_ids(TorchDecoder(model), prompt, greedy))
    from_onnx = list(generate_ids(OnnxDecoder(folder), prompt, greedy))
    assert from_onnx == from_torch and len(from_torch) == 64
    assert len(set(from_torch)) > 5  # a continuation that varies, not one repeated token


def test_step_graph_logits_match_pytorch_step_across_a_memory_write(graphs):
    model, folder = graphs
    prompt = np.random.default_rng(0).integers(0, CFG.vocab_size, (2, S + 3))
    torch_decoder, onnx_decoder = TorchDecoder(model), OnnxDecoder(folder)
    a, b = torch_decoder.prefill(prompt), onnx_decoder.prefill(prompt)
    worst = float(np.abs(a - b).max())
    for _ in range(2 * S):  # crosses two segment ends, where the step writes the memory
        token = a.argmax(-1)
        a, b = torch_decoder.step(token), onnx_decoder.step(token)
        worst = max(worst, float(np.abs(a - b).max()))
    assert worst < 1e-4
    assert int(onnx_decoder.state["pos"]) == torch_decoder.cache.pos
    # the keys and values the step graph carried, projected only for the entries each write pushed
    np.testing.assert_allclose(onnx_decoder.state["mem_kv"], torch_decoder.cache.state.kv.numpy(), rtol=0, atol=1e-4)


def test_a_folder_exported_before_the_graphs_carried_mem_kv_decodes_as_pytorch():
    folder = Path(__file__).parent.parent / "data" / "onnx_before_mem_kv"  # exported by rmat 010b226
    model = RMAT(config_from_dict(json.loads((folder / "config.json").read_text()))).eval()
    load_model(model, str(folder / "model.safetensors"))
    decoder = OnnxDecoder(str(folder))
    assert "mem_kv" not in decoder.memory_state + decoder.step_state
    prompt = torch.randint(0, model.cfg.vocab_size, (3 * model.cfg.segment_len + 5,)).tolist()
    greedy = Sampling(max_new_tokens=32, temperature=0.0)
    assert list(generate_ids(decoder, prompt, greedy)) == list(generate_ids(TorchDecoder(model), prompt, greedy))


def test_a_prompt_many_segments_long_leaves_state_of_one_segment_and_the_memory(graphs):
    model, folder = graphs
    decoder = OnnxDecoder(folder)
    decoder.prefill(np.zeros((1, 2), np.int64))
    short = {k: v.shape for k, v in decoder.state.items()}
    decoder.prefill(np.zeros((1, 20 * S + 3), np.int64))
    assert {k: v.shape for k, v in decoder.state.items()} == short
    assert short["k_cache"][3] == S and short["mem"][2] == model.cfg.mem_slots
