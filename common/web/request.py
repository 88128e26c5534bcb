"""The plain values every transport translates to and from: one HTTP request, one reply.

A Lambda event (``common.web.lambda_events``), a Starlette request (``common.web.fastapi_app``)
and, later, other protocol adapters build a :class:`Request`; every route answers it with a
:class:`Reply` (``common.web.guard.serve``). Nothing here imports a web framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import parse_qs

from common.payloads import media_type_of

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request. Header names are lower-case; a header sent more than once is joined
    with ", " (as HTTP defines and API Gateway does), so ``x-api-key: a`` twice reads ``a, a``."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    path_params: dict[str, str] = field(default_factory=dict)
    # The Lambda context object when there is one (its aws_request_id is the request id).
    context: Any = None
    # A streamed route's body (Route.streamed) spooled to this file by the HTTP adapter, which
    # removes it after the answer; None where the body is in ``body`` (Lambda, other routes).
    body_path: str | None = None

    @property
    def media_type(self) -> str:
        return media_type_of(self.headers.get("content-type", ""))

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def header_bytes(self, name: str) -> bytes:
        return self.headers.get(name, "").encode("latin-1", errors="replace")


@dataclass(slots=True)
class Reply:
    """One answer: status, body bytes, its content type and extra headers. A large body is a
    ``stream`` instead: an open file, sent block by block by a transport that streams
    (``fastapi_app``), read whole by one that cannot (``take_body``); whoever sends it closes
    it."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON
    headers: dict[str, str] = field(default_factory=dict)
    stream: BinaryIO | None = None

    def length(self) -> int:
        if self.stream is None:
            return len(self.body)
        here = self.stream.tell()
        size = self.stream.seek(0, 2)
        self.stream.seek(here)
        return size - here

    def take_body(self) -> bytes:
        """The body as bytes, a stream read (and closed) first."""
        if self.stream is not None:
            with self.stream:
                self.body, self.stream = self.stream.read(), None
        return self.body

    def drop_body(self) -> None:
        """No body (a HEAD answer), its length kept in the headers."""
        self.headers["content-length"] = str(self.length())
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self.body = b""

    def all_headers(self) -> dict[str, str]:
        """The headers as sent: content length and type first, then the extra ones."""
        out = {"content-length": str(self.length())}
        if self.content_type is not None:
            out["content-type"] = self.content_type
        out.update(self.headers)
        return out


def parse_query(raw: bytes) -> dict[str, list[str]]:
    """A raw query string as parameter -> values (``urllib.parse.parse_qs``, blanks kept), with
    a fast path for the plain ``model=iris`` kind that most requests carry."""
    if not raw:
        return {}
    text = raw.decode("utf-8", "replace")
    if "%" in text or "+" in text or ";" in text:
        return parse_qs(text, keep_blank_values=True)
    out: dict[str, list[str]] = {}
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            out.setdefault(name, []).append(value)
    return out
