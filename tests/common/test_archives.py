"""Zip archives: every corrupt, truncated or unsupported archive is a 400 naming the entry, and
entries are streamed one at a time through ``decode`` with bounded memory."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import random
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from common.archives import ArchiveImage, ArchiveLimits, iter_images, read_images
from common.errors import BadRequest

ROOT = Path(__file__).resolve().parents[2]
LIMITS = ArchiveLimits()
MiB = 1024 * 1024

# Offsets in the zip records (APPNOTE 4.3.7, 4.3.12, 4.3.16).
LOCAL_FLAGS, LOCAL_METHOD, LOCAL_CRC, LOCAL_SIZES, LOCAL_HEADER = 6, 8, 14, 18, 30
CENTRAL_VERSION, CENTRAL_FLAGS, CENTRAL_METHOD, CENTRAL_CRC = 6, 8, 10, 16
CENTRAL_SIZES, CENTRAL_EXTRA_LEN, CENTRAL_OFFSET = 20, 30, 42
END_SIZE, END_OFFSET = 12, 16


def zip_of(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def sample(method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """Two labelled entries; the damage is done to the second, ``3/a.png``."""
    return zip_of([("1/ok.png", b"fine" * 100), ("3/a.png", bytes(range(256)) * 20)], method)


def local_at(raw: bytes | bytearray, name: str) -> int:
    return zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo(name).header_offset


def data_at(raw: bytes | bytearray, name: str) -> int:
    at = local_at(raw, name)
    name_len, extra_len = struct.unpack_from("<HH", raw, at + 26)
    return at + LOCAL_HEADER + name_len + extra_len


def central_at(raw: bytes | bytearray, name: str) -> int:
    at = raw.rindex(b"PK\x05\x06")
    size, offset = struct.unpack_from("<II", raw, at + END_SIZE)
    while offset < at:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", raw, offset + 28)
        if raw[offset + 46:offset + 46 + name_len] == name.encode():
            return offset
        offset += 46 + name_len + extra_len + comment_len
    raise AssertionError(f"{name} is not in the central directory")


def patched(raw: bytes, name: str, fmt: str, value: int, local: int | None, central: int | None) -> bytes:
    """``raw`` with one field of ``name``'s local header and/or central directory record set."""
    out = bytearray(raw)
    if local is not None:
        struct.pack_into(fmt, out, local_at(raw, name) + local, value)
    if central is not None:
        struct.pack_into(fmt, out, central_at(raw, name) + central, value)
    return bytes(out)


def flag(raw: bytes, bit: int) -> bytes:
    flags = struct.unpack_from("<H", raw, central_at(raw, "3/a.png") + CENTRAL_FLAGS)[0]
    return patched(raw, "3/a.png", "<H", flags | bit, LOCAL_FLAGS, CENTRAL_FLAGS)


def flip_data(raw: bytes, at: int = 10, value: int | None = None) -> bytes:
    out = bytearray(raw)
    spot = data_at(raw, "3/a.png") + at
    out[spot] = out[spot] ^ 0x55 if value is None else value
    return bytes(out)


def end_field(raw: bytes, at: int, delta: int) -> bytes:
    out = bytearray(raw)
    end = raw.rindex(b"PK\x05\x06")
    struct.pack_into("<I", out, end + at, struct.unpack_from("<I", raw, end + at)[0] + delta)
    return bytes(out)


def cut_stream(raw: bytes) -> bytes:
    """The last entry's deflate stream loses its second half; the directories are moved up."""
    start = data_at(raw, "3/a.png")
    size = zipfile.ZipFile(io.BytesIO(raw)).getinfo("3/a.png").compress_size
    lost = size // 2
    out = bytearray(raw[:start + size - lost] + raw[start + size:])
    end = out.rindex(b"PK\x05\x06")
    struct.pack_into("<I", out, end + END_OFFSET, struct.unpack_from("<I", out, end + END_OFFSET)[0] - lost)
    return bytes(out)


def local_name(raw: bytes) -> bytes:
    out = bytearray(raw)
    at = local_at(raw, "3/a.png") + LOCAL_HEADER
    out[at:at + 1] = b"4"
    return bytes(out)


def oversized(raw: bytes) -> bytes:
    """A stored entry whose header claims more bytes than the archive holds after it."""
    size = struct.unpack_from("<I", raw, central_at(raw, "3/a.png") + CENTRAL_SIZES)[0] + 50_000
    once = patched(raw, "3/a.png", "<I", size, LOCAL_SIZES, CENTRAL_SIZES)
    return patched(once, "3/a.png", "<I", size, LOCAL_SIZES + 4, CENTRAL_SIZES + 4)


def bad_utf8_name() -> bytes:
    raw = bytearray(zip_of([("1/\u00e9.png", b"x" * 100)]))
    at = central_at(raw, "1/\u00e9.png")
    raw[at + 46 + 2] = 0xFF  # the first byte of 'é' in UTF-8, flag bit 11 still says UTF-8
    return bytes(raw)


def corrupt_labels() -> bytes:
    raw = bytearray(zip_of([("labels.csv", b"filename,label\na.png,1\n"), ("a.png", b"x" * 100)],
                           zipfile.ZIP_STORED))
    raw[data_at(raw, "labels.csv") + 3] ^= 0x20
    return bytes(raw)


def truncated(keep: str) -> bytes:
    raw = sample()
    end = raw.rindex(b"PK\x05\x06")
    cut = {"4": 4, "30": 30, "half": len(raw) // 2, "directory": central_at(raw, "3/a.png") + 20,
           "end record": end + 10, "last byte": len(raw) - 1}[keep]
    return raw[:cut]


ENTRY = "archive entry '3/a.png' "
CORRUPT: list[tuple[str, Callable[[], bytes], str]] = [
    ("stored byte flipped: CRC", lambda: flip_data(sample(zipfile.ZIP_STORED)), ENTRY + r"is corrupt \(CRC mismatch\)"),
    ("CRC field wrong", lambda: patched(sample(), "3/a.png", "<I", 0xDEADBEEF, LOCAL_CRC, CENTRAL_CRC),
     ENTRY + r"is corrupt \(CRC mismatch\)"),
    ("deflate byte flipped", lambda: flip_data(sample()), ENTRY + r"is (corrupt|truncated)"),
    ("deflate reserved block type", lambda: flip_data(sample(), at=0, value=0x07),
     ENTRY + r"is corrupt \(damaged deflate data\)"),
    ("deflate stream cut", lambda: cut_stream(sample()), ENTRY + r"is (corrupt|truncated)"),
    ("method 99", lambda: patched(sample(), "3/a.png", "<H", 99, LOCAL_METHOD, CENTRAL_METHOD),
     ENTRY + "uses compression method 99, which is not supported; use deflate or store"),
    ("method 99 in the central directory only",
     lambda: patched(sample(), "3/a.png", "<H", 99, None, CENTRAL_METHOD), ENTRY + "uses compression method 99"),
    ("deflate64 (9)", lambda: patched(sample(), "3/a.png", "<H", 9, LOCAL_METHOD, CENTRAL_METHOD),
     ENTRY + "uses compression method 9"),
    ("bzip2", lambda: sample(zipfile.ZIP_BZIP2), "archive entry '1/ok.png' uses compression method 12"),
    ("encrypted", lambda: flag(sample(), 0x1), ENTRY + "is encrypted; send an unencrypted zip"),
    ("strong encryption", lambda: flag(sample(), 0x40), ENTRY + "is encrypted"),
    ("compressed patch data", lambda: flag(sample(), 0x20), ENTRY + "holds patch data"),
    ("declared size past the end", lambda: oversized(sample(zipfile.ZIP_STORED)),
     ENTRY + r"is truncated \(the archive ends inside it\)"),
    ("local header name differs", lambda: local_name(sample()), ENTRY + "is corrupt .*local header"),
    ("local header signature", lambda: patched(sample(), "3/a.png", "<I", 0x04034B51, 0, None),
     ENTRY + "is corrupt .*local header"),
    ("header offset past the end", lambda: patched(sample(), "3/a.png", "<I", 0x7FFFFFFF, None, CENTRAL_OFFSET),
     ENTRY + "is corrupt .*local header"),
    ("header offset points at another entry", lambda: patched(sample(), "3/a.png", "<I", 0, None, CENTRAL_OFFSET),
     ENTRY + "is corrupt .*local header"),
    ("directory offset too large (negative seek)", lambda: end_field(sample(), END_OFFSET, 10_000),
     "archive entry '1/ok.png' is corrupt"),
    ("directory size too large", lambda: end_field(sample(), END_SIZE, 7), "not a zip archive.*central directory"),
    ("directory signature", lambda: patched(sample(), "3/a.png", "<I", 0x02014B51, None, 0),
     "not a zip archive.*central directory"),
    ("end record signature", lambda: sample().replace(b"PK\x05\x06", b"PK\x05\x07"), "not a zip archive"),
    ("extra field length garbled", lambda: patched(sample(), "1/ok.png", "<H", 9, None, CENTRAL_EXTRA_LEN),
     "not a zip archive.*extra field"),
    ("zip version 9.9 needed", lambda: patched(sample(), "3/a.png", "<H", 99, None, CENTRAL_VERSION),
     r"not a zip archive.*unsupported: zip file version 9\.9"),
    ("name marked UTF-8 is not", bad_utf8_name, "not a zip archive.*not valid UTF-8"),
    ("labels.csv corrupt", lambda: corrupt_labels(), "archive entry 'labels.csv' is corrupt"),
    ("empty upload", lambda: b"", "not a zip archive"),
] + [
    (f"truncated at {keep}", functools.partial(truncated, keep), "not a zip archive")
    for keep in ("4", "30", "half", "directory", "end record", "last byte")
]


@pytest.mark.parametrize(("case", "build", "pattern"), CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt_archives_are_bad_requests(case: str, build: Callable[[], bytes], pattern: str) -> None:
    archive = build()
    for decode in (None, lambda name, blob: len(blob)):
        with pytest.raises(BadRequest, match=pattern):
            read_images(archive, LIMITS, labelled=False, decode=decode)


def test_every_flipped_byte_and_every_truncation_is_a_bad_request_or_reads() -> None:
    """No byte of an archive, damaged or cut off, lets anything but BadRequest out of zipfile."""
    raw = zip_of([("1/a.png", b"\x89PNG" + bytes(range(256)) * 4), ("labels.csv", b"filename,label\n1/a.png,1\n"),
                  ("b.png", b"plain " * 50)])
    variants = [raw[:n] for n in range(len(raw))]
    for i in range(len(raw)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(raw)
            damaged[i] ^= mask
            variants.append(bytes(damaged))
    for archive in variants:
        with contextlib.suppress(BadRequest):
            read_images(archive, ArchiveLimits(max_ratio=1e9), labelled=False, decode=lambda name, blob: blob)


def test_decode_sees_each_image_once_in_order_and_its_result_is_kept() -> None:
    archive = zip_of([("7/a.png", b"a" * 10), ("__MACOSX/7/._a.png", b"junk"), ("8/b.png", b"b" * 20),
                      (".DS_Store", b"junk"), ("9\\c.png", b"c" * 30)])
    seen: list[tuple[str, int]] = []

    def decode(name: str, blob: bytes) -> int:
        seen.append((name, len(blob)))
        return len(blob)

    images = read_images(archive, LIMITS, labelled=True, decode=decode)
    assert seen == [("7/a.png", 10), ("8/b.png", 20), ("9/c.png", 30)]
    assert images == [ArchiveImage("7/a.png", 10, "7"), ArchiveImage("8/b.png", 20, "8"),
                      ArchiveImage("9/c.png", 30, "9")]


def test_without_decode_the_raw_bytes_are_returned() -> None:
    images = read_images(zip_of([("7/a.png", b"a" * 10)]), LIMITS, True)
    assert images == [ArchiveImage("7/a.png", b"a" * 10, "7")]


def test_labels_csv_after_the_images_is_read_first() -> None:
    archive = zip_of([("a.png", b"a"), ("b.png", b"b"), ("labels.csv", b"filename,label\na.png,x\nb.png,y\n")])
    seen: list[str] = []

    def decode(name: str, blob: bytes) -> bytes:
        seen.append(name)
        return blob

    images = read_images(archive, LIMITS, labelled=True, decode=decode)
    assert [(i.name, i.data, i.label) for i in images] == [("a.png", b"a", "x"), ("b.png", b"b", "y")]
    assert seen == ["a.png", "b.png"]


@pytest.mark.parametrize(("entries", "needle"), [
    ([("a.png", b"a"), ("b.png", b"b"), ("labels.csv", b"filename,label\na.png,x\n")], "'b.png' is not listed"),
    ([("a.png", b"a"), ("labels.csv", b"filename,label\na.png,x\nz.png,y\n")], "lists 'z.png'"),
    ([("a.png", b"a"), ("notes.txt", b"hi"), ("labels.csv", b"filename,label\na.png,x\n")], "not an image file"),
])
def test_label_mismatches_are_refused_before_any_image_is_decoded(entries: list[tuple[str, bytes]],
                                                                  needle: str) -> None:
    def decode(name: str, blob: bytes) -> bytes:
        raise AssertionError(f"{name} was decoded before the labels were checked")

    with pytest.raises(BadRequest, match=needle):
        read_images(zip_of(entries), LIMITS, labelled=True, decode=decode)


def test_errors_of_decode_reach_the_caller_unchanged() -> None:
    def decode(name: str, blob: bytes) -> bytes:
        raise BadRequest(f"{name}: not a decodable image")

    with pytest.raises(BadRequest, match="^7/a.png: not a decodable image$"):
        read_images(zip_of([("7/a.png", b"a")]), LIMITS, True, decode=decode)
    numbered = iter_images(zip_of([("7/a.png", b"a")]), LIMITS, True, decode=decode,
                           numbered=True)
    with pytest.raises(BadRequest, match=r"^7/a.png: not a decodable image \(row 0\)$"):
        list(numbered)


def test_an_entry_is_never_read_past_its_declared_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """zipfile itself stops at the declared size; the cap of size + 1 is the second guard."""
    import common.archives as archives

    reads: list[int] = []
    real_open = zipfile.ZipFile.open

    def counting_open(self: zipfile.ZipFile, *args: Any, **kwargs: Any) -> IO[bytes]:
        handle = real_open(self, *args, **kwargs)
        real_read = handle.read

        def read(n: int = -1) -> bytes:
            reads.append(n)
            return real_read(n)

        handle.read = read  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(archives, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(zipfile.ZipFile, "open", counting_open)
    blob = random.Random(0).randbytes(10_000)
    images = read_images(zip_of([("7/a.png", blob)]), LIMITS, True, decode=lambda name, blob: blob)
    assert images[0].data == blob
    assert reads == [4096, 4096, 10_001 - 2 * 4096, 1]  # the last read finds the end


# Linux counts the parent's RSS into a child's ru_maxrss at exec (the forked mm's high-water mark
# is kept), so a probe started by pytest would start from pytest's size and hide growth. The probe
# therefore runs as a grandchild, started by a small Python process.
LAUNCHER = "import subprocess, sys; subprocess.run([sys.executable, '-c', *sys.argv[1:]], check=True)"
MEMORY_PROBE = """
import json, resource, sys
from common.archives import ArchiveLimits, read_images

def peak():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux

data = open(sys.argv[1], "rb").read()
limits = ArchiveLimits(max_ratio=1e5)
base = peak()
images = read_images(data, limits, True, decode=lambda name, blob: len(blob))
streamed = peak() - base
total = sum(i.data for i in images)
del images
held = read_images(data, limits, True)  # the control: every entry's bytes at once
print(json.dumps({"base": base, "streamed": streamed, "held": peak() - base, "total": total}))
"""


def test_a_250_mb_archive_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    """Peak RSS of a fresh process: decoding as it reads adds well under 64 MB for 250 MiB of
    entries, while holding the raw bytes (the control) adds about all of them."""
    blob = bytes(MiB)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(250):
            zf.writestr(f"{i % 10}/{i}.png", blob)
    path = tmp_path / "big.zip"
    path.write_bytes(buf.getvalue())
    done = subprocess.run([sys.executable, "-c", LAUNCHER, MEMORY_PROBE, str(path)], cwd=ROOT,
                          capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT)})
    result = json.loads(done.stdout)
    assert result["total"] == 250 * MiB
    assert result["streamed"] < 64 * MiB, result
    assert result["held"] > 200 * MiB, result  # the probe does see memory that is held


def test_one_entry_larger_than_an_image_file_can_be_is_refused_from_the_directory() -> None:
    """An entry is read whole before it is decoded: one too large is refused before any read."""
    from common.archives import image_entries

    data = zip_of([("1/ok.png", b"fine" * 10), ("2/huge.png", b"\0" * 5000)], zipfile.ZIP_STORED)
    with pytest.raises(BadRequest, match="'2/huge.png' is 5000 bytes; an image file may have at most 4096"):
        image_entries(data, ArchiveLimits(max_entry_bytes=4096))
    archive, entries = image_entries(data, ArchiveLimits())
    archive.close()
    assert [name for _, name in entries] == ["1/ok.png", "2/huge.png"]
