"""Evaluation reads every document three ways: memory carried, reset each segment, another's."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from model import RMAT, RMATConfig
from pipeline.train.evaluate import evaluate

BOS, EOS = 97, 98
CFG = RMATConfig(vocab_size=99, d_model=32, n_layers=2, n_heads=4, segment_len=16, chunk_len=4, mem_slots=8)


@pytest.fixture(scope="module", autouse=True)
def one_process_group():
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def model_reading_its_memory(**overrides) -> RMAT:
    """An untrained model whose heads lean on the memory path, so that reading it shows."""
    torch.manual_seed(0)
    model = RMAT(RMATConfig(**{**vars(CFG), **overrides})).eval()
    with torch.no_grad():
        for block in model.memory_blocks:
            block.attn.mix_logits[:, -1] = 3.0
            block.attn.wkv_mem.weight.normal_(std=0.5)
    return model


def documents(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 97, n).astype(np.int64), "code", None) for n in lengths]


def metrics(model, docs, rows=2):
    return evaluate(model, docs, model.cfg, rows, 0, BOS, EOS, torch.float32, torch.device("cpu"))


def past_first_segment_loss(model, docs, start_state):
    """Loss over tokens 16.. of each document; segment i of row r starts from start_state(i, r, states)."""
    total, count = 0.0, 0
    streams = [torch.from_numpy(np.concatenate([[BOS], d, [EOS]])) for d, _, _ in docs]
    states = [model.init_state(1) for _ in docs]
    for i in range(2):
        carried = []
        for r, x in enumerate(streams):
            seg = x[i * 16:i * 16 + 17]
            logits, nxt = model(seg[None, :-1], start_state(i, r, states))
            carried.append(nxt)
            if i > 0:
                total += F.cross_entropy(logits[0], seg[1:], reduction="sum").item()
                count += 16
        states = carried
    return total / count


@pytest.mark.parametrize("overrides", [{}, {"mem_layers": [1]}])
def test_memory_benefit_is_the_reset_loss_minus_the_carried_loss_past_the_first_segment(overrides):
    model = model_reading_its_memory(**overrides)
    docs = documents([31, 31])  # with BOS and EOS: exactly two segments each
    got = metrics(model, docs)
    carried = past_first_segment_loss(model, docs, lambda i, r, states: states[r])
    reset = past_first_segment_loss(model, docs, lambda i, r, states: model.init_state(1))
    foreign = past_first_segment_loss(model, docs, lambda i, r, states: states[1 - r])
    assert got["val/code/loss_past_first_segment_carried"] == pytest.approx(carried, rel=1e-5)
    assert got["val/code/loss_past_first_segment_reset"] == pytest.approx(reset, rel=1e-5)
    assert got["val/code/loss_past_first_segment_foreign"] == pytest.approx(foreign, rel=1e-5)
    assert got["val/code/memory_benefit"] == pytest.approx(reset - carried, abs=1e-5)
    assert abs(reset - carried) > 1e-3 and abs(foreign - carried) > 1e-3  # the memory really is read


def test_reset_reading_gives_loss_by_position_without_memory():
    model = model_reading_its_memory()
    got = metrics(model, documents([31, 31]))
    # The first segment starts from an empty memory in every mode.
    assert got["val/pos_00_0-16/loss_reset"] == pytest.approx(got["val/pos_00_0-16/loss"], rel=1e-6)
    assert abs(got["val/pos_01_16-32/loss_reset"] - got["val/pos_01_16-32/loss"]) > 1e-3


def test_a_lone_document_has_no_foreign_memory_to_read():
    got = metrics(model_reading_its_memory(), documents([31]))
    assert "val/code/memory_benefit" in got and "val/code/loss_past_first_segment_foreign" not in got
    assert not any(k.endswith("_foreign") for k in got)


def test_a_model_without_memory_reports_no_memory_benefit():
    model = RMAT(RMATConfig(**{**vars(CFG), "paths": ["global", "local"], "mem_slots": 0})).eval()
    got = metrics(model, documents([31, 31]))
    assert "val/code/loss" in got and not any("memory_benefit" in k or "_reset" in k for k in got)


def test_position_buckets_are_log_spaced_and_named_to_sort():
    model = model_reading_its_memory()
    got = metrics(model, documents([16 * 9 - 1]))  # with BOS and EOS: nine segments of 16
    names = sorted(k.removesuffix("/loss") for k in got if k.startswith("val/pos_") and k.endswith("/loss"))
    assert names == ["val/pos_00_0-16", "val/pos_01_16-32", "val/pos_02_32-64", "val/pos_03_64-128",
                     "val/pos_04_128-256"]


def test_a_position_bucket_is_the_mean_loss_over_its_tokens():
    model = model_reading_its_memory()
    docs = documents([16 * 4 - 1])
    got = metrics(model, docs)
    assert got["val/pos_02_32-64/loss"] == pytest.approx(carried_nll(model, docs[0][0], 4)[32:].mean().item(),
                                                         rel=1e-5)


def carried_nll(model, ids, n_segments):
    """Per-target loss of one document read segment by segment with the memory carried."""
    stream = torch.from_numpy(np.concatenate([[BOS], ids, [EOS]]))
    state, nll = model.init_state(1), []
    for i in range(n_segments):
        seg = stream[i * 16:i * 16 + 17]
        logits, state = model(seg[None, :-1], state)
        nll.append(F.cross_entropy(logits[0], seg[1:], reduction="none"))
    return torch.cat(nll)


def test_a_document_with_loss_spans_is_scored_on_those_targets_only():
    model = model_reading_its_memory()
    (ids, domain, _), = documents([16 * 4 - 1])
    got = metrics(model, [(ids, domain, np.array([[5, 9], [40, 48]]))])
    nll = carried_nll(model, ids, 4)
    assert got["val/loss"] == pytest.approx(torch.cat([nll[5:9], nll[40:48]]).mean().item(), rel=1e-5)
    assert got["val/pos_02_32-64/loss"] == pytest.approx(nll[40:48].mean().item(), rel=1e-5)


def test_max_tokens_reads_only_the_segments_that_begin_within_them():
    model = model_reading_its_memory()
    (ids, domain, _), = documents([16 * 4 - 1])
    got = evaluate(model, [(ids, domain, None)], model.cfg, 2, 0, BOS, EOS, torch.float32, torch.device("cpu"),
                   max_tokens=20)  # segments 0 and 1 begin within 20 tokens
    assert got["val/loss"] == pytest.approx(carried_nll(model, ids, 2).mean().item(), rel=1e-5)
    assert not any(k.startswith("val/pos_02") for k in got)
