"""A real S3 server for tests: moto_server over HTTP on a free port, in its own session, stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start moto_server; (its process, its endpoint URL) once it accepts connections."""
    port = _free_port()
    server = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([server, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **(extra_env or {})})
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.1)


def stop_server(proc: subprocess.Popen) -> None:
    proc.kill()  # by its pid: other moto servers on this machine are not ours
    proc.wait()


@contextlib.contextmanager
def s3_environment(endpoint: str) -> Iterator[None]:
    """The standard AWS variables pointing at ``endpoint`` (for this process and its children)."""
    import s3fs

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()  # instances cache their endpoint
        try:
            yield
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
