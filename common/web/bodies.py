"""Reading request bodies by content type, with errors that say what to fix (no web framework:
multipart bodies are parsed with python-multipart, the parser Starlette uses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.errors import BadRequest
from common.payloads import (
    ZIP_MAGIC,
    ZIP_TYPES,
    check_json_type,
    parse_json,
    top_k_of,
    upload_format,
)
from common.web.request import Request

MAX_PARTS = 100


@dataclass
class Part:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str
    data: bytearray = field(default_factory=bytearray)


def multipart_parts(request: Request) -> list[Part]:
    """The parts of a multipart/form-data body, in order; BadRequest for a malformed body."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart body without a boundary in its Content-Type header")
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    name, value = bytearray(), bytearray()

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(name).lower()] = bytes(value)
        name.clear()
        value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if b"name" not in disposition:
            raise BadRequest("a multipart part has no name in its Content-Disposition header")
        if len(parts) >= MAX_PARTS:
            raise BadRequest(f"the multipart body has more than {MAX_PARTS} parts")
        filename = disposition.get(b"filename")
        parts.append(Part(
            name=disposition[b"name"].decode("utf-8", errors="replace"),
            filename=None if filename is None else filename.decode("utf-8", errors="replace"),
            content_type=headers.get(b"content-type", b"").decode("latin-1").strip().lower(),
        ))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
    })
    try:
        parser.write(request.body)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    if parser.state != MultipartState.END:
        raise BadRequest("malformed multipart body: it ends before its closing boundary "
                         f"(--{boundary.decode('latin-1')}--); was the upload cut short?")
    return parts


def multipart_file(request: Request, field_name: str, what: str) -> Part:
    """The one file part named ``field_name``; refused if missing, repeated or empty."""
    found = [p for p in multipart_parts(request) if p.name == field_name]
    if not found or found[0].filename is None:
        hint = f" (curl -F {field_name}=@{what})"
        raise BadRequest(f"multipart body needs a file field named {field_name!r}{hint}")
    if len(found) > 1:
        raise BadRequest(
            f"the multipart body has {len(found)} {field_name!r} fields; send one file per request"
        )
    if not found[0].data:
        raise BadRequest(f"the {field_name!r} field is empty")
    return found[0]


def read_json(request: Request) -> Any:
    check_json_type(request.media_type)
    return parse_json(request.body)


def upload(request: Request) -> tuple[str, bytes]:
    """An upload as (format, bytes), format one of ``json``, ``csv``, ``zip``: a JSON, CSV or zip
    body, or the multipart field ``file`` (its format from its name, type or first bytes)."""
    kind, data, _ = upload_file(request)
    return kind, data


def upload_file(request: Request) -> tuple[str, bytes, str | None]:
    """:func:`upload` and the file name of a multipart upload (None for a plain body)."""
    kind = request.media_type
    if kind == "multipart/form-data":
        part = multipart_file(request, "file", "data.csv")
        data, name = bytes(part.data), (part.filename or "").lower()
        if name.endswith(".zip") or part.content_type in ZIP_TYPES or data.startswith(ZIP_MAGIC):
            return "zip", data, part.filename or ""
        if name.endswith(".json") or part.content_type.startswith("application/json"):
            return "json", data, part.filename or ""
        return "csv", data, part.filename or ""
    return upload_format(kind), request.body, None


def image_upload(request: Request) -> bytes:
    """The multipart field ``image`` of a forward request."""
    return bytes(multipart_file(request, "image", "image.png").data)


def top_k(request: Request) -> int | None:
    """``X-Top-K``: how many classes to return, most probable first (all when absent)."""
    return top_k_of(request.headers.get("x-top-k"))
