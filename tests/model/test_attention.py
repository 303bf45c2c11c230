"""docs/design.md, invariant 2: each path is the attention it claims to be."""

import math

import torch

from model.attention import MixedAttention, global_attention, local_attention, memory_attention, with_sink
from model.config import RMATConfig
from model.layers import Rotary


def reference_attention(q, k, v, allowed):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def qkv(t, b=2, h=3, d=8):
    return (torch.randn(b, h, t, d, dtype=torch.float64) for _ in range(3))


def test_global_path_is_causal_attention():
    q, k, v = qkv(12)
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    torch.testing.assert_close(global_attention(q, k, v), reference_attention(q, k, v, causal))


def test_local_path_is_full_attention_under_the_block_diagonal_causal_mask():
    q, k, v = qkv(12)
    i = torch.arange(12)
    block_causal = (i[:, None] >= i[None, :]) & (i[:, None] // 4 == i[None, :] // 4)
    torch.testing.assert_close(local_attention(q, k, v, chunk_len=4), reference_attention(q, k, v, block_causal))


def test_local_path_handles_a_partial_last_chunk():
    q, k, v = qkv(10)
    i = torch.arange(10)
    block_causal = (i[:, None] >= i[None, :]) & (i[:, None] // 4 == i[None, :] // 4)
    torch.testing.assert_close(local_attention(q, k, v, chunk_len=4), reference_attention(q, k, v, block_causal))


def test_memory_path_reads_only_valid_slots():
    q, km, vm = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    valid = torch.tensor([[False, True, False, True], [True, True, True, True]])
    out = memory_attention(q, km, vm, valid)
    torch.testing.assert_close(out, reference_attention(q, km, vm, valid[:, None, None, :]))
    changed = vm.clone()
    changed[0, :, 0] += 10.0  # an invalid slot of row 0
    torch.testing.assert_close(memory_attention(q, km, changed, valid)[0], out[0])


def test_memory_read_adds_each_slots_bias_to_its_logit():
    q, km, vm = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    valid = torch.tensor([[False, True, True, True], [True, True, True, True]])
    bias = torch.tensor([[5.0, -1.0, 0.0, 2.0], [-30.0, 0.5, 0.0, -2.0]])
    logits = (q @ km.transpose(-1, -2) / math.sqrt(8) + bias[:, None, None, :])
    weights = logits.masked_fill(~valid[:, None, None, :], float("-inf")).softmax(-1)
    torch.testing.assert_close(memory_attention(q, km, vm, valid, bias), weights @ vm)


def test_memory_path_reads_zero_when_no_slot_is_valid():
    q, km, vm = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    valid = torch.tensor([[False] * 4, [True] * 4])
    out = memory_attention(q, km, vm, valid)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert out[1].abs().sum() > 0


def test_memory_sink_takes_softmax_weight_and_adds_no_value():
    q, km, vm = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    valid = torch.tensor([[False, True, False, True], [True, True, True, True]])
    sink_key = torch.randn(3, 8)
    out = memory_attention(q, *with_sink(km, vm, valid, sink_key))
    entries = (q @ km.transpose(-1, -2) / math.sqrt(8)).masked_fill(~valid[:, None, None, :], float("-inf"))
    sink = (q @ sink_key[None, :, :, None] / math.sqrt(8))  # [B, H, T, 1]
    weights = torch.cat([sink, entries], dim=-1).softmax(-1)[..., 1:]
    torch.testing.assert_close(out, weights @ vm)
    assert (weights.sum(-1) < 1).all()  # every row gives the sink some weight


def test_memory_sink_reads_zero_when_no_entry_is_valid():
    q, km, vm = torch.randn(1, 3, 5, 8), torch.randn(1, 3, 4, 8), torch.randn(1, 3, 4, 8)
    out = memory_attention(q, *with_sink(km, vm, torch.zeros(1, 4, dtype=torch.bool), torch.randn(3, 8)))
    assert torch.equal(out, torch.zeros_like(out))


def test_each_memory_head_answers_for_its_own_group_of_heads():
    torch.manual_seed(0)
    attn = MixedAttention(RMATConfig(d_model=32, n_heads=4, mem_heads=2, mem_head_dim=4, segment_len=8, chunk_len=4))
    q, kv = torch.randn(1, 2, 8, 4), torch.randn(1, 5, 2 * 2 * 4)  # [keys of heads 0, 1 | values of heads 0, 1]
    valid, bias = torch.ones(1, 5, dtype=torch.bool), torch.zeros(1, 5)
    edited = kv.clone()
    edited[..., 12:] += 1.0  # memory head 1's values
    before, after = attn._read_memory(q, kv, valid, bias), attn._read_memory(q, edited, valid, bias)
    assert torch.equal(before[:, :2], after[:, :2])
    assert not torch.allclose(before[:, 2:], after[:, 2:])


def test_rope_scores_depend_only_on_relative_position():
    rotary = Rotary(head_dim=16, max_len=64, base=10000.0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m, n):
        return (rotary(q, start=m) * rotary(k, start=n)).sum().item()

    assert math.isclose(score(5, 2), score(40, 37), rel_tol=1e-5, abs_tol=1e-5)
    assert math.isclose(score(9, 9), score(0, 0), rel_tol=1e-5, abs_tol=1e-5)
    assert not math.isclose(score(5, 2), score(5, 3), rel_tol=1e-2)
