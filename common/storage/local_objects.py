"""ObjectStore on a local directory, with atomic writes (write to a temp file, then rename)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from common.errors import BadRequest, NotFound

TEMPORARY = ".tmp-"  # the prefix of a write in progress (renamed into place when complete)


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not key or key.startswith("/") or not path.is_relative_to(self.root) or path == self.root:
            raise BadRequest(f"invalid object key {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: Path, move: bool = False) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if move:
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())  # its bytes on disk before its name is the object's
            try:
                os.replace(path, target)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise  # another file system: copied below
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TEMPORARY)
        try:
            with os.fdopen(fd, "wb") as fh, open(path, "rb") as src:
                shutil.copyfileobj(src, fh, 1024 * 1024)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def open_read(self, key: str, version: str | None = None) -> BinaryIO:
        try:
            return open(self._path(key), "rb")  # noqa: SIM115 (the caller closes it)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"object {key!r} does not exist") from None

    def read_range(self, key: str, start: int, end: int, version: str | None = None) -> bytes:
        with self.open_read(key) as fh:
            fh.seek(start)
            return fh.read(max(0, end - start))

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"object {key!r} does not exist") from None

    def stat(self, key: str) -> tuple[int, str | None]:
        return self.size(key), None

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"object {key!r} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _files(self, prefix: str) -> list[Path]:
        # Walk only below the prefix's directory, not the whole store.
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not start.resolve().is_relative_to(self.root) or not start.is_dir():
            return []
        return [path for path in start.rglob("*")
                if path.is_file() and path.relative_to(self.root).as_posix().startswith(prefix)]

    def listing(self, prefix: str) -> list[tuple[str, datetime]]:
        out = []
        for path in self._files(prefix):
            if path.name.startswith(TEMPORARY):
                continue
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                out.append((path.relative_to(self.root).as_posix(), modified))
        return sorted(out)

    def remove_temporary(self, older_than: datetime) -> list[str]:
        """The temp files of writes a crash interrupted (``put`` writes one, then renames it)."""
        removed = []
        for path in self._files(""):
            if path.name.startswith(TEMPORARY):
                with contextlib.suppress(FileNotFoundError):
                    if datetime.fromtimestamp(path.stat().st_mtime, UTC) < older_than:
                        path.unlink()
                        removed.append(path.relative_to(self.root).as_posix())
        return removed

    def list(self, prefix: str) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self._files(prefix)
                      if not p.name.startswith(TEMPORARY))
