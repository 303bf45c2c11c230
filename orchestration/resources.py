"""What one job asks SLURM for: a typed config section per stage, and its sbatch parameters."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Resources:
    """SLURM resources of one job (one task of an array, or the whole multi-node job).

    Empty strings and zeros mean "the cluster's default". ``extra`` holds any other
    sbatch parameter by its long name without dashes (``{"exclusive": "user"}``).
    """

    partition: str = ""
    account: str = ""
    qos: str = ""
    time_min: int = 60
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float = 0.0
    constraint: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    signal_delay_s: int = 90  # SLURM sends USR2 this long before the time limit: time to checkpoint
    max_requeues: int = 3  # preemptions/time limits a checkpointable job survives

    def __post_init__(self) -> None:
        for key in ("time_min", "nodes", "tasks_per_node", "cpus_per_task"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)!r}: must be >= 1")
        for key in ("gpus_per_node", "mem_gb", "signal_delay_s", "max_requeues"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}={getattr(self, key)!r}: must be >= 0")

    def slurm_parameters(self, name: str, after: list[str] = ()) -> dict[str, object]:
        """Parameters of submitit's SlurmExecutor (its names), with ``afterok`` on the job ids ``after``."""
        params: dict[str, object] = {
            "job_name": name,
            "time": self.time_min,
            "nodes": self.nodes,
            "ntasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "signal_delay_s": self.signal_delay_s,
        }
        optional = {"partition": self.partition, "account": self.account, "qos": self.qos,
                    "constraint": self.constraint, "gpus_per_node": self.gpus_per_node}
        params.update({k: v for k, v in optional.items() if v})
        # submitit converts its own "mem" from GB floats; a plain sbatch parameter passes through as written
        additional = {"mem": f"{int(self.mem_gb * 1024)}M"} if self.mem_gb else {}
        additional.update(self.extra)
        if after:
            additional["dependency"] = "afterok:" + ":".join(after)
        if additional:
            params["additional_parameters"] = additional
        return params

    def sbatch_flags(self, name: str, after: list[str] = ()) -> list[str]:
        """The ``#SBATCH`` flags these parameters become (what ``--dry-run`` shows)."""
        params = self.slurm_parameters(name, after)
        delay = params.pop("signal_delay_s")
        flags = {**{k: v for k, v in params.items() if k != "additional_parameters"},
                 **params.get("additional_parameters", {}), "signal": f"USR2@{delay}"}
        return [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
