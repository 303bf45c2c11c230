"""Packed samples: documents of any length packed into samples of sample_tokens ids, read back exactly."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import numpy as np
import pytest
import webdataset as wds

from data_prep.shards import ShardError, iter_shard, read_manifest, write_shard


def docs(lengths: list[int], seed: int = 0) -> list[tuple[str, np.ndarray, dict]]:
    rng = np.random.default_rng(seed)
    return [(f"doc{i:06d}", rng.integers(0, 60000, size=n, dtype=np.uint16), {"tokens": n, "domain": "d"})
            for i, n in enumerate(lengths)]


def write(path, items, sample_tokens: int) -> bytes:
    buf = io.BytesIO()
    write_shard(buf, items, sample_tokens=sample_tokens)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_documents_come_back_exactly_when_long_ones_span_several_samples(tmp_path):
    items = docs([5, 40, 3, 100, 16, 1])
    write(tmp_path / "s.tar", items, sample_tokens=16)
    got = list(iter_shard(str(tmp_path / "s.tar"), expected_docs=len(items)))
    assert [(k, m) for k, _, m in got] == [(k, m) for k, _, m in items]
    for (_, ids, _), (_, want, _) in zip(got, items, strict=True):
        np.testing.assert_array_equal(ids, want)


def test_every_sample_but_the_last_holds_sample_tokens_ids_and_plain_webdataset_reads_them(tmp_path):
    items = docs([5, 40, 3, 100, 16, 1])
    write(tmp_path / "s.tar", items, sample_tokens=16)
    samples = list(wds.WebDataset(str(tmp_path / "s.tar"), shardshuffle=False).decode())
    assert [s["npy"].size for s in samples] == [16] * 10 + [5]
    np.testing.assert_array_equal(np.concatenate([s["npy"] for s in samples]),
                                  np.concatenate([ids for _, ids, _ in items]))
    assert samples[1]["json"]["docs"][0] == {"key": "doc000001", "offset": 11, "length": 16, "size": 40,
                                             "meta": {"tokens": 40, "domain": "d"}}


def test_gnu_tar_lists_two_members_per_sample(tmp_path):
    write(tmp_path / "s.tar", docs([30] * 10), sample_tokens=100)
    listing = subprocess.run(["tar", "-tf", str(tmp_path / "s.tar")], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == [f"{n:06d}.{ext}" for n in range(3) for ext in ("npy", "json")]


@pytest.mark.parametrize("mix", ["dialogue turns", "books", "mixed"])
def test_tar_overhead_is_under_2_percent_of_the_shard_whatever_the_lengths(tmp_path, mix):
    rng = np.random.default_rng(1)
    short, medium = rng.integers(1, 60, size=20_000).tolist(), rng.integers(100, 5000, size=100).tolist()
    lengths = {"dialogue turns": short, "books": [300_000, 450_000, 250_000],
               "mixed": [*short[:5_000], 400_000, *medium]}[mix]
    data = write(tmp_path / "s.tar", docs(lengths), sample_tokens=65_536)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        payload = sum(m.size for m in tar.getmembers())
    assert (len(data) - payload) / len(data) < 0.02


def test_a_shard_cut_inside_a_document_that_spans_samples_is_truncated(tmp_path):
    data = write(tmp_path / "s.tar", docs([10, 50]), sample_tokens=16)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        third = tar.getmembers()[4].offset  # the header of the third sample: document 1 is not complete
    (tmp_path / "cut.tar").write_bytes(data[:third])
    with pytest.raises(ShardError, match=r"cut.tar ends inside document 'doc000001': it is truncated"):
        list(iter_shard(str(tmp_path / "cut.tar")))


@pytest.mark.parametrize("version", [1, 3])
def test_a_manifest_of_another_version_is_refused_naming_it(tmp_path, version):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "rmat-shards", "version": version}))
    with pytest.raises(ShardError, match=f"version {version} is not one this reader knows .*version 2"):
        read_manifest(str(tmp_path))
