"""Typed configs from YAML and dotted overrides; every mistake names its key."""

import pytest

from pipeline.config import ConfigError, flatten, load_config, to_dict, to_yaml
from pipeline.quickstart import QuickstartConfig


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_then_overrides_fill_the_typed_config(tmp_path):
    path = write(tmp_path, "model:\n  d_model: 64\ntrain:\n  lr: 0.01\n")
    cfg = load_config(QuickstartConfig, path, ["train.lr=3e-4", "model.paths=[global,local]"])
    assert cfg.model.d_model == 64 and cfg.train.lr == 3e-4
    assert cfg.model.paths == ["global", "local"]
    assert cfg.train.steps == QuickstartConfig().train.steps


def test_unknown_key_in_the_file_is_named(tmp_path):
    path = write(tmp_path, "train:\n  lrr: 0.01\n")
    with pytest.raises(ConfigError, match=r"c.yaml.*train.lrr"):
        load_config(QuickstartConfig, path)


def test_unknown_override_is_named():
    with pytest.raises(ConfigError, match=r"command line.*model.d_modle"):
        load_config(QuickstartConfig, None, ["model.d_modle=3"])


def test_mistyped_value_is_named():
    with pytest.raises(ConfigError, match=r"train.steps"):
        load_config(QuickstartConfig, None, ["train.steps=many"])


def test_an_invalid_model_is_reported_with_its_source(tmp_path):
    path = write(tmp_path, "model:\n  segment_len: 100\n  chunk_len: 64\n")
    with pytest.raises(ConfigError, match=r"c.yaml.*segment_len=100: must be a multiple of chunk_len=64"):
        load_config(QuickstartConfig, path)


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(QuickstartConfig, None, ["train.steps"])


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(QuickstartConfig, tmp_path / "nope.yaml")


def test_yaml_dump_reads_back_to_an_equal_config(tmp_path):
    cfg = load_config(QuickstartConfig, None, ["model.pool=attn", "train.steps=7"])
    assert load_config(QuickstartConfig, write(tmp_path, to_yaml(cfg))) == cfg


def test_flatten_gives_the_dotted_keys_of_overrides():
    flat = flatten(to_dict(QuickstartConfig()))
    assert flat["model.d_model"] == 128 and flat["train.lr"] == QuickstartConfig().train.lr


def test_shipped_quickstart_yaml_loads():
    assert load_config(QuickstartConfig, "configs/quickstart.yaml") == QuickstartConfig()
