"""The project's one-machine SLURM cluster is a real one: two nodes, accounting, its own sessions, clean stop."""

import os
import subprocess
from pathlib import Path

from conftest import FIRST_START, HOSTS, dev_cluster


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


def daemon_pids(root: Path) -> list[int]:
    return [int(p.read_text()) for p in [*(root / "run").glob("*.pid"), root / "munge" / "munged.pid"]]


def test_every_daemon_runs_in_a_session_of_its_own(slurm_cluster):
    sessions = [os.getsid(pid) for pid in daemon_pids(slurm_cluster)]
    assert len(sessions) == 6 and len(set(sessions)) == 6, sessions  # munged, mariadbd, slurmdbd, slurmctld, 2 slurmd
    assert os.getsid(0) not in sessions  # a signal to the caller's session or group reaches none of them


def test_up_prints_only_its_own_messages_and_names_what_it_changed_on_the_machine(slurm_cluster):
    lines = FIRST_START.stderr.splitlines()
    assert lines and all(line.startswith("dev_cluster: ") for line in lines), FIRST_START.stderr
    for node in ("n1", "n2"):
        if f"127.0.0.1 {node}\n" not in FIRST_START.hosts + "\n":
            assert f"added '127.0.0.1 {node}' to /etc/hosts" in FIRST_START.stderr


def test_down_stops_its_daemons_undoes_its_hosts_lines_and_up_brings_them_back(slurm_cluster):
    bystander = subprocess.Popen(["sleep", "60"])
    pids = daemon_pids(slurm_cluster)
    try:
        assert dev_cluster("down", slurm_cluster).returncode == 0
        assert not [pid for pid in pids if alive(pid)]
        assert bystander.poll() is None
        assert HOSTS.read_text() == FIRST_START.hosts  # as before the session's first `up`
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
