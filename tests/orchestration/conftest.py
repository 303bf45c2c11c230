"""A real SLURM cluster (munge, MariaDB + slurmdbd, slurmctld, two slurmd) for the session."""

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "orchestration" / "dev_cluster.sh"
HOSTS = Path("/etc/hosts")


def dev_cluster(command: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RMAT_SLURM_DIR": str(root)}
    return subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=600)


@dataclass
class FirstStart:
    """What the machine looked like before the session's cluster came up, and what ``up`` said."""

    hosts: str = ""  # /etc/hosts
    stderr: str = ""


FIRST_START = FirstStart()


@pytest.fixture(scope="session")
def slurm_cluster():
    """Brings the cluster up once (installing Debian packages if needed) and down at the end."""
    if os.geteuid() != 0:
        pytest.skip("the dev cluster installs Debian packages and starts daemons as root")
    # Not under pytest's 0700 tmp tree: munged runs as user munge and must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="rmat-slurm-", dir="/tmp"))
    FIRST_START.hosts = HOSTS.read_text()
    up = dev_cluster("up", root)
    FIRST_START.stderr = up.stderr
    if up.returncode != 0:
        dev_cluster("down", root)  # whatever daemons did start must not outlive the session
        pytest.fail(f"the dev cluster did not come up (is another one using its ports?):\n{up.stderr}")
    os.environ["SLURM_CONF"] = str(root / "etc" / "slurm.conf")
    yield root
    dev_cluster("down", root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_job_outlives_its_test(request):
    """Cancel whatever a test left queued, so that one test's stuck job fails that test alone."""
    yield
    if "slurm_cluster" not in request.fixturenames or not os.environ.get("SLURM_CONF"):
        return
    subprocess.run(["scancel", "--me"], capture_output=True)
    deadline = time.time() + 60
    while subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
        if time.time() > deadline:
            pytest.fail("jobs a test left behind were still queued 60 s after scancel")
        time.sleep(1)
