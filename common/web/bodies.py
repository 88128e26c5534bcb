"""Reading request bodies: size-checked, by content type, with errors that say what to fix."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from common.errors import BadRequest, PayloadTooLarge
from common.payloads import (
    ZIP_MAGIC,
    ZIP_TYPES,
    check_json_type,
    media_type_of,
    parse_json,
    top_k_of,
    upload_format,
)
from common.settings import Settings


def media_type(request: Request) -> str:
    return media_type_of(request.headers.get("content-type", ""))


async def read_body(request: Request, settings: Settings) -> bytes:
    body = await request.body()
    if len(body) > settings.max_body_bytes:
        raise PayloadTooLarge(
            f"the body has {len(body)} bytes; the limit is {settings.max_body_bytes}"
        )
    return body


async def read_json(request: Request, settings: Settings) -> Any:
    check_json_type(media_type(request))
    return parse_json(await read_body(request, settings))




async def upload(request: Request, settings: Settings) -> tuple[str, bytes]:
    """An upload as (format, bytes), format one of ``json``, ``csv``, ``zip``: a JSON, CSV or zip
    body, or the multipart field ``file`` (its format from its name, type or first bytes)."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        await read_body(request, settings)  # size check before parsing
        form = await request.form()
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise BadRequest("multipart body needs a file field named 'file'")
        data = await part.read()
        name = (part.filename or "").lower()
        part_type = (part.content_type or "").lower()
        if name.endswith(".zip") or part_type in ZIP_TYPES or data.startswith(ZIP_MAGIC):
            return "zip", data
        if name.endswith(".json") or part_type.startswith("application/json"):
            return "json", data
        return "csv", data
    body = await read_body(request, settings)
    return upload_format(kind), body


async def image_upload(request: Request, settings: Settings) -> bytes:
    """The multipart field ``image`` of a forward request."""
    await read_body(request, settings)
    form = await request.form()
    part = form.get("image")
    if part is None or isinstance(part, str):
        raise BadRequest("multipart body needs a file field named 'image'")
    data = await part.read()
    if not data:
        raise BadRequest("the 'image' field is empty")
    return data


def top_k_header(request: Request) -> int | None:
    """``X-Top-K``: how many classes to return, most probable first (all when absent)."""
    return top_k_of(request.headers.get("x-top-k"))
