"""Typed configs: dataclasses filled from YAML, then from dotted command-line overrides.

OmegaConf does the merging and type checking (the same structured-config approach as
lingua); this module turns its errors into messages that name the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot become the typed config."""


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``schema`` from its defaults, then the YAML file at ``path``, then ``overrides``.

    Overrides are ``dotted.key=value`` strings (``train.lr=3e-4``). An unknown key, a
    value of the wrong type, or a value the dataclass rejects raises ConfigError naming
    where it came from.
    """
    merged = OmegaConf.structured(schema)
    if path is not None:
        merged = _merge(merged, _read_yaml(path), source=str(path))
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form dotted.key=value (e.g. train.lr=3e-4)")
    merged = _merge(merged, OmegaConf.from_dotlist(list(overrides)), source="command line")
    try:
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, ValueError, TypeError) as e:
        where = f"{path} with overrides {list(overrides)}" if path else f"overrides {list(overrides)}"
        raise ConfigError(f"{where}: {_message(e)}") from e


def to_dict(config: object) -> dict:
    """A plain nested dict of a config dataclass (for YAML dumps and tracking params)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def to_yaml(config: object) -> str:
    """The config as YAML that ``load_config`` reads back to an equal config."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted keys that overrides use."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _read_yaml(path: str | os.PathLike):
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist; pass a YAML file such as configs/quickstart.yaml")
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and friends: report them all the same way
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return loaded


def _merge(base, layer, source: str):
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {_message(e)}") from e


def _message(e: Exception) -> str:
    key = getattr(e, "full_key", None)
    first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"key '{key}': {first_line}" if key else first_line
