"""The quickstart trains through `rmat train`'s own loop: loss on real source code drops in a few hundred steps."""

import os

from pipeline.config import load_config
from pipeline.quickstart import CONFIG, run_quickstart
from pipeline.train.config import TrainConfig


def test_quickstart_training_lowers_train_and_validation_loss(tmp_path, capsys):
    cfg = load_config(TrainConfig, CONFIG, [
        "model.d_model=64", "model.segment_len=64", "model.chunk_len=16", "model.mem_tokens_per_chunk=16",
        "model.mem_slots=544", "steps=200", "engine.threads_per_proc=1",
        f"data.shards={tmp_path / 'shards'}", f"run_dir={tmp_path / 'run'}"])
    result = run_quickstart(cfg)
    assert result["last_loss"] < result["first_loss"] - 1.5  # bytes start near ln(258) = 5.55 nats
    assert result["val_after"] < result["val_before"] - 1.5
    assert os.path.exists(tmp_path / "shards" / "manifest.json")  # written by the package on first use
    final = tmp_path / "run" / "checkpoints" / "step_00000200"
    assert load_config(TrainConfig, final / "config.yaml") == cfg
    assert "sample:" in capsys.readouterr().out
