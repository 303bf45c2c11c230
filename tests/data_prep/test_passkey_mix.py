"""Passkey samples in the training data: train shards only, the answer their one loss span, reruns byte-identical."""

from __future__ import annotations

import os

import numpy as np
import pytest
import sentencepiece as spm
from dataprep_helpers import small_config, tree_bytes

from data_prep.config import PASSKEY_LAYOUT, PasskeyMixConfig, ShardConfig
from data_prep.prep import run_prep
from data_prep.shards import iter_shard, read_manifest
from pipeline.streams import IGNORE_INDEX, RowStream

S = 64


def quiet(*_args):
    pass


@pytest.fixture
def mixed(corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "mixed", passkey=PasskeyMixConfig(per_shard=5, segment_tokens=S,
                                                                           max_distance=3))
    result = run_prep(cfg, log=quiet)
    return cfg, result.folders["shards"]


def documents(folder: str, split: str):
    manifest = read_manifest(folder)
    for shard in manifest["shards"]:
        if shard["split"] == split:
            yield from iter_shard(os.path.join(folder, shard["path"]), shard["documents"])


def test_every_train_shard_holds_its_passkey_samples_evenly_among_its_documents_and_no_held_out_shard_any(mixed):
    _, folder = mixed
    manifest = read_manifest(folder)
    train = [s for s in manifest["shards"] if s["split"] == "train"]
    for shard in train:
        sources = [meta["source"] for _, _, meta in iter_shard(os.path.join(folder, shard["path"]))]
        at = [i for i, source in enumerate(sources) if source == "passkey"]
        n = len(sources) - len(at)
        assert len(at) == 5
        for j, place in enumerate(at):  # the j-th sample after about (j + 1) / 6 of the documents
            assert abs((place - j) - n * (j + 1) / 6) <= 1
    for split in ("val", "test"):
        assert all(meta["source"] != "passkey" for _, _, meta in documents(folder, split))


def test_a_passkey_sample_asks_for_its_key_and_its_only_loss_span_is_the_answer(mixed):
    _, folder = mixed
    sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, read_manifest(folder)["tokenizer"]["model"]))
    samples = [(ids, meta) for _, ids, meta in documents(folder, "train") if meta["source"] == "passkey"]
    for ids, meta in samples:
        (start, end), = meta["loss_spans"]
        # With the loader's BOS and EOS the document fills (len + 1) / S segments exactly.
        assert end == len(ids) and (len(ids) + 1) % S == 0
        text, answer = sp.decode(ids[:start].tolist()), sp.decode(ids[start:].tolist()).strip()
        assert answer.isdigit() and f"The pass key is {answer}. Remember it." in text
        assert text.endswith("What is the pass key? The pass key is")
    distances = {(len(ids) + 1) // S - 1 for ids, _ in samples}
    assert len(distances) > 1 and distances <= {0, 1, 2, 3}


def test_the_loader_reads_a_passkey_sample_as_distance_plus_one_segments_its_answer_counted_in_the_last(mixed):
    _, folder = mixed
    manifest = read_manifest(folder)
    bos, eos = manifest["special_ids"]["bos"], manifest["special_ids"]["eos"]
    samples = [(ids, meta) for _, ids, meta in documents(folder, "train") if meta["source"] == "passkey"]
    for ids, meta in samples:
        (start, end), = meta["loss_spans"]
        stream = RowStream([ids], [0], S, bos, eos, spans=[np.array(meta["loss_spans"])])
        segments = [stream.next_segment()]
        while stream.doc_index == 0:
            segments.append(stream.next_segment())
        assert len(segments) == (len(ids) + 1) // S
        counted = [targets[targets != IGNORE_INDEX] for _, targets, _ in segments]
        assert all(len(c) == 0 for c in counted[:-1])
        assert counted[-1].tolist() == ids[start:end].tolist()


def test_a_rerun_with_a_passkey_mix_writes_the_same_bytes(mixed, tmp_path):
    cfg, folder = mixed
    again = small_config(cfg.sources[0].urls[0].rsplit("/", 1)[0], tmp_path / "again",
                         passkey=PasskeyMixConfig(per_shard=5, segment_tokens=S, max_distance=3))
    other = run_prep(again, log=quiet).folders["shards"]
    assert tree_bytes(other) == tree_bytes(folder)


def test_without_a_mix_the_shard_folder_keeps_the_name_it_had_before_mixes_existed():
    assert ShardConfig(target_shard_bytes=20_000).key_fields() == {"target_shard_bytes": 20_000,
                                                                    "sample_tokens": 65_536}
    mixed = ShardConfig(target_shard_bytes=20_000, passkey=PasskeyMixConfig(per_shard=1, segment_tokens=S))
    assert mixed.key_fields()["passkey"]["per_shard"] == 1


def test_a_mix_with_leads_puts_some_keys_after_segments_of_text(corpus, tmp_path):
    cfg = small_config(corpus, tmp_path / "led", passkey=PasskeyMixConfig(per_shard=5, segment_tokens=S,
                                                                         max_distance=1, max_lead=2))
    folder = run_prep(cfg, log=quiet).folders["shards"]
    sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, read_manifest(folder)["tokenizer"]["model"]))
    keys_after_text = 0
    for _, ids, meta in documents(folder, "train"):
        if meta["source"] != "passkey":
            continue
        (start, _), = meta["loss_spans"]
        needle = f"The pass key is {sp.decode(ids[start:].tolist()).strip()}."
        assert (len(ids) + 1) % S == 0 and (len(ids) + 1) // S <= 1 + 1 + 2  # lead + d + 1 segments
        assert needle in sp.decode(ids[:start].tolist())
        keys_after_text += needle not in sp.decode(ids[:S - 1].tolist())  # the loader's first segment
    assert keys_after_text > 0


def test_a_mix_without_leads_keeps_the_name_it_had_before_leads_existed():
    plain = ShardConfig(passkey=PasskeyMixConfig(per_shard=1, segment_tokens=S))
    assert "max_lead" not in plain.key_fields()["passkey"]
    led = ShardConfig(passkey=PasskeyMixConfig(per_shard=1, segment_tokens=S, max_lead=2))
    assert led.key_fields()["passkey"]["max_lead"] == 2


def test_a_mix_names_its_sample_layout_so_a_folder_of_an_older_layout_is_not_reused():
    mixed = ShardConfig(passkey=PasskeyMixConfig(per_shard=1, segment_tokens=S))
    assert mixed.key_fields()["passkey"]["layout"] == PASSKEY_LAYOUT == 2


def test_a_mix_without_the_segment_length_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="shard.passkey.segment_tokens"):
        PasskeyMixConfig(per_shard=4)
