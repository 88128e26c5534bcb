"""Request payloads as data: JSON documents, CSV tables and their records (no web framework)."""

from __future__ import annotations

import csv
import io
import re
from typing import IO, Any

import orjson

from common.domain import Feature, Task
from common.errors import BadRequest
from common.inference.inputs import parse_csv_cell, unknown_column_hint


def media_type_of(content_type: str) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return content_type.split(";")[0].strip().lower()


def check_json_type(kind: str) -> None:
    """A JSON body may be sent as application/json or without a content type."""
    if kind.startswith("image/"):
        raise BadRequest(
            f"wrong content type {kind!r}: send an image as multipart/form-data in a field named "
            "'image' (curl -F image=@file.png)"
        )
    if kind not in ("application/json", ""):
        raise BadRequest(f"wrong content type {kind!r}; send application/json")


ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-zip")
ZIP_MAGIC = b"PK\x03\x04"


def upload_format(kind: str) -> str:
    """The format (``json``, ``csv``, ``zip``) of a body sent with media type ``kind``."""
    if kind in ZIP_TYPES:
        return "zip"
    if kind == "text/csv":
        return "csv"
    if kind in ("application/json", ""):
        return "json"
    raise BadRequest(
        f"wrong content type {kind!r}; send application/json, text/csv, application/zip or "
        "multipart/form-data"
    )


def top_k_of(raw: str | None) -> int | None:
    """The ``X-Top-K`` header: how many classes to return, most probable first (None: all)."""
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,6}", raw.strip()) or int(raw) < 1:
        raise BadRequest(f"header X-Top-K must be a positive integer, not {raw[:20]!r}")
    return int(raw)


def check_top_k(k: int | None, task: Task, model: str) -> None:
    """X-Top-K picks classes by probability: on a regression model it is refused, not ignored,
    so that a client that sends it to the wrong model hears about it."""
    if k is not None and task is Task.regression:
        raise BadRequest(
            f"header X-Top-K applies to classification; model {model!r} is a regression model"
        )


def parse_json(body: bytes) -> Any:
    if not body:
        raise BadRequest("the body is empty; send a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def records_of(body: bytes) -> Any:
    doc = parse_json(body)
    if not isinstance(doc, dict) or "records" not in doc:
        raise BadRequest('body must be {"records": [{...}, ...]}')
    return doc["records"]


# What the "surrogateescape" error handler decodes a byte that is not UTF-8 to; never the
# decoding of valid UTF-8 (which refuses encoded surrogates too).
NOT_UTF8 = re.compile("[\udc80-\udcff]")
NEWLINE = b"\n"


def not_utf8(where: str) -> str:
    return f"the CSV is not UTF-8 text ({where}): save the file as UTF-8"


def not_utf8_in(text: IO[str] | str, first: int = 0, header: bool = True) -> str | None:
    """Of CSV text decoded with ``errors="surrogateescape"``: the error naming the first row
    that holds a byte that is not UTF-8 (its header, or a data row numbered from ``first``;
    empty lines are no rows, as everywhere); None if a malformed row comes first."""
    stream = io.StringIO(text, newline="") if isinstance(text, str) else text
    try:
        for i, row in enumerate((r for r in csv.reader(stream) if r), start=first - header):
            if any(not cell.isascii() and NOT_UTF8.search(cell) for cell in row):
                return not_utf8("its header" if i < first else f"row {i}")
    except csv.Error:
        pass
    return None


def not_utf8_row(data: bytes, first: int = 0, header: bool = True) -> str:
    """The error for CSV ``data`` that does not decode as UTF-8, naming the row that holds the
    first such byte (:func:`not_utf8_in`), or its line where the rows before it are malformed."""
    found = not_utf8_in(data.decode("utf-8-sig", errors="surrogateescape"), first, header)
    if found is not None:
        return found
    if not header:  # a chunk of a file: its lines are not the file's
        return not_utf8(f"row {first} or after it")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return not_utf8(f"line {data.count(NEWLINE, 0, exc.start) + 1}")
    return "the CSV is not UTF-8 text"


def too_many_rows(rows: int, limit: int) -> str:
    return f"the batch has {rows} rows; the limit is {limit}"


def csv_rows(body: bytes) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV document; every row must have the header's width."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest(not_utf8_row(body)) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [r for r in reader if r]
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV (line {reader.line_num}): {exc}") from None
    if not rows:
        raise BadRequest("the CSV is empty; it needs a header row")
    header, data = rows[0], rows[1:]
    # curl -d @file drops the line breaks, which leaves one long "header"
    one_line = "" if data else (
        " (the body is a single line: send files with curl --data-binary @file, not -d)")
    if len(set(header)) != len(header):
        raise BadRequest(f"the CSV header repeats a column: {header[:12]}{one_line}")
    for i, row in enumerate(data):
        if len(row) != len(header):
            raise BadRequest(
                f"malformed CSV: row {i} has {len(row)} fields, the header has {len(header)}"
            )
    return header, data


def csv_records(
    body: bytes, features: list[Feature], extra: tuple[str, ...] = (), target: str | None = None,
    max_rows: int | None = None,
) -> list[dict[str, Any]]:
    """CSV rows as JSON-like records typed by the feature schema.

    Columns named in ``extra`` (e.g. the target for evaluate) are kept as raw strings; ``target``
    only improves the error when the target column is sent where it does not belong. More rows
    than ``max_rows`` are refused before any cell is read.
    """
    header, data = csv_rows(body)
    if max_rows is not None and len(data) > max_rows:
        raise BadRequest(too_many_rows(len(data), max_rows))
    by_name = {f.name: f for f in features}
    for name in header:
        if name not in by_name and name not in extra:
            raise BadRequest(
                f"unknown column {name!r}; expected {sorted(by_name)}" + unknown_column_hint(name, target)
            )
    missing = [f.name for f in features if f.name not in header]
    if missing:
        raise BadRequest(f"missing column {missing[0]!r}")
    records = []
    for i, row in enumerate(data):
        rec: dict[str, Any] = {}
        for name, cell in zip(header, row, strict=True):
            feature = by_name.get(name)
            rec[name] = cell if feature is None else parse_csv_cell(feature, cell, i)
        records.append(rec)
    return records
