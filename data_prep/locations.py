"""Configured locations: which strings name a local folder, and a clear error for the rest.

Data prep writes its stages with the local file system's atomic rename (data_prep.atomic),
so a configured output folder must resolve, through fsspec, to the local file system.
A plain path or ``file://`` URL does; any other URL is refused with an error naming the
key and the URL, whether its file system is missing (``s3://`` without s3fs), unknown, or
remote. Building paths from such a string with os.path would silently create a local
folder named ``s3:`` instead.
"""

from __future__ import annotations

import re

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from data_prep.atomic import PrepError

# "s3:/bucket" (one slash): a URL with a slash lost, which fsspec would take as a relative path
_SCHEME_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def local_folder(key: str, url: str) -> str:
    """The local path that ``url`` (config key ``key``) names; PrepError if it is not local."""
    if _SCHEME_LIKE.match(url) and "://" not in url:
        raise PrepError(f"{key}={url!r} looks like a URL with a missing slash; write {url.replace(':/', '://', 1)!r} "
                        "or a local folder")
    try:
        fs, path = url_to_fs(url)
    except ImportError as e:
        raise PrepError(f"{key}={url!r}: the file system for this URL is not installed ({e})") from e
    except ValueError as e:
        raise PrepError(f"{key}={url!r}: {e}; use a local folder or an fsspec URL") from e
    if not isinstance(fs, LocalFileSystem):
        raise PrepError(f"{key}={url!r}: data prep writes its stages to a local folder (it relies on atomic "
                        "renames); set it to a local path or file:// URL")
    return path if "://" in url else url
