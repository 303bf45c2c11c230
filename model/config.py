"""Configuration of the Recurrent Memory-Augmented Transformer."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

PATHS = ("global", "local", "memory")
POOLS = ("mean", "attn")
MIX_INITS = ("equal", "one_path_per_head")
TOKEN_GATES = ("mix", "read")
TOKEN_CHOICES = ("score", "spans")
# The memory the defaults held until they became the first layer's every-token entries: one GRU summary
# per chunk (32, 8 segments back at S / C = 4), in every layer, read by every head at full width, no
# token shift. A folder exported before a key existed meant this, and the benchmarks whose recorded
# numbers were measured on it build on it (docs/design.md, section 2). Its mem_slots are explicit, so
# mem_reach_segments is inert here; it is what a config written with mem_slots: null before the reach
# became a key meant: the every-token defaults first reached 8 segments.
CHUNK_SUMMARIES = dict(mem_slots=32, mem_tokens_per_chunk=0, token_shift=False, mem_heads=None, mem_head_dim=None,
                       mem_layers=None, mem_reach_segments=8)


@dataclass
class RMATConfig:
    """Shape and switches of one RMAT model (docs/design.md, sections 1 and 2).

    ``paths`` is any non-empty subset of ``PATHS``; ``paths=["global"]`` with
    ``mem_slots=0`` and ``segment_len`` equal to the context is the plain causal
    transformer used as the baseline.

    The memory's defaults are the one that binds a key to its value across segments at what the
    chunk summaries cost: every token of a chunk an entry besides its summary, the FIFO reaching 10
    segments back, the token shift, two heads of 16 reading it, in the first layer alone
    (docs/design.md, section 2). ``CHUNK_SUMMARIES`` holds the memory the defaults held before.
    """

    vocab_size: int = 8192
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: Optional[int] = None  # None: the SwiGLU width 8/3 * d_model, rounded up to 64
    segment_len: int = 256
    chunk_len: int = 64
    # The FIFO's entries. A segment writes S / C * (1 + k) of them (k: the token entries of a chunk), so
    # the FIFO reaches mem_slots / (S / C * (1 + k)) segments back. None: the entries of
    # mem_reach_segments segments, whatever S, C and k are.
    mem_slots: Optional[int] = None
    # How many segments back a FIFO of mem_slots: null reaches. 10 keeps a fact written 9 segments before
    # the segment that asks for it (MQAR at d = 8: 0.997 where 8 segments scored 0.767; docs/design.md,
    # section 2), at a few percent more time per token.
    mem_reach_segments: int = 10
    rope_base: float = 10000.0
    dropout: float = 0.0
    tie_embeddings: bool = True
    paths: list[str] = field(default_factory=lambda: list(PATHS))
    pool: str = "mean"
    # Besides its summary, each chunk writes its k most salient tokens as entries of their own. None: every
    # token of the chunk (k = chunk_len), which binds a key to its value; 0: the summary alone.
    mem_tokens_per_chunk: Optional[int] = None
    # Training draws those k by Gumbel-top-k on the tokens' scores, so that every token is tried and
    # its gate tells the score whether it pays to keep; evaluation takes the top k (docs/design.md, section 2).
    mem_token_sampling: bool = False
    # How a token entry's score gates it: "mix" writes g * token + (1 - g) * its chunk's summary;
    # "read" writes the token itself and adds log g to its logit in every read, so that each read
    # tells the score whether the entry pays (g = sigmoid(score); docs/design.md, section 2).
    mem_token_gate: str = "mix"
    # Which k entries a chunk writes besides its summary: "score", its k best-scoring tokens (above);
    # "spans", the means of its k spans of C / k consecutive tokens: no choice to learn, and each span
    # keeps its tokens apart from the rest of the chunk (docs/design.md, section 2).
    mem_token_choice: str = "score"
    # Each head's memory keys, values and query are mem_head_dim wide (None: head_dim), and a narrow read
    # is widened back to head_dim: the read of M slots costs 4 * mem_heads * mem_head_dim * M a token and
    # layer instead of 4 * d_model * M, which is what a memory of many entries pays (docs/design.md, section 2).
    mem_head_dim: Optional[int] = 16
    # How many heads read the memory (None: n_heads). Each memory head answers for n_heads / mem_heads of
    # the segment's heads, its answer widened to theirs: a read's cost is set by how many scores it takes
    # (mem_heads * M a token) more than by their width (docs/design.md, section 2).
    mem_heads: Optional[int] = 2
    # Which layers hold a memory (None: every layer). The others attend their segment alone, and the
    # state keeps one layer of memory per listed layer, in order: the read's cost, which at many entries
    # is most of the memory's, is paid only there (docs/design.md, sections 1 and 2). Without the
    # memory path it is not read.
    mem_layers: Optional[list[int]] = field(default_factory=lambda: [0])
    mem_sink: bool = False  # the memory read may attend to a learned empty slot (docs/design.md, section 2)
    mix_init: str = "equal"  # "one_path_per_head": head h starts on path h mod len(paths) (docs/design.md, section 2)
    token_shift: bool = True  # each token's embedding also carries its predecessor's (docs/design.md, section 1)
    init_std: float = 0.02
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        _check(self.vocab_size > 0, "vocab_size", self.vocab_size, "must be positive")
        _check(self.n_layers > 0, "n_layers", self.n_layers, "must be positive")
        _check(self.n_heads > 0, "n_heads", self.n_heads, "must be positive")
        _check(self.d_model % self.n_heads == 0, "d_model", self.d_model,
               f"must be divisible by n_heads={self.n_heads}")
        _check(self.head_dim % 2 == 0, "d_model", self.d_model,
               f"gives head width {self.head_dim}; rotary positions need an even head width")
        _check(self.segment_len > 0 and self.chunk_len > 0, "segment_len/chunk_len",
               (self.segment_len, self.chunk_len), "must be positive")
        _check(self.segment_len % self.chunk_len == 0, "segment_len", self.segment_len,
               f"must be a multiple of chunk_len={self.chunk_len}")
        _check(len(self.paths) > 0, "paths", self.paths, f"must name at least one of {PATHS}")
        unknown = sorted(set(self.paths) - set(PATHS))
        _check(not unknown, "paths", unknown, f"unknown path(s); choose from {PATHS}")
        self.paths = [p for p in PATHS if p in self.paths]  # canonical order: mix weights index it
        _check(self.mem_slots is None or self.mem_slots >= 0, "mem_slots", self.mem_slots,
               "must be >= 0, or None (the entries of mem_reach_segments segments)")
        _check(self.mem_reach_segments > 0, "mem_reach_segments", self.mem_reach_segments, "must be > 0")
        _check("memory" not in self.paths or self.mem_slots != 0, "mem_slots", self.mem_slots,
               "must be > 0 when the 'memory' path is on")
        _check(self.mem_tokens_per_chunk is None or 0 <= self.mem_tokens_per_chunk <= self.chunk_len,
               "mem_tokens_per_chunk", self.mem_tokens_per_chunk,
               f"must be in [0, chunk_len={self.chunk_len}], or None (every token)")
        _check(not self.mem_token_sampling or self.token_entries > 0, "mem_token_sampling", True,
               "draws the chunk's mem_tokens_per_chunk tokens; set mem_tokens_per_chunk > 0")
        _check(self.mem_token_gate in TOKEN_GATES, "mem_token_gate", self.mem_token_gate,
               f"choose from {TOKEN_GATES}")
        _check(self.mem_token_choice in TOKEN_CHOICES, "mem_token_choice", self.mem_token_choice,
               f"choose from {TOKEN_CHOICES}")
        if self.mem_token_choice == "spans":
            _check(self.token_entries > 0 and self.chunk_len % self.token_entries == 0,
                   "mem_tokens_per_chunk", self.mem_tokens_per_chunk,
                   f"is the number of spans a chunk of {self.chunk_len} is cut into: a divisor of chunk_len")
            _check(not self.mem_token_sampling and self.mem_token_gate == "mix", "mem_token_choice", "spans",
                   "has no score to draw or gate by: leave mem_token_sampling and mem_token_gate at their defaults")
        _check(self.mem_token_gate == "mix" or self.token_entries > 0, "mem_token_gate",
               self.mem_token_gate, "gates token entries; set mem_tokens_per_chunk > 0")
        _check(self.mem_head_dim is None or self.mem_head_dim > 0, "mem_head_dim", self.mem_head_dim,
               "must be positive or None (head_dim)")
        _check(self.mem_heads is None or (0 < self.mem_heads <= self.n_heads and self.n_heads % self.mem_heads == 0),
               "mem_heads", self.mem_heads, f"must divide n_heads={self.n_heads}, or be None (n_heads)")
        if self.mem_layers is not None and self.has_memory:
            _check(len(self.mem_layers) > 0 and all(0 <= i < self.n_layers for i in self.mem_layers)
                   and len(set(self.mem_layers)) == len(self.mem_layers), "mem_layers", self.mem_layers,
                   f"must list distinct layer indices in [0, n_layers={self.n_layers})")
            _check(len(self.paths) > 1, "mem_layers", self.mem_layers,
                   "would leave a layer with no path: add 'global' or 'local' to paths, or hold the memory "
                   "in every layer (mem_layers: null)")
            self.mem_layers = sorted(self.mem_layers)
        _check(self.pool in POOLS, "pool", self.pool, f"choose from {POOLS}")
        _check(self.mix_init in MIX_INITS, "mix_init", self.mix_init, f"choose from {MIX_INITS}")
        _check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        _check(self.d_ff is None or self.d_ff > 0, "d_ff", self.d_ff, "must be positive or None")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def token_entries(self) -> int:
        """How many of a chunk's tokens it writes as entries besides its summary."""
        return self.chunk_len if self.mem_tokens_per_chunk is None else self.mem_tokens_per_chunk

    @property
    def memory_slots(self) -> int:
        """The FIFO's entries M: ``mem_slots``, or those of ``mem_reach_segments`` segments (0 without memory)."""
        if self.mem_slots is not None:
            return self.mem_slots
        if not self.has_memory:
            return 0
        return self.mem_reach_segments * self.segment_len // self.chunk_len * (1 + self.token_entries)

    @property
    def memory_layers(self) -> list[int]:
        """The layers that hold a memory, in order: the memory state has one layer for each (without a
        memory path, one empty layer for every layer)."""
        if self.mem_layers is None or not self.has_memory:
            return list(range(self.n_layers))
        return list(self.mem_layers)

    def layer_config(self, layer: int) -> RMATConfig:
        """Layer ``layer``'s own config: this one, less the memory path where the layer holds no memory."""
        if not self.has_memory or layer in self.memory_layers:
            return self
        return replace(self, paths=[p for p in self.paths if p != "memory"], mem_layers=None)

    @property
    def mem_head_width(self) -> int:
        """The width of each head's memory keys, values and query."""
        return self.head_dim if self.mem_head_dim is None else self.mem_head_dim

    @property
    def mem_read_heads(self) -> int:
        """How many heads read the memory."""
        return self.n_heads if self.mem_heads is None else self.mem_heads

    @property
    def narrow_memory_read(self) -> bool:
        """Whether the memory is read through its own query and its answer widened to the heads
        (``mem_head_dim`` narrower than a head, or ``mem_heads`` fewer than the heads)."""
        return self.has_memory and (self.mem_head_width != self.head_dim or self.mem_read_heads != self.n_heads)

    @property
    def mem_kv_width(self) -> int:
        """The width of one slot's projected keys and values (``MemoryState.kv``)."""
        return 2 * self.mem_read_heads * self.mem_head_width

    @property
    def ffn_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        return 64 * -(-(8 * self.d_model // 3) // 64)

    @property
    def has_memory(self) -> bool:
        return "memory" in self.paths


def _check(ok: bool, key: str, value: object, what: str) -> None:
    if not ok:
        raise ValueError(f"RMATConfig.{key}={value!r}: {what}")
