"""The recurrent state: mixing at init, per-row reset, save and load, cached memory keys and values, input checks."""

import io
from dataclasses import replace

import pytest
import torch
from model_helpers import run_segments, tiny_config, tiny_model

from model import RMAT, MemoryState, RMATConfig
from model.memory import MemoryWriter, gumbel_noise, push, token_entries


def filled_state(model, b=3):
    tokens = torch.randint(0, 97, (b, 32))
    _, state = run_segments(model, tokens)
    return state


def test_mix_weights_start_equal():
    model = RMAT(RMATConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=50, segment_len=16, chunk_len=4))
    for i, block in enumerate(model.blocks):
        n = len(model.cfg.layer_config(i).paths)  # the first layer's three, the second's two
        torch.testing.assert_close(block.attn.mix_weights(), torch.full((4, n), 1 / n))


def test_one_path_per_head_starts_head_h_almost_wholly_on_path_h_mod_the_paths():
    model = RMAT(RMATConfig(d_model=40, n_heads=5, n_layers=2, vocab_size=50, segment_len=16, chunk_len=4,
                            mem_heads=None, mem_layers=None, mix_init="one_path_per_head"))
    for block in model.blocks:
        weights = block.attn.mix_weights()
        assert weights.argmax(-1).tolist() == [0, 1, 2, 0, 1]  # global, local, memory, global, local
        assert (weights.max(-1).values > 0.98).all()


def test_memory_fills_from_newest_to_oldest_slot():
    model = tiny_model(mem_slots=6, mem_tokens_per_chunk=0, mem_layers=None)  # 16 / 4 = 4 chunks per segment
    state = model.init_state(2)
    _, state = model(torch.randint(0, 97, (2, 16)), state)
    assert state.valid.tolist() == [[[False, False, True, True, True, True]] * 2] * 2
    assert torch.equal(state.mem[:, :, -1], state.carry)


def salient_writer_and_output(**overrides):
    """A writer whose token score is feature 0 times 50, and a segment whose salient tokens (two per chunk)
    have feature 0 at 20."""
    cfg = tiny_config(mem_tokens_per_chunk=2, mem_slots=12, **overrides)  # 4 chunks of 4 tokens
    writer = MemoryWriter(cfg).double()
    with torch.no_grad():
        writer.token_score.zero_()
        writer.token_score[0] = 50.0
    y = torch.randn(2, 16, cfg.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y[:, SALIENT, 0] = 20.0
    return writer, y


SALIENT = [1, 2, 4, 7, 9, 10, 12, 15]


def empty_layer(d, rows=2, slots=12):
    """One layer's empty (mem, valid, read_bias, carry) in float64."""
    return (torch.zeros(rows, slots, d, dtype=torch.float64), torch.zeros(rows, slots, dtype=torch.bool),
            torch.zeros(rows, slots, dtype=torch.float64), torch.zeros(rows, d, dtype=torch.float64))


def written_tokens(writer, y):
    """The positions whose normed token each token entry of ``writer``'s write of y is nearest."""
    d = y.shape[-1]
    mem, _, _, _ = writer(y, *empty_layer(d))
    return sorted(torch.cdist(mem[0, 4:], writer.norm(y)[0]).argmin(-1).tolist())


def test_a_chunk_writes_its_carry_then_its_k_highest_scoring_tokens():
    writer, y = salient_writer_and_output()
    mem, valid, read_bias, carry = writer(y, *empty_layer(y.shape[-1]))
    assert valid.all() and not read_bias.any()  # entries mixed with their summary are read unbiased
    assert torch.equal(mem[:, 3], carry)
    distance = torch.cdist(mem[0, 4:], writer.norm(y)[0])  # each token entry to each normed token
    assert sorted(distance.argmin(-1).tolist()) == SALIENT
    assert distance.min(-1).values.max() < 1e-9  # a gate near 1 keeps the token itself


def test_with_every_token_an_entry_a_chunk_writes_its_tokens_in_order_whatever_they_score():
    cfg = tiny_config(mem_slots=20)  # the default: every token of the 4 chunks of 4, after their 4 carries
    writer = MemoryWriter(cfg).double()
    with torch.no_grad():
        writer.token_score.zero_()
        writer.token_score[0] = 50.0
    y = torch.randn(2, 16, cfg.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y[:, :, 0] = 20.0 + torch.arange(16.0)  # later tokens score higher; every gate near 1 keeps its token
    mem, valid, _, _ = writer(y, *empty_layer(cfg.d_model, slots=20))
    nearest = torch.cdist(mem[0, 4:], writer.norm(y)[0]).argmin(-1)
    assert valid.all() and nearest.tolist() == list(range(16))


def test_a_read_gated_entry_is_its_token_and_its_read_bias_the_log_gate():
    writer, y = salient_writer_and_output(mem_token_gate="read")
    mem, valid, read_bias, carry = writer(y, *empty_layer(y.shape[-1]))
    normed = writer.norm(y)[0]
    distance = torch.cdist(mem[0, 4:], normed)
    assert sorted(distance.argmin(-1).tolist()) == SALIENT and distance.min(-1).values.max() == 0
    scores = normed[distance.argmin(-1)] @ writer.token_score
    torch.testing.assert_close(read_bias[0, 4:], torch.nn.functional.logsigmoid(scores))
    assert not read_bias[:, :4].any()  # the chunk summaries are read unbiased


def test_a_chunk_cut_into_spans_writes_its_carry_then_each_span_s_mean():
    cfg = tiny_config(mem_tokens_per_chunk=2, mem_slots=12, mem_token_choice="spans")  # 4 chunks of 4 tokens
    writer = MemoryWriter(cfg).double()
    y = torch.randn(2, 16, cfg.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mem, valid, read_bias, carry = writer(y, *empty_layer(cfg.d_model))
    assert valid.all() and not read_bias.any() and torch.equal(mem[:, 3], carry)
    spans = writer.norm(y).view(2, 8, 2, cfg.d_model).mean(2)  # tokens 0-1, 2-3, 4-5, ...
    torch.testing.assert_close(mem[:, 4:], spans)


def test_a_span_with_no_token_of_a_partial_segment_is_not_valid():
    cfg = tiny_config(mem_tokens_per_chunk=2, mem_slots=12, mem_token_choice="spans")
    writer = MemoryWriter(cfg).double()
    y = torch.randn(2, 5, cfg.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mem, valid, _, _ = writer(y, *empty_layer(cfg.d_model))  # chunks of tokens 0-3 and 4: spans 0-1, 2-3, 4, -
    assert valid[0, -6:].tolist() == [True, True, True, True, True, False]
    torch.testing.assert_close(mem[:, -2], writer.norm(y)[:, 4])  # a span of one real token is that token


def test_token_sampling_leaves_evaluation_with_the_top_k():
    writer, y = salient_writer_and_output(mem_token_sampling=True)
    assert written_tokens(writer.eval(), y) == SALIENT


def test_token_sampling_tries_other_tokens_in_training():
    writer, y = salient_writer_and_output(mem_token_sampling=True)
    with torch.no_grad():
        writer.token_score.zero_()  # equal scores: every draw of two of a chunk's four is as likely
    torch.manual_seed(0)
    seen = {tuple(written_tokens(writer.train(), y)) for _ in range(20)}
    assert len(seen) > 10


def test_token_sampling_draws_a_token_as_often_as_its_softmax_probability():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    x = torch.eye(4, dtype=torch.float64).expand(4000, 1, 4, 4)  # 4000 rows of one chunk; token c is e_c
    present = torch.ones(1, 4, dtype=torch.bool)
    torch.manual_seed(0)
    entries, _, _ = token_entries(x, present, torch.zeros(4000, 1, 4, dtype=torch.float64), probs.log(), 1,
                                  noise=gumbel_noise(x[..., 0]))
    frequency = torch.bincount(entries[:, 0].argmax(-1), minlength=4).double() / 4000
    torch.testing.assert_close(frequency, probs, atol=0.03, rtol=0)


def entries_written(model, mode):
    """How many slots one 16-token segment fills from empty with ``model`` in ``mode`` ("train" or "eval")."""
    getattr(model, mode)()
    _, state = model(torch.randint(0, 97, (2, 16)), model.init_state(2))
    torch.testing.assert_close(state.kv, projected(model, state), rtol=0, atol=1e-12)
    return int(state.valid[0, 0].sum())


def test_write_every_token_makes_training_write_every_token_of_a_chunk_and_evaluation_its_top_k():
    model = tiny_model(mem_tokens_per_chunk=1, mem_slots=40)  # 4 chunks of 4 tokens
    model.write_every_token(True)
    assert (entries_written(model, "train"), entries_written(model, "eval")) == (4 * (1 + 4), 4 * (1 + 1))
    model.write_every_token(False)
    assert entries_written(model, "train") == 4 * (1 + 1)


def test_write_every_token_without_token_entries_is_an_error():
    with pytest.raises(ValueError, match="mem_tokens_per_chunk > 0"):
        tiny_model(mem_tokens_per_chunk=0).write_every_token(True)


def test_reset_empties_exactly_the_flagged_rows():
    model = tiny_model()
    state = filled_state(model)
    reset = torch.tensor([True, False, True])
    cleared = state.reset_rows(reset)
    for row in (0, 2):
        assert not cleared.valid[:, row].any()
        assert not cleared.mem[:, row].any() and not cleared.carry[:, row].any()
    assert torch.equal(cleared.mem[:, 1], state.mem[:, 1]) and torch.equal(cleared.valid[:, 1], state.valid[:, 1])


def test_a_reset_row_sees_what_a_fresh_model_sees():
    model = tiny_model()
    state = filled_state(model)
    tokens = torch.randint(0, 97, (3, 16))
    logits, _ = model(tokens, state, reset=torch.tensor([True, False, False]))
    fresh, _ = model(tokens, model.init_state(3))
    assert torch.equal(logits[0], fresh[0])
    assert not torch.allclose(logits[1], fresh[1])


def test_state_round_trips_through_its_state_dict():
    model = tiny_model()
    state = filled_state(model)
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    buffer.seek(0)
    loaded = MemoryState.from_state_dict(torch.load(buffer, weights_only=True))
    tokens = torch.randint(0, 97, (3, 16))
    assert torch.equal(model(tokens, state)[0], model(tokens, loaded)[0])


def projected(model, state):
    """Every layer's memory keys and values projected from scratch: [L, B, M, 2D]."""
    return torch.stack([block.attn.memory_kv(state.mem[i]) for i, block in enumerate(model.memory_blocks)])


@pytest.mark.parametrize("overrides", [{}, dict(mem_tokens_per_chunk=2, mem_slots=20, mem_token_gate="read")])
def test_the_cached_keys_and_values_are_the_projection_of_the_slots_the_fifo_holds(overrides):
    model = tiny_model(**overrides)
    state = model.init_state(3)
    for length, reset in [(16, None), (16, torch.tensor([False, True, False])), (7, None), (16, None)]:
        _, state = model(torch.randint(0, 97, (3, length)), state, reset=reset)
        torch.testing.assert_close(state.kv, projected(model, state), rtol=0, atol=1e-12)
    rows = torch.tensor([2, 0])
    torch.testing.assert_close(state.select_rows(rows).kv, projected(model, state)[:, rows], rtol=0, atol=1e-12)


def test_a_window_reads_and_learns_the_same_with_cached_keys_and_values_as_with_fresh_ones():
    tokens = torch.randint(0, 97, (2, 48))
    results = []
    for fresh_each_segment in (False, True):
        torch.manual_seed(0)
        model = tiny_model(mem_tokens_per_chunk=2, mem_slots=20).train()  # 12 entries a segment: it shifts and drops
        state, loss = model.init_state(2), 0.0
        for i in range(0, 48, 16):
            state = replace(state, kv=None) if fresh_each_segment else state
            logits, state = model(tokens[:, i:i + 16], state)
            loss = loss + logits.square().mean()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (cached_loss, cached_grads), (fresh_loss, fresh_grads) = results
    torch.testing.assert_close(cached_loss, fresh_loss, rtol=1e-12, atol=0)
    for cached, fresh in zip(cached_grads, fresh_grads, strict=True):
        torch.testing.assert_close(cached, fresh, rtol=1e-9, atol=1e-12)


def test_detaching_or_saving_the_state_leaves_the_cached_keys_and_values_behind():
    model = tiny_model()
    state = filled_state(model)
    assert state.kv is not None
    assert state.detach().kv is None  # the optimizer may change the weights that projected them
    assert "kv" not in state.state_dict()


def test_a_state_saved_before_read_biases_loads_with_every_slot_unbiased():
    model = tiny_model()
    state = filled_state(model)
    older = {k: v for k, v in state.state_dict().items() if k != "read_bias"}
    loaded = MemoryState.from_state_dict(older)
    assert loaded.read_bias.shape == state.valid.shape and not loaded.read_bias.any()
    tokens = torch.randint(0, 97, (3, 16))
    assert torch.equal(model(tokens, state)[0], model(tokens, loaded)[0])


def test_read_gated_entries_are_read_through_their_bias():
    model = tiny_model(mem_tokens_per_chunk=2, mem_slots=14, mem_token_gate="read")
    state = filled_state(model)
    assert state.read_bias.min() < 0  # log sigmoid of each token entry's score
    unbiased = MemoryState(state.mem, state.valid, state.carry, torch.zeros_like(state.read_bias))
    tokens = torch.randint(0, 97, (3, 16))
    assert not torch.allclose(model(tokens, state)[0], model(tokens, unbiased)[0])


def test_baseline_config_is_a_plain_causal_transformer():
    model = tiny_model(paths=["global"], mem_slots=0, segment_len=64)
    tokens = torch.randint(0, 97, (2, 64))
    _, state = model(tokens, model.init_state(2))
    assert state.mem.numel() == 0
    logits, _ = model(tokens, state)
    assert torch.equal(logits, model(tokens, model.init_state(2))[0])
    assert not hasattr(model.blocks[0].attn, "wkv_mem") and model.blocks[0].writer is None


def test_the_state_holds_a_memory_for_the_memory_layers_only():
    model = tiny_model(n_layers=3, mem_layers=[1], mem_slots=20)  # a segment's 4 summaries and 16 tokens
    state = model.init_state(2)
    assert state.mem.shape[0] == state.carry.shape[0] == 1
    assert [block.writer is not None for block in model.blocks] == [False, True, False]
    assert not hasattr(model.blocks[0].attn, "wkv_mem") and model.blocks[1].attn.wkv_mem is not None
    _, state = model(torch.randint(0, 97, (2, 16)), state)
    assert state.mem.shape[0] == 1 and state.valid.all()


def test_out_of_vocabulary_ids_are_rejected():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\[0, 97\).*max 97"):
        model(torch.tensor([[1, 97]]), model.init_state(1))


def test_a_segment_longer_than_segment_len_is_rejected():
    model = tiny_model()
    with pytest.raises(ValueError, match="1..16 tokens"):
        model(torch.zeros(1, 17, dtype=torch.long), model.init_state(1))


def test_batch_size_must_match_the_state():
    model = tiny_model()
    with pytest.raises(ValueError, match="batch size 2 but the state was made for 3 rows"):
        model(torch.zeros(2, 4, dtype=torch.long), model.init_state(3))


def test_float_tokens_are_rejected():
    model = tiny_model()
    with pytest.raises(TypeError, match="integer ids"):
        model(torch.zeros(1, 4), model.init_state(1))


def test_num_params_counts_tied_weights_once():
    tied, untied = tiny_model(), tiny_model(tie_embeddings=False)
    assert untied.num_params() - tied.num_params() == 97 * 32


def test_flops_per_token_grow_with_segment_length_only_for_the_global_path():
    local = [tiny_model(paths=["local", "memory"], mem_slots=3, segment_len=s).flops_per_token() for s in (16, 64)]
    glob = [tiny_model(paths=["global"], mem_slots=0, segment_len=s).flops_per_token() for s in (16, 64)]
    assert local[1] <= local[0]  # memory costs are amortised over longer segments
    assert glob[1] - glob[0] == pytest.approx(3 * 2 * 4 * 32 * (65 - 17) / 2)


@pytest.mark.parametrize(("mem_heads", "mem_head_dim", "width"), [(None, None, 4 * 8), (None, 2, 4 * 2), (1, 8, 8)])
def test_each_memory_slot_costs_four_flops_a_key_and_value_dimension_of_every_memory_head(mem_heads, mem_head_dim,
                                                                                          width):
    cost = [tiny_model(mem_slots=m, mem_heads=mem_heads, mem_head_dim=mem_head_dim, mem_layers=None).flops_per_token()
            for m in (10, 20)]
    assert cost[1] - cost[0] == pytest.approx(3 * 2 * 4 * width * 10)  # backward = 2x forward, 2 layers


def test_only_the_memory_layers_pay_for_the_memory():
    def memory_cost(**overrides):
        return tiny_model(**overrides).flops_per_token() - tiny_model(**overrides, mem_slots=1).flops_per_token()

    assert memory_cost(mem_layers=[1]) == pytest.approx(memory_cost(mem_layers=None) / 2)


def test_push_keeps_the_newest_m_of_the_fifo_and_the_new_entries():
    fifo = torch.arange(5.0).view(1, 5, 1)
    for n in (0, 2, 5, 7):
        new = 10 + torch.arange(float(n)).view(1, n, 1)
        assert torch.equal(push(fifo, new), torch.cat([fifo, new], dim=1)[:, -5:])
