"""storage/ranged.py: a seekable file over an object store's byte ranges."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from common.errors import NotFound, ServiceUnavailable
from common.storage.local_objects import LocalObjectStore
from common.storage.ranged import open_ranged


class Counting(LocalObjectStore):
    reads = 0

    def read_range(self, key: str, start: int, end: int) -> bytes:
        self.reads += 1
        return super().read_range(key, start, end)


def test_reads_seeks_and_zipfile(tmp_path: Path) -> None:
    store = Counting(tmp_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(50):
            archive.writestr(f"{i}.txt", f"entry {i}" * 100)
    store.put("a.zip", buf.getvalue())
    with open_ranged(store, "a.zip", buffer_bytes=4096) as raw:
        assert raw.seekable() and raw.read(2) == b"PK"
        assert raw.seek(-3, io.SEEK_END) == len(buf.getvalue()) - 3
        assert raw.read(10) == buf.getvalue()[-3:] and raw.read(1) == b""
        with pytest.raises(OSError):
            raw.seek(-1)
        with pytest.raises(ValueError):
            raw.seek(0, 7)
        raw.seek(0)
        with zipfile.ZipFile(raw) as archive:
            assert archive.read("17.txt") == b"entry 17" * 100
    store.reads = 0
    with open_ranged(store, "a.zip") as raw:
        assert raw.read() == buf.getvalue() and store.reads == 1  # one range for the rest
    with pytest.raises(NotFound):
        open_ranged(store, "nope.zip")


def test_a_failing_store_is_an_outage_not_damage(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("a.bin", b"x" * 100)

    class Flaky(LocalObjectStore):
        def read_range(self, key: str, start: int, end: int) -> bytes:
            raise TimeoutError("read timed out")  # an OSError, as botocore's are

    with open_ranged(Flaky(tmp_path), "a.bin") as raw, pytest.raises(ServiceUnavailable) as caught:
        raw.read(10)
    assert not isinstance(caught.value, OSError) and "read timed out" in caught.value.detail
