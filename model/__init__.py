"""The RMAT model: pure PyTorch, no knowledge of training, data or launch."""

from model.config import PATHS, POOLS, RMATConfig
from model.rmat import RMAT
from model.state import DecodeCache, MemoryState

__all__ = ["PATHS", "POOLS", "RMAT", "DecodeCache", "MemoryState", "RMATConfig"]
