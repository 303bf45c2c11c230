"""A process killed in the middle of writing a checkpoint leaves the previous one loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pipeline.config import load_config
from pipeline.train.checkpoint import latest_meta
from pipeline.train.config import TrainConfig
from pipeline.train.launch import preflight
from tests.pipeline.conftest import REPO, TINY

# One real training process (world size 1) that saves at step 2, trains a step, then dies with
# SIGKILL inside its Nth torch.save of the step-3 save, after writing part of that file.
CHILD = """
import hashlib, os, signal, sys
import torch
from pipeline.config import load_config
from pipeline.train.config import TrainConfig
from pipeline.train.loop import Trainer

mode, kill_at, config, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
trainer = Trainer(load_config(TrainConfig, config, overrides), 1)
weights = b"".join(p.detach().numpy().tobytes() for p in trainer.engine.module.parameters())
if mode == "load":
    print("STEP", trainer.step, hashlib.sha256(weights).hexdigest(), flush=True)
    sys.exit(0)
for _ in range(2):
    trainer.train_step()
    trainer.step += 1
trainer.save_checkpoint()
weights = b"".join(p.detach().numpy().tobytes() for p in trainer.engine.module.parameters())
print("STEP", trainer.step, hashlib.sha256(weights).hexdigest(), flush=True)
trainer.train_step()
trainer.step += 1
real_save, calls = torch.save, [0]

def dying_save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == kill_at:
        if isinstance(f, (str, os.PathLike)):
            f = open(f, "wb")
        f.write(b"half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = dying_save
trainer.save_checkpoint()
"""


def _child(mode: str, kill_at: int, overrides: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(29600 + kill_at), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, mode, str(kill_at), TINY, *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)


# ZeRO-2 on one rank writes the model states (1st torch.save), the optimizer partition (2nd),
# then our per-rank state (3rd): die inside DeepSpeed's files, and inside ours.
@pytest.mark.parametrize("kill_at", [1, 3], ids=["in-deepspeed-files", "in-rank-state"])
def test_kill_during_checkpoint_save_leaves_previous_loadable(shards, tmp_path, kill_at):
    run_dir = str(tmp_path)
    overrides = [f"data.shards={shards}", f"run_dir={run_dir}", "engine.threads_per_proc=1", "steps=10"]
    saving = _child("save", kill_at, overrides)
    assert saving.returncode == -signal.SIGKILL, saving.stderr[-3000:]
    saved_line = [line for line in saving.stdout.splitlines() if line.startswith("STEP")]
    assert saved_line and saved_line[0].split()[1] == "2"
    assert os.path.isdir(os.path.join(run_dir, "checkpoints", "step_00000003"))  # the save had begun
    assert latest_meta(run_dir)["step"] == 2
    left = [name for _, _, files in os.walk(run_dir) for name in files if ".tmp" in name]
    # The kill inside our own file leaves its temporary (NAME.tmp-PID); DeepSpeed writes in place.
    assert [name.rsplit("-", 1)[0] for name in left] == (["rank_00000.pt.tmp"] if kill_at == 3 else [])
    preflight(load_config(TrainConfig, TINY, overrides), 1)  # what every start runs first
    assert not [name for _, _, files in os.walk(run_dir) for name in files if ".tmp" in name]

    loading = _child("load", kill_at, overrides)
    assert loading.returncode == 0, loading.stderr[-3000:]
    loaded_line = [line for line in loading.stdout.splitlines() if line.startswith("STEP")]
    assert loaded_line == saved_line  # same step, bitwise the same weights
