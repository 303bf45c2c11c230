"""The RMAT model: pure PyTorch, no knowledge of training, data or launch.

The config is importable without torch (``from model import RMATConfig`` costs
milliseconds): commands that only read configs, such as ``rmat status``, never load
torch. The modules that need torch load on first use of their names.
"""

from model.config import PATHS, POOLS, RMATConfig

__all__ = ["PATHS", "POOLS", "RMAT", "DecodeCache", "MemoryState", "RMATConfig"]

_LAZY = {"RMAT": "model.rmat", "DecodeCache": "model.state", "MemoryState": "model.state"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
