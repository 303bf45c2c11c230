"""The quickstart really trains: loss on real source code drops in a few hundred CPU steps."""

from pipeline.config import load_config
from pipeline.quickstart import QuickstartConfig, run_quickstart


def test_quickstart_training_lowers_train_and_validation_loss(tmp_path):
    cfg = load_config(QuickstartConfig, "configs/quickstart.yaml", [
        "model.d_model=64", "model.segment_len=64", "model.chunk_len=16", "data.max_files=120",
        "data.max_file_bytes=8000", "data.val_docs=8", "train.steps=200", f"train.out_dir={tmp_path}"])
    result = run_quickstart(cfg)
    assert result["last_loss"] < result["first_loss"] - 1.5  # bytes start near ln(258) = 5.55 nats
    assert result["val_after"] < result["val_before"] - 1.5
    assert (tmp_path / "model.safetensors").stat().st_size > 0
    assert load_config(QuickstartConfig, tmp_path / "config.yaml") == cfg
