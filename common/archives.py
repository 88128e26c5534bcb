"""Zip archives of images, read defensively before anything is stored.

Refused with :class:`BadRequest` and the reason: not a zip, absolute or ``..`` paths, symlinks,
too many entries, too many uncompressed bytes or too high a compression ratio (zip bombs),
entries larger than their header says, and labels that do not match the images.
"""

from __future__ import annotations

import csv
import io
import stat
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from common.errors import BadRequest

LABELS_FILE = "labels.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 10_000
    max_total_bytes: int = 256 * 1024 * 1024
    max_ratio: float = 100.0


@dataclass(frozen=True)
class ArchiveImage:
    name: str
    data: bytes
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


def read_images(data: bytes, limits: ArchiveLimits, labelled: bool) -> list[ArchiveImage]:
    """Images of a zip archive in archive order, labelled by folder name or ``labels.csv``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise BadRequest("the upload is not a zip archive") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise BadRequest(f"the archive has {len(infos)} entries; the limit is {limits.max_entries}")
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
            total += info.file_size
            if total > limits.max_total_bytes:
                raise BadRequest(
                    f"the archive unpacks to more than {limits.max_total_bytes} bytes (zip bomb guard)"
                )
            if info.file_size > 1024 and info.file_size / max(info.compress_size, 1) > limits.max_ratio:
                raise BadRequest(
                    f"archive entry {info.filename!r} has a compression ratio over {limits.max_ratio:g} "
                    "(zip bomb guard)"
                )
            files.append((info, path))

        contents: dict[str, bytes] = {}
        for info, _ in files:
            with archive.open(info) as fh:
                blob = fh.read(info.file_size + 1)
            if len(blob) > info.file_size:
                raise BadRequest(f"archive entry {info.filename!r} is larger than its header says")
            contents[info.filename] = blob

    labels_entry = next((i.filename for i, p in files if str(p) == LABELS_FILE), None)
    listed = _read_labels(contents[labels_entry]) if labels_entry else None
    images = []
    for info, path in files:
        if info.filename == labels_entry:
            continue
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
        images.append(ArchiveImage(name=str(path), data=contents[info.filename], label=label))
    if listed and labelled:
        missing = sorted(listed)[0]
        raise BadRequest(f"mismatched labels: {LABELS_FILE} lists {missing!r}, which is not in the archive")
    if not images:
        raise BadRequest("the archive holds no images")
    return images


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
