"""The HTTP adapter: one FastAPI app factory used by every handler and by the local server.

Handlers only parse and shape; this module maps domain errors to the documented statuses and
enforces what every route shares (API key, body size limit, JSON errors, CORS).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from common.errors import ServiceError
from common.monitoring import REQUEST_ID
from common.settings import Settings
from common.web import rules

log = logging.getLogger("mlfn")

# A path parameter naming an experiment: ids are positive 64-bit integers.
ExperimentId = Annotated[int, Path(ge=1, le=2**63 - 1, description="experiment id")]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(content=rules.dumps(body), status_code=status, media_type="application/json")


def error_response(status: int, error: str, detail: Any,
                   headers: dict[str, str] | None = None) -> Response:
    response = json_response(rules.error_body(error, detail), status)
    if headers:
        response.headers.update(headers)
    return response


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "missing" and len(loc) == 2 and loc[0] == "query":
            parts.append(f"query parameter {loc[1]!r} is required (add ?{loc[1]}=...)")
            continue
        parts.append(f"{'.'.join(loc)}: {err.get('msg')}")
    return "; ".join(parts)


def _methods_for(request: Request) -> list[str]:
    """Every method some route of the app answers on this path (Starlette's 405 names only the
    first route whose path matched); ``create_app`` records the routes' paths and methods."""
    found: set[str] = set()
    for pattern, methods in getattr(request.app.state, "route_methods", ()):
        if pattern.match(request.url.path):
            found.update(methods)
    found.discard("HEAD")
    return sorted(found)


class Guard:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the forward path): API key, body
    size limit before parsing, and the request id that logs and metrics carry
    (`common.web.rules`, shared with the direct Lambda adapter)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from common import context

        current = context.backends().settings
        headers = dict(scope.get("headers") or ())
        try:
            rules.check_api_key(current, scope["path"], headers.get(b"x-api-key", b""))
            rules.check_declared_length(current, headers.get(b"content-length", b""))
        except ServiceError as exc:
            reply = error_response(exc.status, exc.error, exc.detail)
            await reply(scope, receive, send)
            return
        limit = current.max_body_bytes
        received = 0

        async def bounded_receive() -> Any:
            # Content-Length can be absent (chunked uploads): count what actually arrives.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                rules.check_received_length(limit, received)
            return message

        token = REQUEST_ID.set(
            rules.request_id(scope.get("aws.context"), headers.get(b"x-request-id", b""))
        )
        try:
            await self.app(scope, bounded_receive, send)
        finally:
            REQUEST_ID.reset(token)


def install(app: FastAPI, settings: Settings) -> FastAPI:
    """Add the shared error handlers and middleware to ``app``.

    The API key and body limit are read per request from the process settings, so they follow
    the environment the process was configured with; CORS is fixed when the app is built.
    """

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> Response:
        status, body = rules.service_error_reply(exc)
        return json_response(body, status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "bad request", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        names = {404: "not found", 405: "method not allowed"}
        detail: Any = exc.detail
        allowed = (exc.headers or {}).get("Allow")
        if exc.status_code == 405:
            allowed = ", ".join(_methods_for(request)) or allowed
            detail = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        elif exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs"
        return error_response(exc.status_code, names.get(exc.status_code, "error"), detail,
                              headers={"Allow": allowed} if allowed else None)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        status, body = rules.unexpected_reply(exc)
        return json_response(body, status)

    app.add_middleware(Guard)

    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return app


def create_app(routers: Iterable[APIRouter], settings: Settings | None = None,
               app: FastAPI | None = None) -> FastAPI:
    settings = settings or Settings()
    if app is None:
        app = FastAPI(title="mlfn", docs_url=None, redoc_url=None, openapi_url=None)
    table = list(getattr(app.state, "route_methods", ()))
    for router in routers:
        app.include_router(router)
        table.extend((r.path_regex, set(r.methods)) for r in router.routes
                     if isinstance(r, APIRoute) and r.methods)
    app.state.route_methods = table
    from common.web.docs import document_errors

    document_errors(app)
    return install(app, settings)


def lambda_handler(app: FastAPI) -> Any:
    """The Lambda entry point for ``app``: API Gateway REST (v1) and HTTP API (v2) events."""
    from mangum import Mangum

    return Mangum(app, lifespan="off", api_gateway_base_path="/")
