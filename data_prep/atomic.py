"""Atomic files and per-unit completion records.

The one way the project writes a file that a reader may see (data prep's units and
manifests, training's checkpoints, reports and tracker outbox): to a temporary name in
the same folder (``NAME.tmp-PID``), then renamed into place, so a reader sees either
nothing or the whole file, and ``remove_stale_temps`` knows every temporary a kill leaves.
After the rename of a data-prep unit's output, a small sidecar ``NAME.done.json`` (itself
written atomically) records the output's sha256 and stats: a rerun trusts a unit only
when the sidecar exists and the file still hashes to it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Iterator

TMP_MARK = ".tmp-"
DONE_SUFFIX = ".done.json"


class PrepError(RuntimeError):
    """A data-prep failure with a message that names the input and what to do."""


def canonical_json(obj: object) -> bytes:
    """Byte-stable JSON (sorted keys, fixed separators, trailing newline)."""
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def key_of(obj: object, length: int = 12) -> str:
    """Short hash of a JSON-able object: the name of a stage folder."""
    return sha256_bytes(canonical_json(obj))[:length]


def tmp_path(path: str) -> str:
    # pid in the name: two writers never share a temporary file
    return f"{path}{TMP_MARK}{os.getpid()}"


@contextlib.contextmanager
def atomic_open(path: str, durable: bool = True) -> Iterator:
    """Open ``path`` for binary writing under a temporary name; rename into place on success.

    On any error the temporary file is removed and the old ``path`` (if any) is untouched.
    Errors of the file system (full disk, read-only folder) become PrepError naming the path.
    ``durable=False`` skips the fsync: right for unit outputs, whose sha256 sidecar is checked
    on every rerun (a file lost in a power cut is redone), and an fsync per small unit can
    cost more than the unit's work; manifests stay durable.
    """
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise PrepError(_os_message(path, e)) from e
        raise


def write_atomic(path: str, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, durable) as f:
        f.write(data)


def read_json(path: str) -> dict | None:
    """A JSON file's content, or None when it is absent or unreadable (a reader of atomic writes)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ensure_dir(path: str) -> None:
    """Create a folder (and parents), with an error that says what to do."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise PrepError(_os_message(path, e)) from e


def _os_message(path: str, e: OSError) -> str:
    # The folder is data prep's out_dir or training's run_dir: name both settings.
    where = "set out_dir= (data prep) or run_dir= (training) to"
    if e.errno == errno.ENOSPC:
        return f"no space left on the device while writing {path}; free space or {where} a larger disk"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {path} ({e.strerror}); {where} a writable folder"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"cannot write {path}: a part of the path is a file, not a folder; {where} a folder"
    return f"cannot write {path}: {e.strerror or e}; {where} a writable folder"


def mark_done(path: str, info: dict) -> dict:
    """Record that ``path`` is complete: its sha256 plus ``info`` in the sidecar; returns the record."""
    record = dict(info, sha256=sha256_file(path), file=os.path.basename(path))
    write_atomic(path + DONE_SUFFIX, canonical_json(record), durable=False)
    return record


def read_done(path: str) -> dict | None:
    """The sidecar of ``path`` if the file is complete and still matches it, else None."""
    try:
        with open(path + DONE_SUFFIX, "rb") as f:
            record = json.loads(f.read())
        if record.get("sha256") == sha256_file(path):
            return record
    except (OSError, ValueError):
        pass
    return None


def remove_stale_temps(folder: str) -> int:
    """Delete temporary files left by a killed run (readers never look at them)."""
    removed = 0
    if not os.path.isdir(folder):
        return 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if TMP_MARK in name:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(root, name))
                    removed += 1
    return removed
