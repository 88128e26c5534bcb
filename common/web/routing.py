"""Routes as data: method, path template, declared parameters and one framework-free endpoint.

Every route of the service is a :class:`Route` in its function's ``routes.py``. The Lambda
adapter matches events against a :class:`RouteTable` of its function's routes, the FastAPI
adapter registers each route with FastAPI (which then only routes and documents), and both call
``common.web.guard.serve``: the declared parameters are parsed and checked there, once, with the
same messages for every transport.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from common.errors import BadRequest, NotFound, ServiceError
from common.web.request import Request

MAX_ID = 2**63 - 1
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


class MethodNotAllowed(ServiceError):
    status = 405
    error = "method not allowed"

    def __init__(self, detail: str, allowed: Sequence[str]) -> None:
        super().__init__(detail)
        self.allowed = ", ".join(allowed)

    def headers(self) -> dict[str, str]:
        return {"allow": self.allowed}


@dataclass(frozen=True)
class Param:
    """A query or path parameter: parsed to ``kind`` (str, bool, or int within [minimum,
    maximum])."""

    name: str
    kind: type = str
    required: bool = True
    description: str = ""
    where: Literal["query", "path"] = "query"
    minimum: int | None = None
    maximum: int | None = None
    default: Any = None

    def parse(self, raw: str) -> Any:
        if self.kind is str:
            return raw
        what = f"{self.where} parameter {self.name!r}"
        if self.kind is bool:
            if raw.lower() not in BOOLEANS:
                raise BadRequest(f"{what} must be true or false, not {raw[:40]!r}")
            return BOOLEANS[raw.lower()]
        if not re.fullmatch(r"-?[0-9]{1,19}", raw):
            raise BadRequest(f"{what} must be an integer, not {raw[:40]!r}")
        value = int(raw)
        low = self.minimum if self.minimum is not None else -MAX_ID - 1
        high = self.maximum if self.maximum is not None else MAX_ID
        if not low <= value <= high:
            raise BadRequest(f"{what} must be between {low} and {high}, not {value}")
        return value

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": {int: "integer", bool: "boolean"}.get(self.kind, "string")}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.default is not None:
            schema["default"] = self.default
        return {"name": self.name, "in": self.where, "required": self.required or self.where == "path",
                "description": self.description, "schema": schema}


def experiment_id(description: str = "experiment id") -> Param:
    """The path parameter naming an experiment: a positive 64-bit integer."""
    return Param("experiment_id", int, where="path", minimum=1, maximum=MAX_ID,
                 description=description)


def model_query(required: bool = True) -> Param:
    description = "model name" if required else "if given, the experiment must be one of this model's"
    return Param("model", str, required=required, description=description)


Endpoint = Callable[..., Any]
# Where a route runs on a server: "inline" on the event loop (cheap, no I/O), "pool" in the
# bounded worker pool (model work, body parsing, store I/O).
Work = Literal["inline", "pool"]
# How errors are answered: the service's {"error", "detail"}, or the Open Inference Protocol's
# {"error": "..."}.
ErrorStyle = Literal["mlfn", "oip"]


@dataclass(frozen=True)
class Route:
    """``endpoint(request, **params)`` returns the JSON body of a ``status`` answer, or a Reply."""

    method: str
    path: str
    endpoint: Endpoint
    params: tuple[Param, ...] = ()
    status: int = 200
    work: Work = "pool"
    public: bool = False  # answered without the API key (health checks)
    error_style: ErrorStyle = "mlfn"
    # A write that honours an Idempotency-Key header (common/idempotency.py).
    idempotent: bool = False
    # A body of up to MLFN_UPLOAD_MAX_BYTES (not MLFN_MAX_BODY_BYTES) that a server streams to a
    # file (Request.body_path) with bounded memory: the embedded upload URL.
    streamed: bool = False
    tags: tuple[str, ...] = ()
    # OpenAPI only: the request body and extra answers /docs shows.
    openapi: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        doc = (self.endpoint.__doc__ or "").strip()
        return doc.split("\n\n")[0].replace("\n", " ") if doc else ""

    def arguments(self, request: Request) -> dict[str, Any]:
        """The declared parameters of ``request``, parsed; BadRequest names the one at fault."""
        out: dict[str, Any] = {}
        # A misspelt parameter is not silently ignored; public routes (health checks) take
        # what monitors add (a cache-busting ?t=...).
        if self.error_style == "mlfn" and not self.public:
            declared = [p.name for p in self.params if p.where == "query"]
            for name in request.query:
                if name not in declared:
                    raise BadRequest(_unknown_query(name, declared))
        for param in self.params:
            if param.where == "path":
                raw = request.path_params.get(param.name)
                out[param.name] = None if raw is None else param.parse(raw)
                continue
            values = request.query.get(param.name)
            if not values:
                if param.required:
                    raise BadRequest(
                        f"query parameter {param.name!r} is required (add ?{param.name}=...)")
                out[param.name] = param.default
            elif len(values) > 1:
                raise BadRequest(f"query parameter {param.name!r} is given {len(values)} times; "
                                 "give it once")
            else:
                out[param.name] = param.parse(values[0])
        return out


def _unknown_query(name: str, declared: list[str]) -> str:
    import difflib

    shown = repr(name[:40])
    if not declared:
        return f"unknown query parameter {shown}: this route takes none"
    close = difflib.get_close_matches(name, declared, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"unknown query parameter {shown}; this route takes "
            f"{', '.join(repr(d) for d in declared)}{hint}")


def _compile(template: str) -> re.Pattern[str]:
    """``/artifacts/{experiment_id}/{name:path}`` -> a regex with one group per parameter."""
    pattern, pos = "", 0
    for m in re.finditer(r"\{([a-z_]+)(:path)?\}", template):
        pattern += re.escape(template[pos:m.start()])
        pattern += f"(?P<{m.group(1)}>{'.+' if m.group(2) else '[^/]+'})"
        pos = m.end()
    return re.compile(pattern + re.escape(template[pos:]) + "$")


class RouteTable:
    """Find the route of a request; 404 and 405 (naming every method of the path) otherwise.

    ``HEAD`` is answered by the ``GET`` route of the path, without a body."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._static: dict[str, list[Route]] = {}
        templated: dict[str, list[Route]] = {}
        for route in self.routes:
            group = templated if "{" in route.path else self._static
            group.setdefault(route.path, []).append(route)
        self._templated = [(_compile(path), group) for path, group in templated.items()]

    def candidates(self, path: str) -> tuple[list[Route], dict[str, str]]:
        """The routes whose path matches ``path`` (any method), with the path parameters."""
        found = self._static.get(path)
        if found:
            return found, {}
        for pattern, group in self._templated:
            m = pattern.match(path)
            if m:
                return group, m.groupdict()
        return [], {}

    def error_style(self, path: str) -> ErrorStyle:
        """How errors of a request that matches no route are answered: as the routes under the
        same first path segment answer theirs (``/v2/...``: the inference protocol's way)."""
        first = path.split("/", 2)[1] if path.count("/") else ""
        for route in self.routes:
            if route.path.split("/", 2)[1] == first:
                return route.error_style
        return "mlfn"

    def methods(self, path: str) -> list[str]:
        return sorted({r.method for r in self.candidates(path)[0]})

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        routes, params = self.candidates(path)
        if not routes:
            raise NotFound(f"no route {method} {path}; see /docs")
        wanted = "GET" if method == "HEAD" else method
        for route in routes:
            if route.method == wanted:
                return route, params
        allowed = sorted({r.method for r in routes})
        raise MethodNotAllowed(
            f"{method} is not allowed on {path}; use {', '.join(allowed)}", allowed)
