"""The FastAPI adapter: every route of the service registered with FastAPI, which only routes
and documents (``/docs``); each request is turned into a :class:`Request`, answered by
``common.web.guard.serve`` (model work in the bounded pool) and turned back into a response.

This is the local server's and docker-compose's HTTP side. The Lambda functions answer the same
routes through ``common.web.lambda_events`` without importing this module.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter, FastAPI
from fastapi import Request as StarletteRequest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse

from common import context
from common.errors import ServiceError
from common.settings import Settings
from common.web import cors, guard
from common.web.pool import WorkPool, default_threads
from common.web.request import Reply, Request, parse_query
from common.web.routing import Route, RouteTable

STREAM_BLOCK = 1024 * 1024


def _blocks(stream: BinaryIO) -> Iterator[bytes]:
    while block := stream.read(STREAM_BLOCK):
        yield block


class FileStream(StreamingResponse):
    """An open file sent block by block, closed when the response ends however it ends (sent,
    or the client gone: Starlette then stops iterating without closing the iterator)."""

    def __init__(self, stream: BinaryIO, **kwargs: Any) -> None:
        super().__init__(_blocks(stream), **kwargs)
        self.file = stream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.file.close()


def to_response(reply: Reply) -> Response:
    if reply.stream is not None:  # sent as read, from Starlette's thread pool: bounded memory
        headers = {**reply.headers, "content-length": str(reply.length())}
        return FileStream(reply.stream, status_code=reply.status, headers=headers,
                          media_type=reply.content_type)
    return Response(content=reply.body, status_code=reply.status, headers=reply.headers,
                    media_type=reply.content_type)


def request_head(request: StarletteRequest) -> Request:
    """The request without its body: headers (repeated ones joined), query, path parameters."""
    scope = request.scope
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("utf-8", "replace")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    query = parse_query(scope["query_string"])
    return Request(scope["method"], scope["path"], query, headers,
                   path_params={k: str(v) for k, v in scope.get("path_params", {}).items()},
                   context=scope.get("aws.context"))


async def read_body(request: StarletteRequest, limit: int) -> bytes:
    """The body, counted as it arrives (Content-Length may be absent or wrong)."""
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        guard.check_received_length(limit, received)
        chunks.append(chunk)
    return b"".join(chunks)


async def spool_body(request: StarletteRequest, limit: int, directory: Path) -> str:
    """A streamed route's body written to a new file in ``directory`` as it arrives (bounded
    memory), counted against ``limit``; the caller removes the file."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix="body-")
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                received += len(chunk)
                guard.check_received_length(limit, received)
                out.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return name


def endpoint_for(route: Route, pool: WorkPool) -> Any:
    """The FastAPI endpoint of ``route``: translate, admit, run, translate back."""

    async def endpoint(request: StarletteRequest) -> Response:
        settings = context.settings()
        head = request_head(request)
        reserved = False
        spooled: str | None = None
        try:
            guard.admit(route, head, settings)
            if route.work == "pool":
                pool.reserve()
                reserved = True
            if route.streamed:
                body, spooled = b"", await spool_body(request, settings.upload_max_bytes,
                                                      settings.data_dir / "tmp")
            else:
                body = await read_body(request, settings.max_body_bytes)
        except ServiceError as exc:
            if reserved:
                pool.release()
            refused = guard.error_reply(exc, route.error_style)
            refused.headers["x-request-id"] = guard.request_id(head.context,
                                                               head.headers.get("x-request-id"))
            cors.decorate(settings.cors_origins, head.headers.get("origin"), refused.headers)
            return to_response(refused)
        except BaseException:  # the client went away mid-body: give its pool place back
            if reserved:
                pool.release()
            raise
        value = Request(head.method, head.path, head.query, head.headers, body, head.path_params,
                        head.context, spooled)
        try:
            if reserved:
                reply = await pool.run(guard.serve, route, value, settings, True)
            else:
                reply = guard.serve(route, value, settings, True)
        finally:
            if spooled is not None:
                Path(spooled).unlink(missing_ok=True)
        cors.decorate(settings.cors_origins, head.headers.get("origin"), reply.headers)
        return to_response(reply)

    endpoint.__name__ = route.endpoint.__name__
    return endpoint


IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "description": "a retry with the same key and request returns the first answer "
                                  "and writes nothing (kept 24 h)", "schema": {"type": "string"}}


def openapi_of(route: Route) -> dict[str, Any]:
    extra: dict[str, Any] = dict(route.openapi)
    parameters = [p.openapi() for p in route.params]
    if route.idempotent:
        parameters.append(IDEMPOTENCY_KEY)
    if parameters:
        extra["parameters"] = parameters
    return extra


def add_routes(router: APIRouter, routes: Iterable[Route], pool: WorkPool) -> None:
    """Register ``routes`` on ``router`` (an app's own router: FastAPI scans routes in order, and
    an included router would be scanned twice per request)."""
    for route in routes:
        doc = (route.endpoint.__doc__ or "").strip()
        router.add_api_route(
            route.path, endpoint_for(route, pool), methods=[route.method],
            status_code=route.status, tags=list(route.tags), summary=route.summary or None,
            description=doc, openapi_extra=openapi_of(route), response_class=Response,
        )
        if route.method == "GET":  # HEAD answers like GET, without the body
            router.add_api_route(route.path, endpoint_for(route, pool), methods=["HEAD"],
                                 include_in_schema=False, response_class=Response)


class Preflight:
    """Pure ASGI middleware answering CORS preflight requests (FastAPI would answer 405)."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.origins = settings.cors_origins

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS" and self.origins:
            reply = cors.preflight(self.origins, request_head(StarletteRequest(scope)))
            if reply is not None:
                await to_response(reply)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_errors(app: FastAPI, table: RouteTable, settings: Settings) -> None:
    """404 and 405 answered from the route table (the same words as on Lambda), anything
    unexpected as JSON."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: StarletteRequest, exc: StarletteHTTPException) -> Response:
        reply = guard.json_reply(guard.error_body("error", exc.detail), exc.status_code)
        if exc.status_code in (404, 405):
            try:
                table.match(request.method, request.url.path)
            except ServiceError as found:
                reply = guard.error_reply(found, table.error_style(request.url.path))
        cors.decorate(settings.cors_origins, request.headers.get("origin"), reply.headers)
        return to_response(reply)

    @app.exception_handler(Exception)
    async def unexpected(_: StarletteRequest, exc: Exception) -> Response:
        status, body = guard.unexpected_reply(exc)
        return to_response(guard.json_reply(body, status))


def create_app(routes: Iterable[Route], settings: Settings | None = None,
               app: FastAPI | None = None, pool: WorkPool | None = None) -> FastAPI:
    """``app`` (a bare FastAPI app by default) with ``routes`` registered and the worker pool
    (``MLFN_WORK_THREADS``, ``MLFN_WORK_QUEUE``) in ``app.state.pool``."""
    settings = settings or context.settings()
    routes = list(routes)
    if app is None:
        app = FastAPI(title="mlfn", docs_url=None, redoc_url=None, openapi_url=None)
    if pool is None:
        pool = WorkPool(default_threads(settings.work_threads), settings.work_queue)
    app.router.redirect_slashes = False  # /forward/ is a 404 here as on Lambda, not a 307
    app.state.pool = pool
    app.state.routes = routes
    add_routes(app.router, routes, pool)
    install_errors(app, RouteTable(routes), settings)
    from common.web.docs import document_errors

    document_errors(app)
    if settings.cors_origins:
        app.add_middleware(Preflight, settings=settings)
    return app
