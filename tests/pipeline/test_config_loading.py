"""Typed configs from YAML and dotted overrides; every mistake names its key."""

from dataclasses import replace

import pytest

from model.config import CHUNK_SUMMARIES
from pipeline.config import ConfigError, flatten, load_config, to_dict, to_yaml
from pipeline.train.checkpoint import CONFIG, saved_config
from pipeline.train.config import TrainConfig


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_then_overrides_fill_the_typed_config(tmp_path):
    path = write(tmp_path, "model:\n  d_model: 64\noptim:\n  lr: 0.01\n")
    cfg = load_config(TrainConfig, path, ["optim.lr=3e-4", "model.paths=[global,local]"])
    assert cfg.model.d_model == 64 and cfg.optim.lr == 3e-4
    assert cfg.model.paths == ["global", "local"]
    assert cfg.steps == TrainConfig().steps


def test_unknown_key_in_the_file_is_named(tmp_path):
    path = write(tmp_path, "optim:\n  lrr: 0.01\n")
    with pytest.raises(ConfigError, match=r"c.yaml.*optim.lrr"):
        load_config(TrainConfig, path)


def test_unknown_override_is_named():
    with pytest.raises(ConfigError, match=r"command line.*model.d_modle"):
        load_config(TrainConfig, None, ["model.d_modle=3"])


def test_mistyped_value_is_named():
    with pytest.raises(ConfigError, match=r"steps"):
        load_config(TrainConfig, None, ["steps=many"])


def test_an_invalid_model_is_reported_with_its_source(tmp_path):
    path = write(tmp_path, "model:\n  segment_len: 100\n  chunk_len: 64\n")
    with pytest.raises(ConfigError, match=r"c.yaml.*segment_len=100: must be a multiple of chunk_len=64"):
        load_config(TrainConfig, path)


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(TrainConfig, None, ["steps"])


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "nope.yaml")


def test_yaml_dump_reads_back_to_an_equal_config(tmp_path):
    cfg = load_config(TrainConfig, None, ["model.pool=attn", "steps=7"])
    assert load_config(TrainConfig, write(tmp_path, to_yaml(cfg))) == cfg


def test_flatten_gives_the_dotted_keys_of_overrides():
    flat = flatten(to_dict(TrainConfig()))
    assert flat["model.d_model"] == 128 and flat["optim.lr"] == TrainConfig().optim.lr


def test_shipped_configs_load():
    for path in ("configs/quickstart.yaml", "configs/train/small.yaml", "configs/train/tiny.yaml"):
        assert load_config(TrainConfig, path).model.vocab_size == 258


def test_a_checkpoint_config_without_a_later_model_key_reads_it_as_the_checkpoint_had_it(tmp_path):
    then = TrainConfig()
    then.model = replace(then.model, **CHUNK_SUMMARIES)
    lines = [line for line in to_yaml(then).splitlines() if not line.strip().startswith(("mem_layers", "mem_heads"))]
    (tmp_path / "step_00000001").mkdir()
    (tmp_path / "step_00000001" / CONFIG).write_text("\n".join(lines) + "\n")
    assert saved_config(str(tmp_path), "step_00000001") == then
    assert TrainConfig().model.mem_layers == [0]  # what a key missing from a new file would have read


def test_a_checkpoint_config_from_before_the_reach_was_a_key_keeps_its_fifo_of_8_segments(tmp_path):
    then = TrainConfig()
    lines = [line for line in to_yaml(then).splitlines() if not line.strip().startswith("mem_reach_segments")]
    (tmp_path / "step_00000001").mkdir()
    (tmp_path / "step_00000001" / CONFIG).write_text("\n".join(lines) + "\n")
    saved = saved_config(str(tmp_path), "step_00000001").model
    assert (saved.mem_slots, saved.mem_reach_segments) == (None, 8) and then.model.mem_reach_segments == 10
