"""The rendezvous port a distributed job's tasks agree on, from its job id alone."""

from __future__ import annotations

from pathlib import Path

from orchestration.distributed import master_port

EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def test_the_port_lies_below_the_ports_this_machine_gives_client_sockets():
    lowest_ephemeral = int(EPHEMERAL.read_text().split()[0])
    ports = [master_port(str(job)) for job in range(1, 200_000, 7)]
    assert min(ports) >= 1024 and max(ports) < lowest_ephemeral


def test_consecutive_jobs_get_different_ports():
    assert len({master_port(str(job)) for job in range(4_000, 4_100)}) == 100

