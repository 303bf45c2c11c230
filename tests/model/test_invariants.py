"""docs/design.md, invariants 1, 3 and 4: causality, streaming equivalence, TBPTT."""

import pytest
import torch
from model_helpers import run_segments, tiny_model


def doc(n, b=2, vocab=97, seed=1):
    return torch.randint(0, vocab, (b, n), generator=torch.Generator().manual_seed(seed))


def record_embeddings(model):
    """Each forward's token embeddings, kept with their gradients."""
    embeddings = []

    def keep(module, inputs, output):
        output.retain_grad()
        embeddings.append(output)

    model.tok_emb.register_forward_hook(keep)
    return embeddings


@pytest.mark.parametrize("token_shift", [False, True])
@pytest.mark.parametrize("changed", [5, 15])
def test_logits_do_not_depend_on_later_tokens_within_a_segment(changed, token_shift):
    model = tiny_model(token_shift=token_shift)
    tokens = doc(16)
    edited = tokens.clone()
    edited[:, changed] = (edited[:, changed] + 1) % 97
    before, _ = run_segments(model, tokens)
    after, _ = run_segments(model, edited)
    assert torch.equal(before[:, :changed], after[:, :changed])
    assert not torch.allclose(before[:, changed:], after[:, changed:])


def test_logits_do_not_depend_on_later_segments():
    model = tiny_model()
    tokens = doc(56)  # three full segments and a partial one
    edited = tokens.clone()
    edited[:, 40] = (edited[:, 40] + 1) % 97
    before, _ = run_segments(model, tokens)
    after, _ = run_segments(model, edited)
    assert torch.equal(before[:, :40], after[:, :40])


def test_later_segments_read_what_earlier_segments_wrote():
    model = tiny_model(paths=["local", "memory"])
    tokens = doc(32)
    edited = tokens.clone()
    edited[:, 3] = (edited[:, 3] + 1) % 97
    before, _ = run_segments(model, tokens)
    after, _ = run_segments(model, edited)
    assert not torch.allclose(before[:, 16:], after[:, 16:])


def test_slots_the_fifo_has_not_filled_change_nothing_it_reads():
    just_full = tiny_model(mem_reach_segments=3)
    roomier = tiny_model(mem_reach_segments=5)
    roomier.load_state_dict(just_full.state_dict())
    tokens = doc(64)  # the last of four segments reads the three before it: a FIFO of 3 is just full
    assert torch.allclose(run_segments(just_full, tokens)[0], run_segments(roomier, tokens)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("overrides", [{}, {"pool": "attn"}, {"paths": ["global"], "mem_slots": 0},
                                       {"paths": ["local", "memory"]}, {"mem_tokens_per_chunk": 2, "mem_slots": 14},
                                       {"mem_tokens_per_chunk": 2, "mem_slots": 14, "mem_token_gate": "read",
                                        "mem_sink": True},
                                       {"mem_tokens_per_chunk": 2, "mem_slots": 14, "mem_token_choice": "spans"},
                                       {"mem_sink": True}, {"token_shift": True},
                                       {"mem_tokens_per_chunk": 2, "mem_slots": 14, "mem_head_dim": 3,
                                        "mem_sink": True},
                                       {"mem_tokens_per_chunk": 2, "mem_slots": 14, "mem_heads": 2, "mem_sink": True},
                                       {"mem_tokens_per_chunk": 2, "mem_slots": 14, "mem_heads": 2, "mem_layers": [1]},
                                       {"n_layers": 3, "mem_layers": [0, 2], "token_shift": True}])
def test_segments_with_carried_state_equal_token_by_token_decoding(overrides):
    model = tiny_model(dtype=torch.float32, **overrides)
    tokens = doc(53)  # crosses three segment boundaries, ends mid-segment
    by_segment, _ = run_segments(model, tokens)
    cache = model.init_cache(tokens.shape[0])
    by_token = []
    for t in range(tokens.shape[1]):
        logits, cache = model.step(tokens[:, t], cache)
        by_token.append(logits)
    torch.testing.assert_close(torch.stack(by_token, dim=1), by_segment, rtol=0, atol=1e-5)


@pytest.mark.parametrize("token_shift", [False, True])
@pytest.mark.parametrize("prompt_len", [1, 16, 37])
def test_prefill_equals_the_segment_forward_at_the_prompts_end(prompt_len, token_shift):
    model = tiny_model(dtype=torch.float32, token_shift=token_shift)
    tokens = doc(prompt_len)
    by_segment, _ = run_segments(model, tokens)
    last, _ = model.prefill(tokens)
    torch.testing.assert_close(last, by_segment[:, -1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("token_shift", [False, True])
def test_greedy_generation_picks_the_most_likely_next_token(token_shift):
    model = tiny_model(token_shift=token_shift)
    prompt = doc(21, b=1)[0]
    out = model.generate(prompt, max_new_tokens=20, temperature=0)
    assert out.shape == (41,) and torch.equal(out[:21], prompt)
    logits, _ = run_segments(model, out[None])
    assert torch.equal(logits[0, 20:40].argmax(-1), out[21:41])


def test_sampling_respects_top_k():
    model = tiny_model()
    prompt = doc(5, b=3)
    out = model.generate(prompt, max_new_tokens=1, temperature=1.0, top_k=2)
    logits, _ = run_segments(model, prompt)
    top2 = logits[:, -1].topk(2).indices
    assert all(out[i, -1] in top2[i] for i in range(3))


def test_tbptt_gradient_reaches_earlier_segments_of_the_window_and_stops_before_it():
    model = tiny_model(dtype=torch.float32, paths=["global", "local", "memory"]).train()
    embeddings = record_embeddings(model)
    tokens = doc(64)
    state = model.init_state(2)
    for i in range(4):  # window 1: segments 0, 1; window 2: segments 2, 3
        if i == 2:
            state = state.detach()
        logits, state = model(tokens[:, 16 * i:16 * (i + 1)], state)
    logits.logsumexp(-1).sum().backward()  # the loss of segment 3 only
    grads = [e.grad for e in embeddings]
    assert grads[0] is None and grads[1] is None
    assert grads[2].abs().sum() > 0  # reached only through the memory written after segment 2
    assert grads[3].abs().sum() > 0


@pytest.mark.parametrize("token_shift", [False, True])  # the shift stays inside the segment too
def test_without_the_memory_path_no_gradient_crosses_segments(token_shift):
    model = tiny_model(dtype=torch.float32, paths=["global", "local"], token_shift=token_shift).train()
    embeddings = record_embeddings(model)
    tokens = doc(32)
    state = model.init_state(2)
    for i in range(2):
        logits, state = model(tokens[:, 16 * i:16 * (i + 1)], state)
    logits.sum().backward()
    assert embeddings[0].grad is None or not embeddings[0].grad.any()


def test_with_token_shift_a_token_reads_its_predecessor_without_any_attention_path():
    # Only the memory path, written after the segment: within a segment nothing else mixes tokens.
    model = tiny_model(dtype=torch.float32, paths=["memory"], mem_layers=None, token_shift=True)
    tokens = doc(8)
    edited = tokens.clone()
    edited[:, 3] = (edited[:, 3] + 1) % 97
    before, _ = run_segments(model, tokens)
    after, _ = run_segments(model, edited)
    assert torch.equal(before[:, :3], after[:, :3]) and torch.equal(before[:, 5:], after[:, 5:])
    assert not torch.allclose(before[:, 4], after[:, 4])
