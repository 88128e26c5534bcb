"""MLFN_PRESIGN_ENDPOINT_URL: presigned upload URLs are signed for the endpoint a client can
reach (docker-compose: the host's port, not ``http://moto:5000``), and work against the moto
server. moto does not check query signatures, so each URL is also checked here by an
independent SigV4 computation for the host the client sends: a URL signed for one host and
rewritten to another fails it."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import pytest
import requests

from common import context
from functions.models import handler as models
from functions.uploads import handler as uploads
from tests.apigw import invoke
from tests.conftest import AWS_ENV

MIB = 1024 * 1024


def signature_holds(url: str, method: str, headers: dict[str, str]) -> bool:
    """Whether ``url``'s X-Amz-Signature is the SigV4 query signature of ``method`` on it, as a
    client sends it (its Host is the URL's host and port), with the test credentials."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(query)
    signed = given["X-Amz-SignedHeaders"].split(";")
    sent = {"host": parts.netloc, **{k.lower(): v.strip() for k, v in headers.items()}}
    canonical = "\n".join([
        method, parts.path,
        "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                 for k, v in sorted(query) if k != "X-Amz-Signature"),
        "".join(f"{name}:{sent[name]}\n" for name in signed), ";".join(signed),
        "UNSIGNED-PAYLOAD"])
    scope = given["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", given["X-Amz-Date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{AWS_ENV['AWS_SECRET_ACCESS_KEY']}".encode()
    for step in scope.split("/"):
        key = hmac.new(key, step.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given["X-Amz-Signature"])


def announce(**query: str) -> dict[str, Any]:
    reply = invoke(uploads.handler, "v1", "POST", "/uploads", {"model": "wide", **query})
    assert reply.status == 201, reply.body
    return reply.json()


def test_presigned_urls_are_signed_for_the_public_endpoint(
        on_aws: Callable[[], None], aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    created = invoke(models.handler, "v1", "POST", "/models",
                     body={"name": "wide", "task": "classification", "target": "label"})
    assert created.status == 201, created.body
    internal = announce()  # no setting: signed for the service's own endpoint
    assert internal["url"].startswith(f"{aws}/")
    assert signature_holds(internal["url"], "PUT", internal["headers"])

    public = aws.replace("127.0.0.1", "localhost")  # the same server under another host name
    monkeypatch.setenv("MLFN_PRESIGN_ENDPOINT_URL", public)
    monkeypatch.setenv("MLFN_UPLOAD_MULTIPART_BYTES", str(5 * MIB))
    monkeypatch.setenv("MLFN_UPLOAD_PART_BYTES", str(5 * MIB))
    context.reset()
    single = announce()
    url, headers = single["url"], single["headers"]
    assert url.startswith(f"{public}/")
    assert signature_holds(url, "PUT", headers)
    # what rewriting the host after signing would give: S3 refuses it
    assert not signature_holds(internal["url"].replace(aws, public), "PUT", internal["headers"])
    assert not signature_holds(url.replace(public, aws), "PUT", headers)

    body = b"n,m,note,label\n1,2.25,x,a\n2,3.25,y,b\n"
    put = requests.put(url, data=body, headers=headers, timeout=30)
    assert put.status_code == 200, put.text
    got = invoke(uploads.handler, "v1", "GET", f"/uploads/{single['upload_id']}")
    assert got.json()["status"] == "received" and got.json()["size"] == len(body)
    # the record keeps its DynamoDB TTL through its updates (a day after the upload expires)
    item = boto3.client("dynamodb").get_item(
        TableName=context.settings().table_name, ConsistentRead=True,
        Key={"pk": {"S": f"REC#upload#{single['upload_id']}"}, "sk": {"S": "META"}})["Item"]
    assert int(item["expiration"]["N"]) > time.time() + context.settings().upload_expiry_seconds

    multipart = announce(size=str(6 * MIB))
    parts = multipart["multipart"]["parts"]
    assert len(parts) == 2
    for part in parts:
        assert part["url"].startswith(f"{public}/")
        assert signature_holds(part["url"], "PUT", {})
    for part, data in zip(parts, (b"a" * (5 * MIB), b"b" * MIB), strict=True):
        assert requests.put(part["url"], data=data, timeout=30).status_code == 200
    done = invoke(uploads.handler, "v1", "POST", f"/uploads/{multipart['upload_id']}/complete")
    assert done.status == 200, done.body
    assert done.json()["size"] == 6 * MIB
