"""Publishing a finished shard folder to an object store (any fsspec URL, e.g. ``s3://bucket/prep``).

Data prep writes its stages to a local folder (atomic renames); ``publish_to`` then copies
the shard folder to ``{publish_to}/shards-{key}/`` with the same guarantees a reader needs:

- each shard is uploaded under a temporary key (``NAME.tmp-PID``) and then copied to its
  name (object stores have no rename), followed by a sidecar ``NAME.done.json`` with its
  sha256; ``manifest.json`` goes last, so a reader trusting the manifest sees only whole shards;
- a rerun removes the temporary keys a killed run left, skips shards whose remote sidecar
  holds the manifest's sha256 and whose size matches, and rewrites the manifest only if its
  bytes differ: a run killed at any point and rerun leaves the same objects as a clean run.

Credentials and endpoint come from the environment or fsspec's own configuration, never
from the prep config.
"""

from __future__ import annotations

import json
import os
import posixpath
import time

from fsspec.core import url_to_fs

from data_prep.atomic import DONE_SUFFIX, TMP_MARK, PrepError, canonical_json, tmp_path
from data_prep.shards import MANIFEST, read_manifest


def remote_folder(publish_to: str, shards_folder: str) -> str:
    """The URL the shard folder is published to."""
    return publish_to.rstrip("/") + "/" + os.path.basename(shards_folder.rstrip("/"))


def publish_shards(shards_folder: str, publish_to: str) -> dict:
    """Copy a complete local shard folder to ``publish_to``; {"url", "uploaded", "skipped", "bytes"}."""
    manifest = read_manifest(shards_folder)
    url = remote_folder(publish_to, shards_folder)
    try:
        fs, root = url_to_fs(url)
        fs.invalidate_cache(root)  # listings cached by an earlier run in this process are stale
        _remove_stale_temps(fs, root)
        uploaded = skipped = nbytes = 0
        for shard in manifest["shards"]:
            final = posixpath.join(root, shard["path"])
            if _published(fs, final, shard):
                skipped += 1
                continue
            _put(fs, os.path.join(shards_folder, shard["path"]), final)
            _write(fs, final + DONE_SUFFIX, canonical_json({"sha256": shard["sha256"], "bytes": shard["bytes"]}))
            uploaded, nbytes = uploaded + 1, nbytes + shard["bytes"]
        with open(os.path.join(shards_folder, MANIFEST), "rb") as f:
            data = f.read()
        if _read(fs, posixpath.join(root, MANIFEST)) != data:
            _write(fs, posixpath.join(root, MANIFEST), data)
    except ImportError as e:
        raise PrepError(f"publish_to={publish_to!r}: the file system for this URL is not installed ({e})") from e
    except PermissionError as e:
        raise PrepError(f"publish_to={publish_to!r}: access denied ({e}); check the credentials in the environment "
                        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket's policy") from e
    except (OSError, ValueError) as e:  # FileNotFoundError: "The specified bucket does not exist"
        raise PrepError(f"publish_to={publish_to!r}: cannot write {url}: {e}") from e
    return {"url": url, "uploaded": uploaded, "skipped": skipped, "bytes": nbytes}


def is_published(shards_folder: str, url: str) -> bool:
    """True when ``url`` holds the local folder's manifest, byte for byte (it is written last)."""
    try:
        with open(os.path.join(shards_folder, MANIFEST), "rb") as f:
            local = f.read()
        fs, root = url_to_fs(url)
        fs.invalidate_cache(root)
        return _read(fs, posixpath.join(root, MANIFEST)) == local
    except (OSError, ImportError, ValueError):  # unreachable or denied: not published (publishing says why)
        return False


def _published(fs, final: str, shard: dict) -> bool:
    record = _read(fs, final + DONE_SUFFIX)
    try:
        ok = record is not None and json.loads(record)["sha256"] == shard["sha256"]
        return ok and fs.size(final) == shard["bytes"]
    except (OSError, ValueError, KeyError):
        return False


def _put(fs, local: str, final: str) -> None:
    """Upload under a temporary key, then copy to the final name (no partial object is ever named)."""
    temp = tmp_path(final)
    fs.put_file(local, temp)
    _delay()
    fs.mv(temp, final)


def _write(fs, path: str, data: bytes) -> None:
    temp = tmp_path(path)
    with fs.open(temp, "wb") as f:
        f.write(data)
    fs.mv(temp, path)


def _read(fs, path: str) -> bytes | None:
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _remove_stale_temps(fs, root: str) -> None:
    for path in fs.glob(posixpath.join(root, f"*{TMP_MARK}*")):
        fs.rm(path)


def _delay() -> None:
    # Debug hook for the kill test (as RMAT_PREP_SAMPLE_DELAY for shards): a SIGKILL can land mid-publish.
    delay = float(os.environ.get("RMAT_PUBLISH_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)
