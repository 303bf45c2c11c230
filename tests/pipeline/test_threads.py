"""A process uses the cores its allocation gives it: SLURM's cpus-per-task in a job, else its share."""

from __future__ import annotations

import os

import torch

from pipeline.train.engine import allocated_cpus, set_threads


def test_inside_a_slurm_job_a_process_takes_its_cpus_per_task(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert allocated_cpus(local_procs=2) == 3


def test_outside_slurm_local_processes_share_the_cores_they_may_run_on(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert allocated_cpus(local_procs=1) == cores
    assert allocated_cpus(local_procs=cores + 1) == 1  # never zero


def test_set_threads_without_a_configured_count_follows_the_allocation(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    try:
        assert set_threads(0, local_procs=1) == 1
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
