"""CORS for every transport (``MLFN_CORS_ORIGINS``): preflight answers and the headers of the
others, with the semantics of Starlette's CORSMiddleware (any method, any header, no
credentials), so the local server and Lambda answer browsers alike."""

from __future__ import annotations

from functools import cache

from common.web.request import Reply, Request

ALLOW_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
MAX_AGE = "600"


@cache
def origins(setting: str) -> tuple[bool, frozenset[str]]:
    """(any origin allowed, the allowed origins) from the comma-separated setting."""
    listed = frozenset(o.strip() for o in setting.split(",") if o.strip())
    return "*" in listed, listed


def _allowed(setting: str, origin: str) -> bool:
    anyone, listed = origins(setting)
    return anyone or origin in listed


def preflight(setting: str, request: Request) -> Reply | None:
    """The answer to a CORS preflight request, or None if ``request`` is not one."""
    origin = request.headers.get("origin")
    if (not setting or request.method != "OPTIONS" or origin is None
            or "access-control-request-method" not in request.headers):
        return None
    if not _allowed(setting, origin):
        return Reply(400, b"Disallowed CORS origin", "text/plain; charset=utf-8",
                     {"vary": "Origin"})
    headers = {"access-control-allow-origin": "*" if origins(setting)[0] else origin,
               "access-control-allow-methods": ALLOW_METHODS,
               "access-control-max-age": MAX_AGE, "vary": "Origin"}
    requested = request.headers.get("access-control-request-headers")
    if requested:
        headers["access-control-allow-headers"] = requested
    return Reply(200, b"OK", "text/plain; charset=utf-8", headers)


def decorate(setting: str, origin: str | None, headers: dict[str, str]) -> None:
    """Add the CORS headers of a (non-preflight) answer to ``headers`` in place."""
    if not setting or origin is None:
        return
    anyone, _ = origins(setting)
    if anyone:
        headers["access-control-allow-origin"] = "*"
    elif _allowed(setting, origin):
        headers["access-control-allow-origin"] = origin
        headers["vary"] = "Origin"
    else:
        return
    headers["access-control-expose-headers"] = "x-request-id"
