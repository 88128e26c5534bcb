"""Reading request bodies: size-checked, by content type, with errors that say what to fix."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request

from common.errors import BadRequest, PayloadTooLarge
from common.payloads import parse_json
from common.settings import Settings


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, settings: Settings) -> bytes:
    body = await request.body()
    if len(body) > settings.max_body_bytes:
        raise PayloadTooLarge(
            f"the body has {len(body)} bytes; the limit is {settings.max_body_bytes}"
        )
    return body


async def read_json(request: Request, settings: Settings) -> Any:
    kind = media_type(request)
    if kind.startswith("image/"):
        raise BadRequest(
            f"wrong content type {kind!r}: send an image as multipart/form-data in a field named "
            "'image' (curl -F image=@file.png)"
        )
    if kind not in ("application/json", ""):
        raise BadRequest(f"wrong content type {kind!r}; send application/json")
    return parse_json(await read_body(request, settings))


ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-zip")
ZIP_MAGIC = b"PK\x03\x04"


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
    if kind in ZIP_TYPES:
        return "zip", body
    if kind == "text/csv":
        return "csv", body
    if kind in ("application/json", ""):
        return "json", body
    raise BadRequest(
        f"wrong content type {kind!r}; send application/json, text/csv, application/zip or "
        "multipart/form-data"
    )


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
    raw = request.headers.get("x-top-k")
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,6}", raw.strip()) or int(raw) < 1:
        raise BadRequest(f"header X-Top-K must be a positive integer, not {raw[:20]!r}")
    return int(raw)
