"""One contract for every ObjectStore adapter: local directory and S3 (moto server)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from common.errors import BadRequest, NotFound
from common.storage.local_objects import LocalObjectStore
from common.storage.ports import ObjectStore


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects")
        return
    request.getfixturevalue("aws")
    import boto3

    from common.storage.s3_objects import S3ObjectStore

    s3 = S3ObjectStore("contract-bucket", boto3.client("s3"))
    s3.ensure_bucket()
    yield s3


def test_put_get_roundtrip(store: ObjectStore) -> None:
    store.put("m/0000000001.onnx", b"\x00onnx bytes\xff")
    assert store.get("m/0000000001.onnx") == b"\x00onnx bytes\xff"
    assert store.exists("m/0000000001.onnx")


def test_put_replaces_whole_object(store: ObjectStore) -> None:
    store.put("k/a", b"first version, longer")
    store.put("k/a", b"second")
    assert store.get("k/a") == b"second"


def test_missing_key_is_not_found(store: ObjectStore) -> None:
    assert not store.exists("nope/x")
    with pytest.raises(NotFound):
        store.get("nope/x")


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put("d/x", b"1")
    store.delete("d/x")
    store.delete("d/x")
    assert not store.exists("d/x")


def test_list_by_prefix_sorted(store: ObjectStore) -> None:
    for key in ("a/2", "a/1", "b/1", "a/sub/3"):
        store.put(key, key.encode())
    assert store.list("a/") == ["a/1", "a/2", "a/sub/3"]
    assert store.list("c/") == []


def test_concurrent_writers_of_distinct_keys_all_land(store: ObjectStore) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.put(f"par/{i:03d}", str(i).encode()), range(40)))
    assert store.list("par/") == [f"par/{i:03d}" for i in range(40)]


def test_local_store_refuses_traversal(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "root")
    for key in ("../escape", "/etc/passwd", "a/../../escape", ""):
        with pytest.raises(BadRequest):
            store.put(key, b"x")
    assert not (tmp_path / "escape").exists()


def test_local_store_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "root")
    store.put("x/y", b"data")
    assert sorted(p.name for p in (tmp_path / "root" / "x").iterdir()) == ["y"]


@pytest.mark.parametrize("size", [1000, 20 * 1024 * 1024])  # one GET; the managed transfer's parts
def test_reads_at_a_version(store: ObjectStore, size: int, tmp_path: Path) -> None:
    """A read at the version stat gave reads those bytes; once the object was replaced, S3
    refuses it (ObjectChanged); a local store has no versions and reads what is there."""
    from common.errors import ObjectChanged

    first = bytes(range(256)) * (size // 256)
    store.put("v/a", first)
    length, version = store.stat("v/a")
    assert length == len(first) and store.size("v/a") == len(first)
    with store.open_read("v/a", version) as raw:
        assert raw.read() == first
    assert store.read_range("v/a", 10, 20, version) == first[10:20]
    second = first[::-1]
    path = tmp_path / "second"
    path.write_bytes(second)
    store.put_file("v/a", path)
    if version is None:  # local
        assert store.read_range("v/a", 0, 5, version) == second[:5]
        return
    assert store.stat("v/a")[1] != version
    with pytest.raises(ObjectChanged, match="replaced after it was first read"):
        store.read_range("v/a", 0, 5, version)
    with pytest.raises(ObjectChanged, match="replaced after it was first read"):
        store.open_read("v/a", version)
    # the parts themselves ask for the version, not only the check before them
    store.stat = lambda key: (len(second), version)  # type: ignore[method-assign]
    with pytest.raises(ObjectChanged, match="replaced after it was first read"):
        store.open_read("v/a", version)


def test_put_file_moving_the_file(store: ObjectStore, tmp_path: Path) -> None:
    """move=True: the object holds the file's bytes; a local store on the same file system
    renamed the file into place (no copy), and leaves no temporary file."""
    path = tmp_path / "result.csv"
    path.write_bytes(b"row,prediction\n0,yes\n")
    store.put_file("r/result.csv", path, move=True)
    assert store.get("r/result.csv") == b"row,prediction\n0,yes\n"
    if isinstance(store, LocalObjectStore):
        assert not path.exists()
        assert [p.name for p in (tmp_path / "objects" / "r").iterdir()] == ["result.csv"]
    store.put("r/result.csv", b"replaced")  # the moved file is the store's own now
    assert store.get("r/result.csv") == b"replaced"


def test_put_file_moving_across_file_systems_copies(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    store = LocalObjectStore(tmp_path / "objects")
    path = tmp_path / "result.csv"
    path.write_bytes(b"bytes")
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(src) == path:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    store.put_file("r/x", path, move=True)
    assert store.get("r/x") == b"bytes" and path.exists()  # copied; the caller removes it
