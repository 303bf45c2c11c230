"""The passkey state probe: what its edits of the memory mean, and a run on a trained model."""

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from passkey_state_probe import EDITS, read_with_edit  # noqa: E402

from model import RMAT, RMATConfig  # noqa: E402
from model.config import CHUNK_SUMMARIES  # noqa: E402

S, LEAD = 16, 2


def model_and_tokens() -> tuple[RMAT, torch.Tensor]:
    torch.manual_seed(0)
    # The chunk summaries, as the models of passkey_pipeline.py that the probe reads
    model = RMAT(RMATConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, segment_len=S, chunk_len=4,
                            **{**CHUNK_SUMMARIES, "mem_slots": 8})).double().eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.mix_logits.normal_()  # off the symmetric init, so the memory visibly counts
    return model, torch.randint(0, 50, (3, (LEAD + 2) * S + 1))


def test_emptying_both_before_a_segment_reads_as_a_document_that_begins_there():
    model, tokens = model_and_tokens()
    led = read_with_edit(model, tokens, S, LEAD, EDITS["both emptied"])
    fresh = read_with_edit(model, tokens[:, LEAD * S:], S, 0, EDITS["state kept"])
    torch.testing.assert_close(led, fresh)


def test_each_part_of_the_state_before_the_key_changes_what_is_read():
    model, tokens = model_and_tokens()
    kept = read_with_edit(model, tokens, S, LEAD, EDITS["state kept"])
    for edit in ("carry zeroed", "FIFO emptied", "both emptied"):
        assert not torch.allclose(kept, read_with_edit(model, tokens, S, LEAD, EDITS[edit])), edit


def test_the_probe_reads_a_model_the_pipeline_trained(tmp_path):
    smoke = subprocess.run([sys.executable, "benchmarks/passkey_pipeline.py", "--smoke", "--out", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    run, = (tmp_path / "smoke").glob("*/run-1")
    out = subprocess.run([sys.executable, "benchmarks/passkey_state_probe.py", str(run), "--lead", "1",
                          "--samples", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert all(name in out.stdout for name in EDITS) and out.stdout.count(str(run)) == 2  # distances 0 and 1
