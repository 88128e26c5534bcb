"""Zip archives of images, read defensively before anything is stored.

Refused with :class:`BadRequest` and the reason: not a zip, absolute or ``..`` paths, symlinks,
too many entries, too many uncompressed bytes or too high a compression ratio (zip bombs),
entries larger than their header says, labels that do not match the images, and every way an
archive can be corrupt, truncated or unsupported (bad CRC, damaged deflate data, encryption,
compression methods other than store and deflate).

Memory stays bounded: all checks that need only the central directory run first, then one entry
at a time is read (in chunks, never past its declared size) and handed to ``decode``, so a caller
that decodes keeps only what ``decode`` returns, never every entry's bytes at once;
:func:`iter_images` hands those over one at a time (an upload's archive, read from its file).
"""

from __future__ import annotations

import csv
import io
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Generic, TypeVar, overload

from common.errors import BadRequest

LABELS_FILE = "labels.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# What every mainstream archiver writes; zlib is then the one codec whose errors can occur.
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
CHUNK_BYTES = 1024 * 1024
# General-purpose flag bits (APPNOTE 4.4.4).
_ENCRYPTED = 0x1
_PATCHED = 0x20
_STRONG_ENCRYPTION = 0x40
# What zipfile and zlib raise on damaged input. zipfile's own set is open-ended (seeks to
# garbled offsets, struct unpacking of short reads, undecodable names), hence the base classes.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
            LookupError, OverflowError, RuntimeError)

T = TypeVar("T")


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 10_000
    max_total_bytes: int = 256 * 1024 * 1024
    max_ratio: float = 100.0
    setting: str = "MLFN_ARCHIVE"  # the settings' prefix, named by the errors
    # One entry is read whole before it is decoded: no image file is larger.
    max_entry_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class ArchiveImage(Generic[T]):
    """One image: ``data`` is its bytes, or what ``decode`` made of them."""

    name: str
    data: T
    label: str | None


def _check_name(name: str) -> PurePosixPath:
    normalized = name.replace("\\", "/")
    path = PurePosixPath(normalized)
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise BadRequest(f"archive entry {name!r} has an absolute path")
    if ".." in path.parts:
        raise BadRequest(f"archive entry {name!r} leaves the archive ('..')")
    if not path.parts or path.parts == (".",):
        raise BadRequest(f"archive entry {name!r} has no file name")
    return path


def _ignored(path: PurePosixPath) -> bool:
    """Folders and the metadata files archivers add (macOS resource forks, dotfiles)."""
    return path.parts[0] == "__MACOSX" or any(p.startswith(".") for p in path.parts)


Source = bytes | BinaryIO  # a request's body, or a seekable file (an upload's object)


@overload
def read_images(data: Source, limits: ArchiveLimits, labelled: bool,
                *, decode: None = None) -> list[ArchiveImage[bytes]]: ...


@overload
def read_images(data: Source, limits: ArchiveLimits, labelled: bool,
                *, decode: Callable[[str, bytes], T]) -> list[ArchiveImage[T]]: ...


def read_images(data: Source, limits: ArchiveLimits, labelled: bool,
                *, decode: Callable[[str, bytes], Any] | None = None) -> list[ArchiveImage[Any]]:
    """Images of a zip archive in archive order, labelled by folder name or ``labels.csv``.

    Parameters
    ----------
    decode
        Called as ``decode(name, raw_bytes)`` on each image as soon as it is read; its result is
        the image's ``data`` and the raw bytes are dropped at once. Without it ``data`` is the
        raw bytes (all of them held together: fine for small archives only).
    """
    return list(iter_images(data, limits, labelled, decode=decode or _raw))


def iter_images(data: Source, limits: ArchiveLimits, labelled: bool,
                *, decode: Callable[[str, bytes], T],
                numbered: bool = False) -> Iterator[ArchiveImage[T]]:
    """:func:`read_images` one image at a time, for archives whose decoded images together are
    too big to hold: every check of the central directory and of the labels has passed before
    the first image is yielded, and a bad entry raises when the iteration reaches it. ``data``
    may be a seekable binary file, which is read (not copied) entry by entry; the caller
    closes it after the iteration. ``numbered``: an entry's error (reading or ``decode``'s)
    ends with "(row N)", the image's number in this order (a batch job's); the errors of
    ``decode`` reach the caller unchanged otherwise."""
    archive = _open(data)
    with archive:
        files = _files(archive, limits)
        labels_info = next((i for i, p in files if str(p) == LABELS_FILE), None)
        # labels.csv is read first wherever it sits in the archive, and every label is resolved
        # from the central directory before any image is read or decoded.
        listed = _read_labels(_read_entry(archive, labels_info)) if labels_info else None
        planned = _labelled([(i, p) for i, p in files if i is not labels_info], listed, labelled)
        for row, (info, name, label) in enumerate(planned):
            try:  # no local names the raw bytes: they are garbage as soon as decode returns
                decoded = decode(name, _read_entry(archive, info))
            except BadRequest as exc:
                if not numbered:
                    raise
                raise BadRequest(f"{exc.detail} (row {row})") from None
            yield ArchiveImage(name=name, data=decoded, label=label)


def image_entries(data: Source, limits: ArchiveLimits
                  ) -> tuple[zipfile.ZipFile, list[tuple[zipfile.ZipInfo, str]]]:
    """The open archive and its image entries (with the names :func:`iter_images` gives
    them) in the order it reads them unlabelled (``labels.csv`` and ignored files left out),
    every check of the central directory passed, no entry read: a batch job cuts them into
    chunks, each read with :func:`read_entry`. The caller closes the archive."""
    archive = _open(data)
    try:
        files = _files(archive, limits)
        labels_info = next((i for i, p in files if str(p) == LABELS_FILE), None)
        listed = _read_labels(_read_entry(archive, labels_info)) if labels_info else None
        planned = _labelled([(i, p) for i, p in files if i is not labels_info], listed, False)
    except BaseException:
        archive.close()
        raise
    return archive, [(info, name) for info, name, _ in planned]


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One entry's bytes, with every check :func:`iter_images` makes of them."""
    return _read_entry(archive, info)


def _raw(name: str, blob: bytes) -> bytes:
    return blob


def _open(data: Source) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except _DAMAGED as exc:
        if isinstance(exc, NotImplementedError):
            reason = f"unsupported: {exc}"
        elif isinstance(exc, UnicodeDecodeError):
            reason = "an entry name marked UTF-8 is not valid UTF-8"
        else:
            reason = str(exc) if isinstance(exc, zipfile.BadZipFile) else type(exc).__name__
        raise BadRequest(
            f"the upload is not a zip archive, or it is truncated or damaged ({reason})"
        ) from None


def _files(archive: zipfile.ZipFile, limits: ArchiveLimits) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The entries to read, in archive order: every check the central directory allows."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise BadRequest(f"the archive has {len(infos)} entries; the limit is {limits.max_entries} "
                         f"({limits.setting}_MAX_ENTRIES)")
    total = 0
    files: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    seen: set[str] = set()
    for info in infos:
        path = _check_name(info.filename)
        if info.filename in seen:
            raise BadRequest(f"the archive holds {info.filename!r} twice")
        seen.add(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BadRequest(f"archive entry {info.filename!r} is a symbolic link")
        if info.is_dir() or _ignored(path):
            continue
        if info.file_size > limits.max_entry_bytes:
            raise BadRequest(f"archive entry {info.filename!r} is {info.file_size} bytes; an "
                             f"image file may have at most {limits.max_entry_bytes}")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise BadRequest(
                f"the archive unpacks to more than {limits.max_total_bytes} bytes (zip bomb guard, "
                f"{limits.setting}_MAX_BYTES)"
            )
        if info.file_size > 1024 and info.file_size / max(info.compress_size, 1) > limits.max_ratio:
            raise BadRequest(
                f"archive entry {info.filename!r} has a compression ratio over {limits.max_ratio:g} "
                "(zip bomb guard)"
            )
        _check_readable(info)
        files.append((info, path))
    return files


def _check_readable(info: zipfile.ZipInfo) -> None:
    if info.flag_bits & (_ENCRYPTED | _STRONG_ENCRYPTION):
        raise BadRequest(f"archive entry {info.filename!r} is encrypted; send an unencrypted zip")
    if info.compress_type not in METHODS:
        raise BadRequest(
            f"archive entry {info.filename!r} uses compression method {info.compress_type}, which "
            "is not supported; use deflate or store"
        )
    if info.flag_bits & _PATCHED:
        raise BadRequest(f"archive entry {info.filename!r} holds patch data, which is not supported")


def _labelled(files: list[tuple[zipfile.ZipInfo, PurePosixPath]], listed: dict[str, str] | None,
              labelled: bool) -> list[tuple[zipfile.ZipInfo, str, str | None]]:
    """Each image entry with its name and label; label mismatches are refused here."""
    planned = []
    for info, path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise BadRequest(
                f"archive entry {info.filename!r} is not an image file ({', '.join(IMAGE_SUFFIXES)})"
            )
        label = None
        if listed is not None:
            label = listed.pop(str(path), None)
            if label is None and labelled:
                raise BadRequest(f"mismatched labels: {str(path)!r} is not listed in {LABELS_FILE}")
        elif len(path.parts) > 1:
            label = path.parts[-2]
        elif labelled:
            raise BadRequest(
                f"archive entry {info.filename!r} has no label: put images in folders named by "
                f"label (7/a.png) or list them in {LABELS_FILE}"
            )
        planned.append((info, str(path), label))
    if listed and labelled:
        missing = sorted(listed)[0]
        raise BadRequest(f"mismatched labels: {LABELS_FILE} lists {missing!r}, which is not in the archive")
    if not planned:
        raise BadRequest("the archive holds no images")
    return planned


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One entry's bytes, read in chunks and never more than its declared size + 1."""
    cap = info.file_size + 1
    out = io.BytesIO()
    try:
        with archive.open(info) as fh:
            while out.tell() < cap and (chunk := fh.read(min(CHUNK_BYTES, cap - out.tell()))):
                out.write(chunk)
    except _DAMAGED as exc:
        raise BadRequest(f"archive entry {info.filename!r} {_damage(exc)}") from None
    if out.tell() > info.file_size:
        raise BadRequest(f"archive entry {info.filename!r} is larger than its header says")
    return out.getvalue()  # no copy: BytesIO hands over its buffer


def _damage(exc: Exception) -> str:
    """What went wrong with an entry, in words (zipfile's messages are not an API: best effort)."""
    text = str(exc)
    if isinstance(exc, zipfile.BadZipFile) and "CRC" in text:
        return "is corrupt (CRC mismatch)"
    if isinstance(exc, zipfile.BadZipFile) and "header" in text:
        return "is corrupt (its local header is missing or does not match the central directory)"
    if isinstance(exc, zlib.error):
        return "is corrupt (damaged deflate data)"
    if isinstance(exc, EOFError):
        return "is truncated (the archive ends inside it)"
    if isinstance(exc, RuntimeError):  # NotImplementedError included
        return f"uses a zip feature that is not supported ({text})"
    if isinstance(exc, ValueError) and "seek" in text:
        return "is corrupt (its offset points outside the archive)"
    return f"is corrupt ({text or type(exc).__name__})"


def _read_labels(blob: bytes) -> dict[str, str]:
    try:
        rows = list(csv.reader(io.StringIO(blob.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error):
        raise BadRequest(f"{LABELS_FILE} is not a UTF-8 CSV file") from None
    if not rows or [c.strip().lower() for c in rows[0]] != ["filename", "label"]:
        raise BadRequest(f"{LABELS_FILE} must start with the header 'filename,label'")
    labels: dict[str, str] = {}
    for i, row in enumerate(rows[1:]):
        if not row:
            continue
        if len(row) != 2 or not row[0] or not row[1]:
            raise BadRequest(f"{LABELS_FILE} row {i}: expected 'filename,label'")
        name = str(_check_name(row[0].strip()))
        if name in labels:
            raise BadRequest(f"mismatched labels: {LABELS_FILE} lists {name!r} twice")
        labels[name] = row[1].strip()
    return labels
