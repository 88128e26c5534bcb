"""API Gateway events in the shapes `sam local generate-event` produces, and a client that
invokes a real handler with them (v1 REST proxy and v2 HTTP API)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from infra.local.cli import lambda_context


def v1_event(
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    base64_body: bool = True,
) -> dict[str, Any]:
    headers = {"Accept": "*/*", "Host": "abc123.execute-api.us-east-1.amazonaws.com",
               "User-Agent": "curl/8.0", "X-Forwarded-Proto": "https", **(headers or {})}
    raw = body.encode() if isinstance(body, str) else body
    encoded = None
    if raw is not None:
        encoded = base64.b64encode(raw).decode() if base64_body else raw.decode()
    return {
        "body": encoded,
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "isBase64Encoded": bool(raw is not None and base64_body),
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "requestContext": {
            "accountId": "123456789012",
            "resourceId": "123456",
            "stage": "prod",
            "requestId": str(uuid.uuid4()),
            "requestTime": "09/Apr/2015:12:34:56 +0000",
            "requestTimeEpoch": 1428582896000,
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "curl/8.0", "apiKey": None},
            "path": f"/prod{path}",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "apiId": "1234567890",
            "protocol": "HTTP/1.1",
        },
    }


def v2_event(
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    base64_body: bool = False,
) -> dict[str, Any]:
    headers = {"accept": "*/*", "host": "abc123.execute-api.us-east-1.amazonaws.com",
               "user-agent": "curl/8.0", **{k.lower(): v for k, v in (headers or {}).items()}}
    raw = body.encode() if isinstance(body, str) else body
    encoded = None
    if raw is not None:
        encoded = base64.b64encode(raw).decode() if base64_body else raw.decode()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "cookies": [],
        "headers": headers,
        "queryStringParameters": query or None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api-id",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "curl/8.0"},
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": "12/Mar/2020:19:03:58 +0000",
            "timeEpoch": 1583348638390,
        },
        "body": encoded,
        "pathParameters": None,
        "isBase64Encoded": bool(raw is not None and base64_body),
        "stageVariables": None,
    }


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(handler: Any, event: dict[str, Any], name: str = "fn") -> Reply:
    out = handler(event, lambda_context(name))
    body = out.get("body") or ""
    raw = base64.b64decode(body) if out.get("isBase64Encoded") else body.encode()
    return Reply(out["statusCode"], {k.lower(): v for k, v in (out.get("headers") or {}).items()}, raw)


def invoke(
    handler: Any,
    version: str,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """Invoke ``handler`` with a v1 or v2 event; dict/list bodies are sent as JSON."""
    headers = dict(headers or {})
    if isinstance(body, dict | list):
        body = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    build = v1_event if version == "v1" else v2_event
    # Binary bodies arrive base64-encoded through API Gateway (v1 and v2 alike).
    return call(handler, build(method, path, query, body, headers,
                               base64_body=version == "v1" or isinstance(body, bytes)))


def multipart(fields: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body: field name -> (file name, content, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, (filename, content, ctype) in fields.items():
        parts.append(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n".encode() + content + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
