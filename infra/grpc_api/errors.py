"""What every RPC of both gRPC services shares: the API key (``x-api-key`` metadata, checked as
``common/web/guard.py`` checks the header), the request id (``x-request-id`` metadata or a new
one) and how errors become status codes, with the REST answer's detail as the message."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from common import context
from common.errors import ServiceError
from common.monitoring import REQUEST_ID
from common.web import guard

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
         403: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
         405: grpc.StatusCode.UNIMPLEMENTED, 409: grpc.StatusCode.FAILED_PRECONDITION,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}


def code_of(status: int, detail: str = "", exc: BaseException | None = None) -> grpc.StatusCode:
    """The status code of an HTTP status; a 409 for a taken name is ALREADY_EXISTS."""
    if status == 409 and (getattr(exc, "exists", False) or detail.endswith("already exists")):
        return grpc.StatusCode.ALREADY_EXISTS
    return CODES.get(status, grpc.StatusCode.INTERNAL)


def metadata_of(grpc_context: grpc.ServicerContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in grpc_context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key.lower()] = f"{out[key]}, {value}" if key in out else value
    return out


def _begin(grpc_context: grpc.ServicerContext) -> Any:
    metadata = metadata_of(grpc_context)
    guard.check_api_key(context.settings(), "grpc", metadata.get("x-api-key", "").encode())
    return REQUEST_ID.set(guard.request_id(None, metadata.get("x-request-id")))


def _abort(grpc_context: grpc.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, ServiceError):
        if exc.status >= 500:
            guard.log.error("rpc failed: %s: %s", exc.error, exc.detail)
        grpc_context.abort(code_of(exc.status, exc.detail, exc), exc.detail)
    status, body = guard.unexpected_reply(exc)
    grpc_context.abort(code_of(status), body["detail"])


def guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an RPC (unary or server-streaming) with the checks and the error mapping."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def streaming(self: Any, request: Any, grpc_context: grpc.ServicerContext) -> Iterator[Any]:
            token = None
            try:
                token = _begin(grpc_context)
                yield from method(self, request, grpc_context)
            except Exception as exc:
                _abort(grpc_context, exc)
            finally:
                if token is not None:
                    REQUEST_ID.reset(token)

        return streaming

    @functools.wraps(method)
    def unary(self: Any, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        token = None
        try:
            token = _begin(grpc_context)
            return method(self, request, grpc_context)
        except Exception as exc:
            _abort(grpc_context, exc)
        finally:
            if token is not None:
                REQUEST_ID.reset(token)

    return unary

