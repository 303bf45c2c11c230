"""A real MLflow tracking server for tests: ``mlflow server`` on sqlite or on a private PostgreSQL.

Each runs in its own session on a free loopback port and is stopped by its pid (or
``pg_ctl stop`` for the database): other servers on this machine are not ours.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

BACKENDS = ("sqlite", "postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_store(folder: str) -> tuple[str, Callable[[], None]]:
    """A private PostgreSQL cluster (Debian's server binaries) with a database for MLflow: (URI, stop).

    ``folder`` must be reachable by the ``postgres`` user (pytest's tmp_path is root-only).
    """
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not bins:
        pytest.skip("no PostgreSQL server here; apt-get install postgresql")
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]' (the postgres extra)")
    bindir, port = os.path.dirname(bins[-1]), free_port()
    data, sockets = os.path.join(folder, "pgdata"), os.path.join(folder, "pgsock")
    os.makedirs(sockets, exist_ok=True)
    as_postgres = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")

    def pg(*args: str) -> None:
        out = subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{args[0]}: {out.stderr[-2000:]}"

    pg(f"{bindir}/initdb", "-D", data, "-U", "mlflow", "--auth=trust")
    pg(f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(folder, "pg.log"), "-o",
       f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "start")
    pg(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
    return (f"postgresql+psycopg://mlflow@127.0.0.1:{port}/mlflow",
            lambda: pg(f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "stop"))


@contextlib.contextmanager
def running_server(backend: str, folder: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """(URL, server process) of a real MLflow server, one worker, on ``backend``; artifacts under ``folder``.

    On sqlite the store is ``folder``/server.db: a test may put a store there to serve it.
    """
    stop_database = None
    pg_folder = None
    if backend == "sqlite":
        store = f"sqlite:///{folder}/server.db"
    else:
        pg_folder = tempfile.mkdtemp(prefix="rmat-pg-")
        store, stop_database = postgres_store(pg_folder)
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
         "--artifacts-destination", os.path.join(folder, "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, server)
        yield url, server
    finally:
        os.killpg(server.pid, signal.SIGCONT)  # a test may have frozen it
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        if stop_database is not None:
            stop_database()
        if pg_folder is not None:
            shutil.rmtree(pg_folder, ignore_errors=True)


def _wait_until_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
