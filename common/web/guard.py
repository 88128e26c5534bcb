"""The one guarded call every transport makes: request id, API key, size limits, the route's
declared parameters, its endpoint, and how every error is answered.

``serve(route, request, settings)`` is called by the Lambda adapter (``lambda_events``), by the
FastAPI adapter (``fastapi_app``) and by later protocol adapters, so a request gets the same
answer, byte for byte, whichever way it arrived. No web framework is imported here.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import uuid
from dataclasses import replace
from typing import Any

import orjson

from common.errors import PayloadTooLarge, ServiceError, Unauthorized
from common.monitoring import REQUEST_ID
from common.settings import Settings
from common.web import cors
from common.web.request import Reply, Request
from common.web.routing import ErrorStyle, Route, RouteTable

log = logging.getLogger("mlfn")

PUBLIC_PATHS = frozenset({"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(error: str, detail: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail}


def json_reply(body: Any, status: int = 200) -> Reply:
    return Reply(status, dumps(body))


def check_api_key(settings: Settings, path: str, given: bytes) -> None:
    """Raise ``Unauthorized`` when an API key is configured and ``given`` is not it (a header
    sent twice arrives joined, ``k, k``, and is refused: which one was meant is ambiguous)."""
    if (
        settings.api_key
        and path not in PUBLIC_PATHS
        and not hmac.compare_digest(given, settings.api_key.encode())
    ):
        raise Unauthorized("missing or wrong x-api-key header")


def body_limit(route: Route, settings: Settings) -> int:
    """The most bytes a request body of ``route`` may have."""
    return settings.upload_max_bytes if route.streamed else settings.max_body_bytes


def check_declared_length(settings: Settings, content_length: bytes, limit: int | None = None) -> None:
    """Refuse a body by its Content-Length header, before reading it."""
    limit = settings.max_body_bytes if limit is None else limit
    if content_length.isdigit() and int(content_length) > limit:
        raise PayloadTooLarge(f"the body has {int(content_length)} bytes; the limit is {limit}")


def check_received_length(limit: int, received: int) -> None:
    """Refuse a body by what actually arrived (Content-Length may be absent)."""
    if received > limit:
        raise PayloadTooLarge(f"the body has more than {limit} bytes; the limit is {limit}")


def admit(route: Route, request: Request, settings: Settings) -> None:
    """What is checked before a body is read or work is queued: the API key and the declared
    length. ``serve`` checks them again (cheap), so an adapter may skip this."""
    if not route.public:
        check_api_key(settings, request.path, request.header_bytes("x-api-key"))
    check_declared_length(settings, request.header_bytes("content-length"),
                          body_limit(route, settings))


# New request ids: a random prefix per process and a counter (unique without a syscall each).
_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count(1)


def request_id(lambda_context: Any, x_request_id: str | None) -> str:
    """The id that logs, metrics and feedback carry: the caller's X-Request-Id (printable, at
    most 200 characters: a retry that sends it again is the same request, which a canary
    answers on the same side), else Lambda's, else a new one."""
    if x_request_id and len(x_request_id) <= 200 and x_request_id.isascii() and x_request_id.isprintable():
        return x_request_id
    return getattr(lambda_context, "aws_request_id", None) or f"{_ID_PREFIX}{next(_ids):016x}"


def error_reply(exc: ServiceError, style: ErrorStyle = "mlfn") -> Reply:
    """The answer to a domain error: ``{"error", "detail"}`` with its status, or for the Open
    Inference Protocol routes ``{"error": "..."}`` (a model failing on valid input is then a
    400 invalid request, as the protocol has no 403)."""
    if exc.status >= 500:
        log.error("request failed: %s: %s", exc.error, exc.detail)
    if style == "oip":
        status = 400 if exc.status == 403 else exc.status
        text = exc.detail if exc.status != 403 else f"the model failed on this input: {exc.detail}"
        return Reply(status, dumps({"error": text}), headers=exc.headers())
    return Reply(exc.status, dumps(error_body(exc.error, exc.detail)), headers=exc.headers())


# Exceptions of the storage clients that mean "could not reach the store" (named, so that this
# module imports none of boto3 or psycopg): botocore's connection and timeout errors, and
# psycopg's own OperationalError (its subclasses, e.g. DiskFull, are not outages).
UNREACHABLE = {("botocore.exceptions", "EndpointConnectionError"),
               ("botocore.exceptions", "ConnectTimeoutError"),
               ("botocore.exceptions", "ReadTimeoutError"),
               ("psycopg", "OperationalError")}


def is_unreachable(exc: BaseException) -> bool:
    kind = type(exc)
    return (isinstance(exc, ConnectionError | TimeoutError)
            or (kind.__module__, kind.__name__) in UNREACHABLE
            or any((c.__module__, c.__name__) in UNREACHABLE
                   for c in kind.__mro__[1:] if c.__module__.startswith("botocore")))


def unexpected_reply(exc: BaseException) -> tuple[int, dict[str, Any]]:
    log.error("unhandled error", exc_info=exc)
    if is_unreachable(exc):
        return 503, error_body(
            "service unavailable",
            f"{type(exc).__name__}: a store the request needs did not answer; retry later (a "
            "write may have been applied before the failure: check before repeating it)",
        )
    return 500, error_body("internal error", f"{type(exc).__name__}; see the service log")


def answer(route: Route, request: Request) -> Reply:
    """The route's answer to a request that passed the checks (ServiceError when refused)."""
    result = route.endpoint(request, **route.arguments(request))
    return result if isinstance(result, Reply) else Reply(route.status, dumps(result))


def serve(route: Route, request: Request, settings: Settings, admitted: bool = False) -> Reply:
    """Answer ``request`` with ``route``: checks, parameters, endpoint, error mapping
    (``admitted``: the adapter has made the ``admit`` checks already)."""
    rid = request_id(request.context, request.headers.get("x-request-id"))
    token = REQUEST_ID.set(rid)
    try:
        if not admitted:
            admit(route, request, settings)
        check_received_length(body_limit(route, settings), len(request.body))
        if route.idempotent and "idempotency-key" in request.headers:
            from common import context
            from common.idempotency import once

            reply = once(request, settings, context.backends(), lambda: answer(route, request))
        else:
            reply = answer(route, request)
    except ServiceError as exc:
        reply = error_reply(exc, route.error_style)
    except Exception as exc:  # answered as JSON, without a stack trace
        status, body = unexpected_reply(exc)
        reply = Reply(status, dumps(body if route.error_style == "mlfn" else {"error": body["detail"]}))
    finally:
        REQUEST_ID.reset(token)
    # The id to quote in feedback (POST /feedback) and to send again on a retry.
    reply.headers.setdefault("x-request-id", rid)
    if request.method == "HEAD":
        reply.drop_body()
    return reply


def dispatch(table: RouteTable, request: Request, settings: Settings) -> Reply:
    """Route ``request`` through ``table`` and serve it, CORS included: what an adapter without
    its own router (Lambda) calls."""
    preflight = cors.preflight(settings.cors_origins, request)
    if preflight is not None:
        return preflight
    try:
        route, params = table.match(request.method, request.path)
    except ServiceError as exc:
        reply = error_reply(exc, table.error_style(request.path))
    else:
        reply = serve(route, replace(request, path_params=params) if params else request, settings)
    cors.decorate(settings.cors_origins, request.headers.get("origin"), reply.headers)
    return reply
