"""The shard contract: deterministic writer, safe reader, validated manifest."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import fsspec
import numpy as np
import pytest
import webdataset as wds

from data_prep.shards import ShardError, iter_shard, loss_spans, read_manifest, write_shard


def samples(n: int = 5):
    rng = np.random.default_rng(0)
    return [(f"doc{i:04d}", rng.integers(0, 60000, size=10 + i, dtype=np.uint16), {"tokens": 10 + i, "source": "s"})
            for i in range(n)]


def shard_bytes(items, sample_tokens: int = 0) -> bytes:
    buf = io.BytesIO()
    write_shard(buf, items, sample_tokens=sample_tokens)
    return buf.getvalue()


def test_writer_is_byte_deterministic():
    assert shard_bytes(samples()) == shard_bytes(samples())


def test_reader_returns_what_the_writer_wrote(tmp_path):
    path = tmp_path / "train-000000.tar"
    path.write_bytes(shard_bytes(samples()))
    got = list(iter_shard(str(path), expected_docs=5))
    for (key, ids, meta), (k2, ids2, meta2) in zip(got, samples(), strict=True):
        assert key == k2 and meta == meta2 and ids.dtype == np.uint16
        np.testing.assert_array_equal(ids, ids2)


def test_gnu_tar_lists_members_with_fixed_owner_and_time(tmp_path):
    path = tmp_path / "s.tar"
    path.write_bytes(shard_bytes(samples(2)))
    listing = subprocess.run(["tar", "tvf", str(path)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(listing) == 4
    assert all(line.startswith("-rw-r--r-- rmat/rmat") and "1970-01-01 00:00" in line for line in listing)
    assert [line.split()[-1] for line in listing] == ["000000.npy", "000000.json", "000001.npy", "000001.json"]


def test_webdataset_reads_the_shard(tmp_path):
    path = tmp_path / "s.tar"
    path.write_bytes(shard_bytes(samples(3)))
    got = list(wds.WebDataset(str(path), shardshuffle=False).decode())
    assert [g["__key__"] for g in got] == ["000000", "000001", "000002"]
    np.testing.assert_array_equal(got[1]["npy"], samples(3)[1][1])
    assert [d["key"] for d in got[1]["json"]["docs"]] == ["doc0001"]


def test_reader_opens_shards_through_fsspec():
    with fsspec.open("memory://shards/train-000000.tar", "wb") as f:
        f.write(shard_bytes(samples(2)))
    assert len(list(iter_shard("memory://shards/train-000000.tar", 2))) == 2


def test_shard_cut_at_a_sample_boundary_is_reported_as_truncated(tmp_path):
    full = shard_bytes(samples(3))
    with tarfile.open(fileobj=io.BytesIO(full)) as tar:
        third_sample = tar.getmembers()[4].offset  # the header of the third sample's first member
    path = tmp_path / "train-000007.tar"
    path.write_bytes(full[:third_sample])
    with pytest.raises(ShardError, match="train-000007.tar holds 2 documents but the manifest says 3"):
        list(iter_shard(str(path), expected_docs=3))


def test_shard_cut_inside_a_member_raises_naming_the_shard(tmp_path):
    data = shard_bytes(samples(3))
    path = tmp_path / "train-000003.tar"
    path.write_bytes(data[:1300])  # inside the first .npy's data
    with pytest.raises(ShardError, match="train-000003.tar"):
        list(iter_shard(str(path), expected_docs=3))


def _raw_tar(path, members):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def test_reader_rejects_member_names_that_escape_the_folder(tmp_path):
    path = tmp_path / "evil.tar"
    _raw_tar(path, [_file("../x.npy", _npy(np.zeros(3, np.uint16))), _file("../x.json", b"{}")])
    with pytest.raises(ShardError, match="escapes"):
        list(iter_shard(str(path)))


def test_reader_rejects_links(tmp_path):
    path = tmp_path / "link.tar"
    link = tarfile.TarInfo("a.npy")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    _raw_tar(path, [(link, None)])
    with pytest.raises(ShardError, match="not a regular file"):
        list(iter_shard(str(path)))


def test_reader_never_unpickles(tmp_path):
    path = tmp_path / "pickle.tar"
    _raw_tar(path, [_file("a.npy", _npy(np.array([{"x": 1}], dtype=object))), _file("a.json", b"{}")])
    with pytest.raises(ShardError, match="corrupt"):
        list(iter_shard(str(path)))


def test_reader_requires_both_npy_and_json(tmp_path):
    path = tmp_path / "half.tar"
    _raw_tar(path, [_file("a.npy", _npy(np.zeros(3, np.uint16))), _file("b.npy", _npy(np.zeros(3, np.uint16)))])
    with pytest.raises(ShardError, match=r"sample 'a' lacks \.json"):
        list(iter_shard(str(path)))


def test_missing_manifest_error_names_the_folder(tmp_path):
    with pytest.raises(ShardError, match=f"no manifest.json in {tmp_path}"):
        read_manifest(str(tmp_path))


def test_corrupt_manifest_error_names_the_folder(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "rmat-shards"')
    with pytest.raises(ShardError, match=f"manifest of {tmp_path} is not valid JSON"):
        read_manifest(str(tmp_path))


def test_manifest_missing_a_key_is_invalid(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "rmat-shards", "version": 2}))
    with pytest.raises(ShardError, match="invalid: key 'config_hash'"):
        read_manifest(str(tmp_path))


def test_loss_spans_are_read_as_start_end_pairs_and_absent_means_none():
    assert loss_spans({"domain": "code"}, 10, "here") is None
    assert loss_spans({"loss_spans": [[0, 2], [5, 11]]}, 10, "here").tolist() == [[0, 2], [5, 11]]


@pytest.mark.parametrize("spans", [[], [[0]], [[3, 3]], [[4, 6], [0, 2]], [[0, 5], [4, 6]], [[-1, 2]], [[8, 12]],
                                   "0-2"])
def test_malformed_loss_spans_raise_naming_the_document(spans):
    with pytest.raises(ShardError, match="shard s.tar, document 'k'.*loss_spans"):
        loss_spans({"loss_spans": spans}, 10, "shard s.tar, document 'k'")


def test_the_writer_refuses_malformed_loss_spans_before_writing():
    buf = io.BytesIO()
    with pytest.raises(ShardError, match="document 'k': loss_spans"):
        write_shard(buf, [("k", np.arange(5, dtype=np.uint16), {"loss_spans": [[2, 9]]})], sample_tokens=64)
    assert buf.getvalue() == b""
