import pytest

from model import RMATConfig
from model.config import CHUNK_SUMMARIES
from model.pretrained import config_from_dict


def test_segment_must_be_a_multiple_of_the_chunk():
    with pytest.raises(ValueError, match="segment_len=100: must be a multiple of chunk_len=64"):
        RMATConfig(segment_len=100, chunk_len=64)


def test_width_must_split_into_heads():
    with pytest.raises(ValueError, match="d_model=100: must be divisible by n_heads=3"):
        RMATConfig(d_model=100, n_heads=3)


def test_paths_must_not_be_empty():
    with pytest.raises(ValueError, match="paths"):
        RMATConfig(paths=[])


def test_unknown_path_is_named():
    with pytest.raises(ValueError, match="sliding"):
        RMATConfig(paths=["global", "sliding"])


def test_memory_path_needs_slots():
    with pytest.raises(ValueError, match="mem_slots=0"):
        RMATConfig(paths=["memory"], mem_slots=0)


def test_unknown_pool_is_rejected():
    with pytest.raises(ValueError, match="pool='max'"):
        RMATConfig(pool="max")


def test_unknown_mix_init_is_rejected():
    with pytest.raises(ValueError, match="mix_init"):
        RMATConfig(mix_init="random")


def test_more_memory_tokens_than_a_chunk_holds_are_rejected():
    with pytest.raises(ValueError, match="mem_tokens_per_chunk=65: must be in \\[0, chunk_len=64\\]"):
        RMATConfig(mem_tokens_per_chunk=65)


def test_a_memory_head_width_below_one_is_rejected():
    with pytest.raises(ValueError, match="mem_head_dim=0: must be positive or None"):
        RMATConfig(mem_head_dim=0)


def test_a_memory_head_width_equal_to_the_head_width_is_the_full_read():
    cfg = RMATConfig(d_model=64, n_heads=4, mem_heads=None, mem_head_dim=16)
    assert not cfg.narrow_memory_read and cfg.mem_kv_width == 2 * 64


@pytest.mark.parametrize("mem_heads", [0, 3, 5])
def test_a_number_of_memory_heads_that_does_not_divide_the_heads_is_rejected(mem_heads):
    with pytest.raises(ValueError, match=f"mem_heads={mem_heads}: must divide n_heads=4"):
        RMATConfig(d_model=64, n_heads=4, mem_heads=mem_heads)


def test_fewer_memory_heads_read_through_their_own_query_and_cache_only_their_keys_and_values():
    cfg = RMATConfig(d_model=64, n_heads=4, mem_heads=1)
    assert cfg.narrow_memory_read and cfg.mem_kv_width == 2 * 16


def test_token_sampling_without_token_entries_is_rejected():
    with pytest.raises(ValueError, match="mem_token_sampling=True: .* set mem_tokens_per_chunk > 0"):
        RMATConfig(mem_tokens_per_chunk=0, mem_token_sampling=True)


def test_a_token_gate_without_token_entries_is_rejected():
    with pytest.raises(ValueError, match="mem_token_gate='read': .* set mem_tokens_per_chunk > 0"):
        RMATConfig(mem_tokens_per_chunk=0, mem_token_gate="read")


def test_an_unknown_token_gate_is_named():
    with pytest.raises(ValueError, match="mem_token_gate='soft': choose from"):
        RMATConfig(mem_tokens_per_chunk=2, mem_token_gate="soft")


def test_spans_that_do_not_divide_the_chunk_are_rejected():
    with pytest.raises(ValueError, match="mem_tokens_per_chunk=3: is the number of spans .* a divisor of chunk_len"):
        RMATConfig(chunk_len=64, mem_tokens_per_chunk=3, mem_token_choice="spans")


def test_spans_with_a_token_draw_or_read_gate_are_rejected():
    for overrides in ({"mem_token_sampling": True}, {"mem_token_gate": "read"}):
        with pytest.raises(ValueError, match="mem_token_choice='spans': has no score to draw or gate by"):
            RMATConfig(mem_tokens_per_chunk=4, mem_token_choice="spans", **overrides)


def test_paths_are_kept_in_canonical_order():
    assert RMATConfig(paths=["memory", "global"]).paths == ["global", "memory"]


def test_default_ffn_width_is_swiglu_sized_and_rounded():
    assert RMATConfig(d_model=256).ffn_dim == 704  # 8/3 * 256 = 682.7, rounded up to 64
    assert RMATConfig(d_model=256, d_ff=512).ffn_dim == 512


@pytest.mark.parametrize("mem_layers", [[], [2], [-1], [1, 1]])
def test_memory_layers_outside_the_model_or_repeated_are_rejected(mem_layers):
    with pytest.raises(ValueError, match=r"mem_layers=.*: must list distinct layer indices in \[0, n_layers=2\)"):
        RMATConfig(n_layers=2, mem_layers=mem_layers)


def test_without_a_memory_path_no_layer_holds_a_memory_and_the_fifo_has_no_slots():
    cfg = RMATConfig(n_layers=3, paths=["global", "local"], mem_layers=[0])
    assert [cfg.layer_config(i).paths for i in range(3)] == [["global", "local"]] * 3
    assert cfg.memory_slots == 0


def test_memory_layers_that_would_leave_a_layer_with_no_path_are_rejected():
    with pytest.raises(ValueError, match="would leave a layer with no path"):
        RMATConfig(n_layers=2, paths=["memory"], mem_layers=[1])


def test_a_layer_outside_the_memory_layers_has_every_path_but_the_memory():
    cfg = RMATConfig(n_layers=3, mem_layers=[2, 0])
    assert cfg.memory_layers == [0, 2]
    assert cfg.layer_config(1).paths == ["global", "local"] and cfg.layer_config(2) is cfg


def test_the_default_memory_writes_every_token_in_the_first_layer_alone_and_reaches_10_segments():
    cfg = RMATConfig(segment_len=256, chunk_len=64)
    assert (cfg.token_entries, cfg.memory_layers, cfg.token_shift) == (64, [0], True)
    assert cfg.memory_slots == 10 * 4 * (1 + 64)
    assert RMATConfig(segment_len=128, chunk_len=32).memory_slots == 10 * 4 * (1 + 32)  # whatever S and C are
    assert RMATConfig(mem_tokens_per_chunk=0).memory_slots == 10 * 4  # the summaries alone
    assert RMATConfig(mem_reach_segments=3).memory_slots == 3 * 4 * (1 + 64)


def test_a_reach_of_no_segments_is_rejected():
    with pytest.raises(ValueError, match="mem_reach_segments=0: must be > 0"):
        RMATConfig(mem_reach_segments=0)


def test_the_chunk_summaries_are_the_memory_the_defaults_held_before():
    cfg = RMATConfig(**CHUNK_SUMMARIES)
    assert (cfg.token_entries, cfg.memory_slots, cfg.memory_layers, cfg.narrow_memory_read) == (0, 32, [0, 1, 2, 3],
                                                                                              False)


def test_an_exported_config_without_a_later_key_reads_it_as_it_was_then():
    old = {k: v for k, v in vars(RMATConfig(**CHUNK_SUMMARIES)).items() if k not in ("mem_heads", "mem_layers")}
    assert config_from_dict(old) == RMATConfig(**CHUNK_SUMMARIES)


def test_an_exported_config_of_every_token_entries_from_before_the_reach_was_a_key_keeps_8_segments():
    then = {k: v for k, v in vars(RMATConfig()).items() if k != "mem_reach_segments"}
    assert config_from_dict(then).memory_slots == 8 * 4 * (1 + 64)
