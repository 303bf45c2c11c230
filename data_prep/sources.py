"""Reading corpora: list a source's inputs, then turn one group of inputs into documents.

Inputs are fsspec URLs or globs; a folder stands for every file below it (for ``code``, the
files whose extension names a known language). Compressed files (.gz, .zst, .xz, .bz2)
are read transparently. A ``command`` source runs one program (no shell) and reads its
stdout, e.g. ``bible -l100000 gen1:1-rev22:21`` for the King James Bible, split into one
document per book by ``split_pattern``.

Identity of an input (what keys the ingest folder): its URL, size and modification time
when the file system reports them (like make), the command line for a command.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
from fsspec.core import url_to_fs

from data_prep.atomic import PrepError
from data_prep.config import SourceConfig
from data_prep.dialogue import render_play, render_turns

LANGUAGES = {
    ".py": "python", ".pyi": "python", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp",
    ".rs": "rust", ".go": "go", ".js": "javascript", ".ts": "typescript", ".java": "java", ".sh": "shell",
    ".rb": "ruby", ".pl": "perl", ".lua": "lua", ".sql": "sql", ".toml": "toml", ".yaml": "yaml",
}
_COMPRESSION = (".gz", ".zst", ".xz", ".bz2")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputRef:
    """One input: a file URL (or a command line) and what identifies its content."""

    url: str
    size: int = -1
    mtime: str = ""


def language_of(path: str) -> str:
    """The programming language a file's extension names ('' if none is known)."""
    name = path
    for ext in _COMPRESSION:
        if name.endswith(ext):
            name = name[: -len(ext)]
    dot = name.rfind(".")
    return LANGUAGES.get(name[dot:].lower(), "") if dot >= 0 else ""


def list_inputs(source: SourceConfig) -> list[InputRef]:
    """Every input of ``source`` in a stable order; PrepError if a URL matches nothing."""
    if source.kind == "command":
        if len(source.urls) != 1:
            raise PrepError(f"source {source.name!r}: a command source takes exactly one command line in urls")
        return [InputRef(url=source.urls[0])]
    if not source.urls:
        raise PrepError(f"source {source.name!r} has no urls; list files, folders or globs under sources[].urls")
    refs: dict[str, InputRef] = {}
    for url in source.urls:
        found = _expand(source, url)
        if not found:
            raise PrepError(
                f"source {source.name!r}: {url!r} matches no readable file; check the path, "
                "or install the corpora with `bash scripts/bootstrap.sh`"
            )
        refs.update((r.url, r) for r in found)
    return [refs[u] for u in sorted(refs)]


def _expand(source: SourceConfig, url: str) -> list[InputRef]:
    try:
        fs, path = url_to_fs(url)
        if any(c in path for c in _GLOB_CHARS):
            infos = fs.glob(path, detail=True)
        elif fs.isdir(path):
            infos = fs.find(path, detail=True)
        elif fs.exists(path):
            infos = {path: fs.info(path)}
        else:
            infos = {}
    except (ValueError, ImportError, OSError) as e:
        raise PrepError(f"source {source.name!r}: cannot open {url!r}: {e}") from e
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    refs = []
    for path, info in infos.items():
        if info.get("type") != "file":
            continue
        full = path if local else fs.unstrip_protocol(path)
        if any(fnmatch.fnmatch(full, pat) for pat in source.exclude):
            continue
        if source.kind == "code" and not language_of(full):
            continue
        mtime = info.get("mtime", info.get("created", info.get("LastModified", "")))
        refs.append(InputRef(url=full, size=int(info.get("size") or 0), mtime=str(mtime)))
    return refs


# --------------------------------------------------------------------------- reading


@dataclass
class RawDoc:
    """A document as read, before normalization: text plus where it came from."""

    text: str
    name: str  # the input URL, with "#line" or "#title" for documents inside one input
    lang: str = ""


def decode(data: bytes, where: str, encodings: list[str]) -> str:
    """Decode bytes with the first encoding that fits; PrepError naming ``where`` if none does."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    first_error = None
    for enc in encodings:
        try:
            return data.decode(enc)
        except UnicodeDecodeError as e:
            first_error = first_error or e
        except LookupError as e:
            raise PrepError(f"ingest.encodings lists {enc!r}, which Python does not know") from e
    e = first_error
    raise PrepError(
        f"{where}: not valid {'/'.join(encodings)} (byte 0x{data[e.start]:02x} at offset {e.start}); "
        "convert it to UTF-8, exclude it (sources[].exclude), or add its encoding to ingest.encodings"
    )


def read_input(source: SourceConfig, url: str, encodings: list[str], marker: str) -> Iterator[RawDoc]:
    """The documents of one input of ``source``."""
    if source.kind == "command":
        yield from _read_command(source, url, encodings)
        return
    try:
        with fsspec.open(url, "rb", compression="infer") as f:
            data = f.read()
    except (OSError, ValueError, EOFError) as e:  # EOFError: a truncated .gz/.xz
        raise PrepError(f"source {source.name!r}: cannot read {url}: {e}") from e
    if source.kind == "jsonl" or (source.kind == "dialogue" and ".jsonl" in url):
        yield from _read_jsonl(source, url, data, encodings, marker)
        return
    text = decode(data, url, encodings)
    if source.kind == "dialogue":
        text = render_play(text, marker)
    yield RawDoc(text=text, name=url, lang=language_of(url) if source.kind == "code" else "")


def _read_jsonl(source: SourceConfig, url: str, data: bytes, encodings: list[str], marker: str) -> Iterator[RawDoc]:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{url}:{number}"
        line = decode(raw, where, encodings)
        try:
            record = json.loads(line)
        except ValueError as e:
            raise PrepError(f"{where}: malformed JSON ({e}); fix or remove that line") from e
        if not isinstance(record, dict):
            raise PrepError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
        if source.kind == "dialogue":
            yield RawDoc(text=render_turns(_turns(record, where), marker), name=f"{url}#{number}")
            continue
        text = record.get(source.text_field)
        if not isinstance(text, str):
            raise PrepError(
                f"{where}: no string field {source.text_field!r} (keys: {sorted(record)}); "
                f"set sources[].text_field to the field that holds the text"
            )
        yield RawDoc(text=text, name=f"{url}#{number}")


def _turns(record: dict, where: str) -> list[tuple[str, str]]:
    turns = record.get("turns")
    ok = isinstance(turns, list) and all(
        isinstance(t, dict) and isinstance(t.get("speaker"), str) and isinstance(t.get("text"), str) for t in turns
    )
    if not ok:
        raise PrepError(f"{where}: dialogue records need 'turns': [{{'speaker': str, 'text': str}}, ...]")
    return [(t["speaker"], t["text"]) for t in turns]


def _read_command(source: SourceConfig, command: str, encodings: list[str]) -> Iterator[RawDoc]:
    argv = shlex.split(command)
    try:
        done = subprocess.run(argv, capture_output=True, check=False, timeout=600)
    except FileNotFoundError as e:
        raise PrepError(
            f"source {source.name!r}: command {argv[0]!r} not found; install the corpora with "
            "`bash scripts/bootstrap.sh` (as root it apt-installs them)"
        ) from e
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[:300]
        raise PrepError(f"source {source.name!r}: `{command}` exited with {done.returncode}: {err}")
    text = decode(done.stdout, f"output of `{command}`", encodings)
    if not source.split_pattern:
        yield RawDoc(text=text, name=command)
        return
    yield from _split_by_title(source, command, text)


def _split_by_title(source: SourceConfig, command: str, text: str) -> Iterator[RawDoc]:
    """Cut at lines matching split_pattern; consecutive sections with one 'doc' name form one document."""
    pattern = re.compile(source.split_pattern)
    if "doc" not in pattern.groupindex:
        raise PrepError(f"source {source.name!r}: split_pattern needs a named group (?P<doc>...)")
    title, lines = None, []
    for line in text.split("\n"):
        m = pattern.match(line)
        if m and m.group("doc") != title:
            if lines and title is not None:
                yield RawDoc(text="\n".join(lines).strip("\n") + "\n", name=f"{command}#{title}")
            title, lines = m.group("doc"), []
        lines.append(line)
    if lines and title is not None:
        yield RawDoc(text="\n".join(lines).strip("\n") + "\n", name=f"{command}#{title}")
