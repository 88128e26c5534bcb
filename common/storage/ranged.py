"""A seekable, read-only file over an object's byte ranges: a zip archive on S3 is read where it
lies (its central directory, then the entries one wants) instead of being downloaded whole, as
``ObjectStore.open_read`` does. Pure: it only calls the store's ``read_range``."""

from __future__ import annotations

import io
from typing import Any

from common.errors import ObjectChanged, ServiceError, ServiceUnavailable

BUFFER_BYTES = 1024 * 1024  # one ranged GET per MiB read in order


class _Ranges(io.RawIOBase):
    def __init__(self, store: Any, key: str, size: int, version: str | None) -> None:
        self.store, self.key, self.size, self.position = store, key, size, 0
        self.version = version

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}
        if whence not in bases:
            raise ValueError(f"invalid whence {whence!r}")
        base = bases[whence]
        if base + offset < 0:
            raise OSError(f"seek to {base + offset}, before the start of {self.key!r}")
        self.position = base + offset
        return self.position

    def _read(self, end: int) -> bytes:
        """Bytes from the position to ``end``. A failure of the store (a timeout, a dropped
        connection: botocore's are OSErrors) becomes ServiceUnavailable, which is no OSError:
        zipfile reads an OSError as a damaged archive, and the task would fail for good
        instead of being retried."""
        try:
            if self.version is None:
                return bytes(self.store.read_range(self.key, self.position, end))
            return bytes(self.store.read_range(self.key, self.position, end, self.version))
        except ServiceError:  # NotFound, ObjectChanged: the store's own answers
            raise
        except Exception as exc:
            raise ServiceUnavailable(f"reading {self.key!r} (bytes {self.position}-{end}): "
                                     f"{type(exc).__name__}: {exc}") from exc

    def readinto(self, buffer: Any) -> int:
        end = min(self.position + len(buffer), self.size)
        if end <= self.position:
            return 0
        data = self._read(end)
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)

    def readall(self) -> bytes:
        """The rest of the object in one ranged read (not one per 8 KiB)."""
        if self.position >= self.size:
            return b""
        data = self._read(self.size)
        self.position += len(data)
        return data


def open_ranged(store: Any, key: str, buffer_bytes: int | None = None,
                version: str | None = None) -> io.BufferedReader:
    """Object ``key`` of ``store`` as a seekable binary file read by ranges of
    ``buffer_bytes`` (default ``BUFFER_BYTES``; NotFound for an unknown key), at ``version``
    when given (ObjectChanged once it was replaced); the caller closes it."""
    size, now = store.stat(key)
    if version is not None and now is not None and now != version:
        raise ObjectChanged(f"object {key!r} was replaced after it was first read (its "
                            f"version is no longer {version})")
    return io.BufferedReader(_Ranges(store, key, size, version),
                             buffer_size=buffer_bytes or BUFFER_BYTES)
