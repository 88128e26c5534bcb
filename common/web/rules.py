"""What every route enforces, without a web framework: API key, body limit, request id, and how
errors are answered. The FastAPI middleware (`common.web.app.Guard`) and the direct Lambda
adapter (`common.web.lambda_http`) both apply these, so the two answer alike."""

from __future__ import annotations

import hmac
import logging
import uuid
from typing import Any

import orjson

from common.errors import PayloadTooLarge, ServiceError, Unauthorized
from common.settings import Settings

log = logging.getLogger("mlfn")

PUBLIC_PATHS = frozenset({"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(error: str, detail: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail}


def check_api_key(settings: Settings, path: str, given: bytes) -> None:
    """Raise ``Unauthorized`` when an API key is configured and ``given`` is not it."""
    if (
        settings.api_key
        and path not in PUBLIC_PATHS
        and not hmac.compare_digest(given, settings.api_key.encode())
    ):
        raise Unauthorized("missing or wrong x-api-key header")


def check_declared_length(settings: Settings, content_length: bytes) -> None:
    """Refuse a body by its Content-Length header, before reading it."""
    if content_length.isdigit() and int(content_length) > settings.max_body_bytes:
        raise PayloadTooLarge(
            f"the body has {int(content_length)} bytes; the limit is {settings.max_body_bytes}"
        )


def check_received_length(limit: int, received: int) -> None:
    """Refuse a body by what actually arrived (Content-Length may be absent)."""
    if received > limit:
        raise PayloadTooLarge(f"the body has more than {limit} bytes; the limit is {limit}")


def request_id(lambda_context: Any, x_request_id: bytes) -> str:
    """The id that logs and metrics carry: Lambda's, the caller's X-Request-Id, or a new one."""
    return (
        getattr(lambda_context, "aws_request_id", None)
        or x_request_id.decode(errors="replace")
        or uuid.uuid4().hex
    )


def service_error_reply(exc: ServiceError) -> tuple[int, dict[str, Any]]:
    if exc.status >= 500:
        log.error("request failed: %s: %s", exc.error, exc.detail)
    return exc.status, error_body(exc.error, exc.detail)


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
