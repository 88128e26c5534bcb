"""API Gateway proxy events answered without a web framework, for the hot serving routes.

FastAPI + Mangum remain the handler of record for every route. A :class:`LambdaRoute` answers
only the requests it mirrors exactly (one method and path, its query parameters present once,
the content types its endpoint reads, no CORS) and hands every other event, unchanged, to the
Mangum-wrapped FastAPI app, which it imports on first use. What it saves is importing FastAPI,
Starlette, pydantic's OpenAPI models and Mangum on a cold start (~100-200 ms; bench/README.md).

The event parsing and response shapes follow Mangum's API Gateway handlers (REST v1 proxy events,
HTTP API v1.0 and v2.0 payloads); tests/functions/test_lambda_fast_path.py sends the same events
through both paths and requires identical answers. Whatever it could read differently goes to the
framework: non-ASCII header values or raw query strings (Starlette decodes them as latin-1), bodies
that are not text, events of another shape, and any request when the stores cannot be built. (A
few malformed events that API Gateway never sends, e.g. a Host header with a non-numeric port,
make Mangum raise; the direct path answers them.)
"""

from __future__ import annotations

import base64
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from common import context
from common.errors import ServiceError
from common.monitoring import REQUEST_ID
from common.payloads import media_type_of
from common.settings import Settings
from common.web import rules

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class HttpRequest:
    """The parts of an API Gateway request a route reads; header names are lower-case."""

    payload_version: str  # "1.0" (REST API, HTTP API 1.0) or "2.0" (HTTP API 2.0)
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def media_type(self) -> str:
        return media_type_of(self.headers.get("content-type", ""))

    def one(self, name: str) -> str | None:
        """The query parameter ``name`` when it is given exactly once."""
        values = self.query.get(name)
        return values[0] if values is not None and len(values) == 1 else None

    def header_bytes(self, name: str) -> bytes:
        return self.headers.get(name, "").encode()


def parse_event(event: Any) -> HttpRequest | None:
    """The request in an API Gateway proxy event, or None for any other event shape."""
    if not isinstance(event, dict) or not isinstance(event.get("requestContext"), dict):
        return None
    request_context = event["requestContext"]
    if "elb" in request_context:
        return None
    try:
        if event.get("version") == "2.0":
            headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
            if event.get("cookies"):
                headers["cookie"] = "; ".join(event["cookies"])
            http = request_context["http"]
            method, path = http["method"], http["path"]
            raw_query = event.get("rawQueryString") or ""
            if not raw_query.isascii():
                return None
            query = parse_qs(raw_query, keep_blank_values=True)
            version = "2.0"
        elif "version" in event or "resource" in event:
            headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
            for key, values in (event.get("multiValueHeaders") or {}).items():
                headers[key.lower()] = ", ".join(values) if isinstance(values, list) else ""
            method, path = event["httpMethod"], event["path"]
            multi = event.get("multiValueQueryStringParameters") or {
                k: [v] for k, v in (event.get("queryStringParameters") or {}).items()
            }
            query = {k: [str(v) for v in (vs if isinstance(vs, list) else [vs])]
                     for k, vs in multi.items()}
            version = "1.0"
        else:
            return None
        if not all(k.isascii() and v.isascii() for k, v in headers.items()):
            return None  # Starlette reads header bytes as latin-1; let it, to answer alike
        body = event.get("body") or b""
        if not isinstance(body, str | bytes):
            return None
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body)
        elif isinstance(body, str):
            body = body.encode()
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # the framework path answers (or rejects) what we cannot read
    return HttpRequest(version, str(method), unquote(path) if path else "/", query, headers, body)


def framework_side(module: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for a handler module: ``router`` and ``app`` come from
    ``module`` (the route's FastAPI side), imported only when someone asks for them."""

    def __getattr__(name: str) -> Any:
        if name in ("router", "app"):
            return getattr(importlib.import_module(module), name)
        raise AttributeError(f"{module!r} serves router and app, not {name!r}")

    return __getattr__


def to_response(payload_version: str, status: int, body: bytes) -> dict[str, Any]:
    """A JSON answer in the shape Mangum gives API Gateway for the same response."""
    headers = {"content-length": str(len(body)), "content-type": "application/json"}
    text = body.decode()
    if payload_version == "2.0":
        return {"statusCode": status, "body": text, "headers": headers, "isBase64Encoded": False}
    return {"statusCode": status, "headers": headers, "multiValueHeaders": {}, "body": text,
            "isBase64Encoded": False}


class LambdaRoute:
    """The Lambda entry point of one route: answers ``method path`` requests that ``accepts``
    takes with ``endpoint(request, settings)`` and sends every other event to ``fallback``
    (``"module:attribute"``, the Mangum handler of the route's FastAPI app).

    ``endpoint`` returns the JSON body of a 200 answer or raises a ``ServiceError``; ``query``
    names the parameters that must be present once (otherwise FastAPI reports the problem).
    """

    def __init__(
        self,
        method: str,
        path: str,
        endpoint: Callable[[HttpRequest, Settings], Any],
        fallback: str,
        query: tuple[str, ...] = (),
        accepts: Callable[[HttpRequest], bool] = lambda _: True,
    ) -> None:
        self.method, self.path, self.endpoint = method, path, endpoint
        self.query, self.accepts = query, accepts
        self._fallback_name = fallback
        self._fallback: Handler | None = None
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            # Lambda init (also what SnapStart snapshots): load MLFN_PRELOAD_MODELS now.
            context.warm_up()

    def fallback(self) -> Handler:
        if self._fallback is None:
            module, _, attribute = self._fallback_name.partition(":")
            self._fallback = getattr(importlib.import_module(module), attribute)
        return self._fallback

    def handles(self, request: HttpRequest, settings: Settings) -> bool:
        return (
            request.method == self.method
            and request.path == self.path
            and all(request.one(name) is not None for name in self.query)
            and not (settings.cors_origins and "origin" in request.headers)
            and self.accepts(request)
        )

    def __call__(self, event: dict[str, Any], lambda_context: Any) -> dict[str, Any]:
        request = parse_event(event)
        try:
            settings = context.backends().settings
        except Exception:  # a store that cannot be reached: the framework path answers the 500
            return self.fallback()(event, lambda_context)
        if request is None or not self.handles(request, settings):
            return self.fallback()(event, lambda_context)
        token = REQUEST_ID.set(rules.request_id(lambda_context, request.header_bytes("x-request-id")))
        try:
            rules.check_api_key(settings, request.path, request.header_bytes("x-api-key"))
            rules.check_declared_length(settings, request.header_bytes("content-length"))
            status, payload = 200, rules.dumps(self.endpoint(request, settings))
        except ServiceError as exc:
            status, body = rules.service_error_reply(exc)
            payload = rules.dumps(body)
        except Exception as exc:  # answered like the framework path: JSON, no stack trace
            status, body = rules.unexpected_reply(exc)
            payload = rules.dumps(body)
        finally:
            REQUEST_ID.reset(token)
        return to_response(request.payload_version, status, payload)
