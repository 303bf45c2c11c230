"""A small real distributed program for the requeue test: gloo all_reduce steps with a checkpoint.

It behaves as training does under SLURM: every rank stops on SIGUSR2/SIGTERM at the same
step (agreed through the collective) and passes the signal on to the handler it replaced,
rank 0 saves the state, and a restart continues from it. Each step's value depends on
every earlier one, so a resume that lost or repeated anything would show in the values.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time


def next_value(value: float, step: int, world: int) -> float:
    """What one step computes: the all_reduce of (value + rank + step) over the ranks, folded."""
    return math.fmod(world * value + world * (world - 1) / 2 + world * step, 997.0) * 1.0001


def run_steps(state_path: str, log_path: str, steps: int, step_s: float) -> int:
    import torch
    import torch.distributed as dist

    stop = []
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, _stop_and_pass_on(stop, signal.getsignal(sig)))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    step, value = 0, 0.0
    if os.path.exists(state_path):
        with open(state_path) as f:
            step, value = json.load(f)
    while step < steps:
        t = torch.tensor([value + rank + step, float(bool(stop))], dtype=torch.float64)
        dist.all_reduce(t)
        value, step = math.fmod(float(t[0]), 997.0) * 1.0001, step + 1
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, "value": value, "time": time.time(), "world": world,
                                    "restart": int(os.environ.get("SLURM_RESTART_COUNT", 0))}) + "\n")
        if t[1] > 0:
            break
        time.sleep(step_s)
    if rank == 0:
        with open(state_path + ".tmp", "w") as f:
            json.dump([step, value], f)
        os.replace(state_path + ".tmp", state_path)
    dist.barrier()
    dist.destroy_process_group()
    return step


def _stop_and_pass_on(stop: list, previous):
    """Note the stop, and pass the signal on to the handler it replaces (DistributedCall's contract)."""
    def handler(signum, frame) -> None:
        stop.append(signum)
        if callable(previous):
            previous(signum, frame)
    return handler


def finished(state_path: str, steps: int) -> bool:
    try:
        with open(state_path) as f:
            return json.load(f)[0] >= steps
    except OSError:
        return False


def crash_one_rank() -> None:
    """Rank 1 fails before it joins the process group, which the others wait for (30 minutes by default)."""
    import torch.distributed as dist

    if os.environ["RANK"] == "1":
        raise RuntimeError("rank 1 failed on purpose")
    dist.init_process_group("gloo")


def never_finished() -> bool:
    return False
