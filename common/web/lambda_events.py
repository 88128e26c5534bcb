"""The Lambda adapter: API Gateway proxy events in, the same events' responses out.

``lambda_entry(routes)`` is every HTTP function's entry point (``functions/<name>/handler.py``):
it turns a REST API (v1) or HTTP API (v1.0, v2.0) proxy event into a :class:`Request`, answers
it with ``common.web.guard.dispatch`` and shapes the reply as API Gateway expects it (the
response shapes Mangum gives for the same events). No web framework is imported, so a cold start
pays for none.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from common import context
from common.web.guard import dispatch, dumps, error_body
from common.web.request import Reply, Request, parse_query
from common.web.routing import Route, RouteTable

# Bodies of these types go back as text; anything else is base64 (binary media types).
TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/xml",
              "application/vnd.api+json", "application/vnd.oai.openapi")


def parse_event(event: Any, lambda_context: Any = None) -> tuple[str, Request] | None:
    """(payload version, request) of an API Gateway proxy event; None for any other event."""
    if not isinstance(event, dict) or not isinstance(event.get("requestContext"), dict):
        return None
    if "elb" in event["requestContext"]:
        return None
    try:
        if event.get("version") == "2.0":
            headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
            if event.get("cookies"):
                headers["cookie"] = "; ".join(event["cookies"])
            http = event["requestContext"]["http"]
            method, path = http["method"], http["path"]
            query = parse_query((event.get("rawQueryString") or "").encode())
            version = "2.0"
        elif "version" in event or "resource" in event or "httpMethod" in event:
            headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
            for key, values in (event.get("multiValueHeaders") or {}).items():
                if isinstance(values, list) and values:
                    headers[key.lower()] = ", ".join(values)
            method, path = event["httpMethod"], event["path"]
            multi = event.get("multiValueQueryStringParameters") or {
                k: [v] for k, v in (event.get("queryStringParameters") or {}).items()
            }
            query = {k: [str(v) for v in (vs if isinstance(vs, list) else [vs])]
                     for k, vs in multi.items()}
            version = "1.0"
        else:
            return None
        body = event.get("body") or b""
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body)
        elif isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes):
            return None
        headers = {str(k): str(v) for k, v in headers.items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    request = Request(str(method).upper(), unquote(path) if path else "/", query, headers, body,
                      context=lambda_context)
    return version, request


def to_response(payload_version: str, reply: Reply) -> dict[str, Any]:
    """The API Gateway response for ``reply``: text bodies as text, others base64-encoded."""
    reply.take_body()  # a Lambda answer is one payload
    headers = reply.all_headers()
    kind = headers.get("content-type", "")
    binary = bool(reply.body) and not any(t in kind for t in TEXT_TYPES)
    if binary:
        body = base64.b64encode(reply.body).decode()
    else:
        try:
            body = reply.body.decode()
        except UnicodeDecodeError:
            body, binary = base64.b64encode(reply.body).decode(), True
    if payload_version == "2.0":
        return {"statusCode": reply.status, "body": body, "headers": headers,
                "isBase64Encoded": binary}
    return {"statusCode": reply.status, "headers": headers, "multiValueHeaders": {}, "body": body,
            "isBase64Encoded": binary}


class LambdaEntry:
    """The Lambda handler of one function's routes."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.table = RouteTable(routes)
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            # Lambda init (also what SnapStart snapshots): load MLFN_PRELOAD_MODELS now.
            context.warm_up()

    def __call__(self, event: dict[str, Any], lambda_context: Any) -> dict[str, Any]:
        parsed = parse_event(event, lambda_context)
        if parsed is None:
            detail = "this function answers API Gateway proxy events (REST API or HTTP API)"
            return to_response("1.0", Reply(400, dumps(error_body("bad request", detail))))
        version, request = parsed
        try:
            reply = dispatch(self.table, request, context.settings())
        finally:
            # Lambda freezes the process once the handler returns: write the call's metrics and
            # log lines now, not from a background thread that may never run again.
            context.flush_monitoring()
        return to_response(version, reply)


def lambda_entry(routes: Iterable[Route]) -> LambdaEntry:
    return LambdaEntry(routes)
