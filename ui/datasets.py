"""Reading what the user uploads before it goes to the API: CSV files and zip archives of images
(``label/name.png`` folders, or flat with a ``labels.csv`` of ``filename,label``)."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import pandas as pd

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
PREVIEW_MAX_BYTES = 2 * 1024 * 1024  # a preview never inflates a large entry
PREVIEW_ROWS = 100_000  # a larger CSV is looked at from its first rows (the API reads them all)


class UnreadableFile(ValueError):
    """The upload is not a CSV / zip the UI can look into; the message says why."""


def read_csv(content: bytes, **kwargs: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(io.BytesIO(content), **kwargs)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UnreadableFile(f"this file is not a readable CSV ({exc})") from None


def data_rows(content: bytes) -> int:
    """About how many data rows a CSV has (its lines but the header; a quoted newline counts
    too): the denominator of an ingestion's progress."""
    lines = content.count(b"\n") + (0 if content.endswith(b"\n") or not content else 1)
    return max(lines - 1, 0)


def file_rows(filename: str, content: bytes) -> int:
    """About how many rows a file adds: a zip's images (0 if it cannot be read: the API will
    say why), a CSV's :func:`data_rows`."""
    if not filename.lower().endswith(".zip"):
        return data_rows(content)
    try:
        return len(archive_labels(content))
    except UnreadableFile:
        return 0


def _open(content: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise UnreadableFile("this file is not a readable zip archive") from None


def archive_labels(content: bytes) -> dict[str, str | None]:
    """Image entry name → label: ``labels.csv`` if the archive has one, else the parent folder
    (None for a flat, unlabelled archive). Reads names and labels.csv only."""
    with _open(content) as archive:
        names = [n for n in archive.namelist() if n.lower().endswith(IMAGE_SUFFIXES)]
        listed = next((n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "labels.csv"), None)
        if listed is not None and archive.getinfo(listed).file_size <= PREVIEW_MAX_BYTES:
            rows = csv.DictReader(io.StringIO(archive.read(listed).decode("utf-8", "replace")))
            labels = {r.get("filename", ""): r.get("label") for r in rows}
            return {n: labels.get(n, labels.get(n.rsplit("/", 1)[-1])) for n in names}
    return {n: (n.split("/")[-2] if "/" in n else None) for n in names}


def archive_samples(content: bytes, count: int = 8) -> list[tuple[str, bytes]]:
    """The first few images of an archive (small entries only), for a preview."""
    with _open(content) as archive:
        entries = [i for i in archive.infolist()
                   if i.filename.lower().endswith(IMAGE_SUFFIXES) and i.file_size <= PREVIEW_MAX_BYTES]
        return [(i.filename, archive.read(i)) for i in entries[:count]]
