"""The project's one-machine SLURM cluster is a real one: two nodes, accounting, clean stop."""

import os
import subprocess
from pathlib import Path

from conftest import dev_cluster


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120, cwd="/tmp").stdout


def test_one_job_spans_both_nodes(slurm_cluster):
    out = run("srun", "-N2", "-n2", "--time=1", "printenv", "SLURMD_NODENAME")
    assert sorted(out.split()) == ["n1", "n2"]


def test_accounting_records_a_finished_batch_job(slurm_cluster):
    job = run("sbatch", "--parsable", "--wait", "--time=1", "-o", "/dev/null", "--wrap", "true").strip()
    states = run("sacct", "-n", "-X", "-j", job, "-o", "State").split()
    assert states == ["COMPLETED"]


def test_up_on_a_running_cluster_changes_nothing(slurm_cluster):
    pids = sorted(p.read_text() for p in (slurm_cluster / "run").glob("*.pid"))
    assert dev_cluster("up", slurm_cluster).returncode == 0
    assert sorted(p.read_text() for p in (slurm_cluster / "run").glob("*.pid")) == pids


def test_down_stops_its_daemons_and_up_brings_them_back(slurm_cluster):
    bystander = subprocess.Popen(["sleep", "60"])
    pidfiles = [*(slurm_cluster / "run").glob("*.pid"), slurm_cluster / "munge" / "munged.pid"]
    pids = [int(p.read_text()) for p in pidfiles]
    try:
        assert dev_cluster("down", slurm_cluster).returncode == 0
        assert not [pid for pid in pids if alive(pid)]
        assert bystander.poll() is None
    finally:
        bystander.kill()
    assert dev_cluster("up", slurm_cluster).returncode == 0
    assert "idle" in run("sinfo", "-h", "-o", "%T")


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
