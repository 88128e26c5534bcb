"""Every transport adapts one core: the same API Gateway event must get the same answer from the
Lambda entry point (``functions/<name>/handler.py``, common/web/lambda_events.py) as from the
FastAPI app of the same routes (common/web/fastapi_app.py, reached here through Mangum, which
turns the event into an ASGI request), byte for byte, for every request shape: both only
translate, and ``common.web.guard.serve`` answers."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from mangum import Mangum

from common import context
from common.web.lambda_events import parse_event
from functions.forward import handler as forward_app
from functions.forward_batch import handler as batch_app
from functions.metadata import handler as metadata_app
from infra.local.cli import lambda_context
from infra.local.server import routes_of
from tests.apigw import multipart, v1_event, v2_event
from tests.functions.test_serving_handlers import IRIS, diabetes_row

ROOT = Path(__file__).resolve().parents[2]
JSON = {"Content-Type": "application/json"}
CSV = {"Content-Type": "text/csv"}
IRIS_CSV = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"


def png_digit() -> bytes:
    import io

    from PIL import Image

    img = Image.new("L", (8, 8), 0)
    for y in range(1, 7):
        img.putpixel((4, y), 255)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def body_of(value: Any) -> bytes | str | None:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


# (name, function, method, path, query, body, headers)
CASES: list[tuple[str, str, str, str, dict[str, str] | None, Any, dict[str, str]]] = [
    ("forward classification", "forward", "POST", "/forward", {"model": "iris"}, IRIS, JSON),
    ("forward regression, categorical", "forward", "POST", "/forward", {"model": "diabetes"},
     diabetes_row(), JSON),
    ("forward without content type", "forward", "POST", "/forward", {"model": "iris"}, IRIS, {}),
    ("forward charset", "forward", "POST", "/forward", {"model": "iris"}, IRIS,
     {"Content-Type": "application/json; charset=utf-8"}),
    ("forward malformed json", "forward", "POST", "/forward", {"model": "iris"}, "{nope", JSON),
    ("forward empty body", "forward", "POST", "/forward", {"model": "iris"}, "", JSON),
    ("forward wrong type", "forward", "POST", "/forward", {"model": "iris"}, "a=1",
     {"Content-Type": "application/x-www-form-urlencoded"}),
    ("forward raw image", "forward", "POST", "/forward", {"model": "digits"}, b"\x89PNG",
     {"Content-Type": "image/png"}),
    ("forward unknown feature", "forward", "POST", "/forward", {"model": "iris"},
     {**IRIS, "colour": 1}, JSON),
    ("forward missing feature", "forward", "POST", "/forward", {"model": "iris"},
     {"sepal_length": 1.0}, JSON),
    ("forward mistyped", "forward", "POST", "/forward", {"model": "iris"},
     {**IRIS, "sepal_width": "wide"}, JSON),
    ("forward list body", "forward", "POST", "/forward", {"model": "iris"}, [IRIS], JSON),
    ("forward unknown model", "forward", "POST", "/forward", {"model": "ghost"}, IRIS, JSON),
    ("forward invalid model name", "forward", "POST", "/forward", {"model": "../x"}, IRIS, JSON),
    ("forward image model given JSON", "forward", "POST", "/forward", {"model": "digits"},
     {"pixels": 1}, JSON),
    ("forward declared too large", "forward", "POST", "/forward", {"model": "iris"}, IRIS,
     {**JSON, "Content-Length": "99999999"}),
    ("forward extra query parameter", "forward", "POST", "/forward",
     {"model": "iris", "debug": "1"}, IRIS, JSON),
    ("forward missing model", "forward", "POST", "/forward", None, IRIS, JSON),
    # Non-ASCII header values: both adapters read them as UTF-8.
    ("forward non-ascii content type", "forward", "POST", "/forward", {"model": "iris"}, IRIS,
     {"Content-Type": "application/json\u00a0"}),
    ("batch non-ascii top-k", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     {"records": [IRIS]}, {**JSON, "X-Top-K": "\u00a02"}),
    ("forward non-ascii query value", "forward", "POST", "/forward", {"model": "irisé"}, IRIS,
     JSON),
    ("forward wrong method", "forward", "GET", "/forward", {"model": "iris"}, None, {}),
    ("forward other path", "forward", "POST", "/forward/", {"model": "iris"}, IRIS, JSON),
    ("forward unknown route", "forward", "GET", "/nowhere", None, None, {}),
    ("forward multipart image", "forward", "POST", "/forward", {"model": "digits"},
     "multipart", {"X-Top-K": "3"}),
    ("forward multipart twice", "forward", "POST", "/forward", {"model": "digits"},
     "multipart twice", {}),
    ("forward multipart malformed", "forward", "POST", "/forward", {"model": "digits"},
     "--x\r\nbroken", {"Content-Type": "multipart/form-data; boundary=x"}),
    ("batch multipart csv", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     "multipart csv", {}),
    ("forward repeated model", "forward", "POST", "/forward", "model=iris&model=wine", IRIS, JSON),
    ("forward misspelt query", "forward", "POST", "/forward", "model=iris&modle=wine", IRIS, JSON),
    ("metadata head", "metadata", "HEAD", "/metadata", {"model": "iris"}, None, {}),
    ("batch json", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     {"records": [IRIS, {**IRIS, "petal_length": 5.0}]}, JSON),
    ("batch csv", "forward_batch", "POST", "/forward_batch", {"model": "iris"}, IRIS_CSV, CSV),
    ("batch csv bad cell", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     IRIS_CSV.replace("6.7", "x"), CSV),
    ("batch bad row", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     {"records": [IRIS, {**IRIS, "petal_length": "x"}]}, JSON),
    ("batch wrong type", "forward_batch", "POST", "/forward_batch", {"model": "iris"}, "hello",
     {"Content-Type": "text/plain"}),
    ("batch bad zip", "forward_batch", "POST", "/forward_batch", {"model": "digits"},
     b"PK\x03\x04broken", {"Content-Type": "application/zip"}),
    ("batch bad top-k", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     {"records": [IRIS]}, {**JSON, "X-Top-K": "0"}),
    ("batch top-k", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     {"records": [IRIS]}, {**JSON, "X-Top-K": "1"}),
    ("batch missing model", "forward_batch", "POST", "/forward_batch", None, {"records": [IRIS]},
     JSON),
    ("metadata", "metadata", "GET", "/metadata", {"model": "diabetes"}, None, {}),
    ("metadata unknown model", "metadata", "GET", "/metadata", {"model": "ghost"}, None, {}),
    ("metadata missing model", "metadata", "GET", "/metadata", None, None, {}),
    ("metadata wrong method", "metadata", "POST", "/metadata", {"model": "iris"}, None, {}),
]
LAMBDA = {"forward": forward_app.handler, "forward_batch": batch_app.handler,
          "metadata": metadata_app.handler}


def fastapi_handler(function: str) -> Any:
    """The FastAPI app of ``function``'s routes, behind Mangum (built per settings)."""
    from common.web.fastapi_app import create_app

    return Mangum(create_app(routes_of(function)), lifespan="off", api_gateway_base_path="/")


def build(version: str, method: str, path: str, query: Any, body: Any,
          headers: dict[str, str]) -> dict[str, Any]:
    headers = dict(headers)
    if body == "multipart":
        body, extra = multipart({"image": ("seven.png", png_digit(), "image/png")})
        headers.update(extra)
    elif body == "multipart twice":
        one, extra = multipart({"image": ("seven.png", png_digit(), "image/png")})
        boundary = extra["Content-Type"].split("boundary=")[1]
        body = one.replace(f"--{boundary}--".encode(), b"") + one
        headers.update(extra)
    elif body == "multipart csv":
        body, extra = multipart({"file": ("iris.csv", IRIS_CSV.encode(), "text/csv")})
        headers.update(extra)
    raw = body_of(body)
    make = v1_event if version == "v1" else v2_event
    event = make(method, path, query if isinstance(query, dict) else None, raw, headers,
                 base64_body=version == "v1" or isinstance(raw, bytes))
    if isinstance(query, str):  # a raw query string, e.g. a repeated parameter
        from urllib.parse import parse_qs

        if version == "v1":
            event["multiValueQueryStringParameters"] = parse_qs(query)
            event["queryStringParameters"] = {k: v[-1] for k, v in parse_qs(query).items()}
        else:
            event["rawQueryString"] = query
    return event


def both(function: str, event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answers of the Lambda entry point and of the FastAPI app, with one Lambda context
    (the request id is the context's)."""
    ctx = lambda_context(function)
    ours = LAMBDA[function](copy.deepcopy(event), ctx)
    theirs = fastapi_handler(function)(copy.deepcopy(event), ctx)
    return ours, theirs


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_answer_from_lambda_and_fastapi(demo_env: Path, version: str, case: tuple) -> None:
    _, function, method, path, query, body, headers = case
    ours, theirs = both(function, build(version, method, path, query, body, headers))
    assert ours == theirs
    assert ours["statusCode"] != 500, ours


def test_answers_that_matter(demo_env: Path) -> None:
    """A few of the cases above, checked for what they answer (not only that both agree)."""
    def answer(name: str) -> tuple[int, Any]:
        case = next(c for c in CASES if c[0] == name)
        reply = LAMBDA[case[1]](build("v2", *case[2:]), lambda_context(case[1]))
        body = reply["body"]
        return reply["statusCode"], json.loads(body) if body else None

    assert answer("forward multipart twice") == (400, {
        "error": "bad request",
        "detail": "the multipart body has 2 'image' fields; send one file per request"})
    status, doc = answer("forward multipart malformed")
    assert status == 400 and doc["detail"].startswith("malformed multipart body")
    status, doc = answer("forward repeated model")
    assert status == 400 and doc["detail"] == ("query parameter 'model' is given 2 times; "
                                               "give it once")
    status, doc = answer("forward misspelt query")  # not silently ignored
    assert status == 400 and doc["detail"] == ("unknown query parameter 'modle'; this route takes "
                                               "'model'; did you mean 'model'?")
    status, doc = answer("batch multipart csv")
    assert status == 200 and len(doc["predictions"]) == 2
    status, doc = answer("forward multipart image")
    assert status == 200 and len(doc["probabilities"]) == 3
    head = LAMBDA["metadata"](build("v1", "HEAD", "/metadata", {"model": "iris"}, None, {}),
                              lambda_context("metadata"))
    get = LAMBDA["metadata"](build("v1", "GET", "/metadata", {"model": "iris"}, None, {}),
                             lambda_context("metadata"))
    assert head["statusCode"] == 200 and head["body"] == ""
    assert head["headers"]["content-length"] == str(len(get["body"]))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_body_over_the_limit_without_content_length(demo_env: Path, version: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_MAX_BODY_BYTES", "1024")
    context.reset()
    for function, path, body in (("forward", "/forward", {**IRIS, "pad": "x" * 1500}),
                                 ("forward_batch", "/forward_batch", {"records": [IRIS] * 30})):
        ours, theirs = both(function, build(version, "POST", path, {"model": "iris"}, body, JSON))
        assert ours == theirs and ours["statusCode"] == 413, ours
        assert "more than 1024 bytes" in json.loads(ours["body"])["detail"]


def test_api_key_and_cors_alike_on_both_adapters(demo_env: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_API_KEY", "s3cret")
    context.reset()
    for headers, status in ((JSON, 401), ({**JSON, "x-api-key": "wrong"}, 401),
                            ({**JSON, "X-Api-Key": "s3cret"}, 200)):
        ours, theirs = both("forward", build("v1", "POST", "/forward", {"model": "iris"}, IRIS,
                                             headers))
        assert ours == theirs and ours["statusCode"] == status
    # Two x-api-key headers: refused, not "the last one wins".
    event = build("v1", "POST", "/forward", {"model": "iris"}, IRIS, JSON)
    event["multiValueHeaders"]["x-api-key"] = ["wrong", "s3cret"]
    ours, theirs = both("forward", event)
    assert ours == theirs and ours["statusCode"] == 401
    monkeypatch.setenv("MLFN_CORS_ORIGINS", "https://app.example")
    context.reset()
    browser = {**JSON, "x-api-key": "s3cret", "Origin": "https://app.example"}
    ours, theirs = both("forward", build("v2", "POST", "/forward", {"model": "iris"}, IRIS, browser))
    assert ours == theirs and ours["statusCode"] == 200
    assert ours["headers"]["access-control-allow-origin"] == "https://app.example"
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-api-key"}
    ours, theirs = both("forward", build("v1", "OPTIONS", "/forward", None, None, preflight))
    assert ours == theirs and ours["statusCode"] == 200, ours
    assert ours["headers"]["access-control-allow-headers"] == "content-type,x-api-key"
    stranger = {**preflight, "Origin": "https://evil.example"}
    ours, theirs = both("forward", build("v1", "OPTIONS", "/forward", None, None, stranger))
    assert ours == theirs and ours["statusCode"] == 400


def test_request_id_reaches_the_metric_line(demo_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = build("v2", "POST", "/forward", {"model": "iris"}, IRIS, JSON)
    ctx = lambda_context("forward")
    capsys.readouterr()
    reply = forward_app.handler(event, ctx)
    assert reply["statusCode"] == 200
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    emf = [x for x in lines if "_aws" in x]
    assert emf and emf[-1]["request_id"] == ctx.aws_request_id


@pytest.mark.parametrize("event", [
    {},
    {"requestContext": {"elb": {"targetGroupArn": "arn"}}, "httpMethod": "POST", "path": "/forward"},
    {"version": "2.0", "requestContext": {}},
    {"resource": "/", "requestContext": {}, "httpMethod": "POST", "path": "/forward",
     "isBase64Encoded": True, "body": "abc"},
])
def test_events_it_cannot_read_are_a_json_400(event: dict[str, Any]) -> None:
    assert parse_event(event) is None
    reply = forward_app.handler(event, lambda_context("forward"))
    assert reply["statusCode"] == 400
    assert "API Gateway proxy events" in json.loads(reply["body"])["detail"]


def test_non_ascii_raw_query(demo_env: Path) -> None:
    event = build("v2", "POST", "/forward", None, IRIS, JSON)
    event["rawQueryString"] = "model=irisé"
    ours, theirs = both("forward", event)
    assert ours == theirs and ours["statusCode"] == 400
    assert "irisé" in json.loads(ours["body"])["detail"]


@pytest.mark.parametrize("body", [{"sepal_length": 1}, 5])
def test_body_that_is_not_text_is_not_an_event(body: object) -> None:
    event = v1_event("POST", "/forward", {"model": "iris"}, None, JSON)
    event["body"] = body
    assert parse_event(event) is None


def test_stores_that_cannot_be_reached_answer_json_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    fresh_context: None) -> None:
    monkeypatch.setenv("MLFN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLFN_EXPERIMENT_STORE", "postgres")
    monkeypatch.setenv("MLFN_POSTGRES_DSN", "postgresql://127.0.0.1:1/none?connect_timeout=2")
    context.reset()
    for handler, method, path in ((metadata_app.handler, "GET", "/metadata"),
                                  (forward_app.handler, "POST", "/forward")):
        event = build("v1", method, path, {"model": "iris"}, IRIS if method == "POST" else None,
                      JSON)
        reply = handler(event, lambda_context("serving"))
        assert reply["statusCode"] == 503, reply
        doc = json.loads(reply["body"])
        assert doc["error"] == "service unavailable" and "OperationalError" in doc["detail"]
        assert "Traceback" not in reply["body"]


def test_base64_body_and_query_decoding() -> None:
    body = json.dumps(IRIS).encode()
    event = v1_event("POST", "/forward", {"model": "iris"}, body, JSON, base64_body=True)
    event["multiValueQueryStringParameters"] = {"model": ["iris"], "tag": ["a", "b"]}
    parsed = parse_event(event)
    assert parsed is not None
    version, request = parsed
    assert request.body == body and request.query == {"model": ["iris"], "tag": ["a", "b"]}
    assert request.media_type == "application/json" and version == "1.0"
    v2 = v2_event("POST", "/forward", None, base64.b64encode(body).decode(), {"A": "b"})
    v2["rawQueryString"] = "model=iris&model=wine"
    parsed = parse_event(v2)
    assert parsed is not None
    assert parsed[1].query == {"model": ["iris", "wine"]} and parsed[1].headers["a"] == "b"


def test_cold_serving_process_imports_no_web_framework(demo_env: Path) -> None:
    """A JSON forward, a multipart image, a CSV batch and metadata never import FastAPI,
    Starlette, Mangum or grpcio."""
    script = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.apigw import invoke, multipart
from functions.forward import handler as app
from functions.forward_batch import handler as batch
from functions.metadata import handler as meta
r = invoke(app.handler, "v1", "POST", "/forward", {{"model": "iris"}}, {json.dumps(IRIS)})
assert r.status == 200, r.body
r = invoke(batch.handler, "v2", "POST", "/forward_batch", {{"model": "iris"}}, {IRIS_CSV!r},
           {{"Content-Type": "text/csv"}})
assert r.status == 200, r.body
assert invoke(meta.handler, "v2", "GET", "/metadata", {{"model": "iris"}}).status == 200
body, headers = multipart({{"image": ("seven.png", {png_digit()!r}, "image/png")}})
r = invoke(app.handler, "v1", "POST", "/forward", {{"model": "digits"}}, body, headers)
web = sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette", "mangum", "grpc"))
print(json.dumps([web, r.status]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT,
                         env={"MLFN_DATA_DIR": str(demo_env), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    web, status = json.loads(out.stdout.strip().splitlines()[-1])
    assert web == [] and status == 200


def test_lambda_init_preloads_the_named_models(demo_env: Path) -> None:
    """MLFN_PRELOAD_MODELS: the deployed sessions are loaded while the entry point is imported
    (Lambda init, what SnapStart snapshots); a model that cannot be loaded is logged, not fatal."""
    script = f"""
import json, logging, sys
sys.path.insert(0, {str(ROOT)!r})
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from common import context
from functions.forward import handler as app
from tests.apigw import invoke
keys = sorted(k[0] for k in context.serving().sessions._items)
r = invoke(app.handler, "v2", "POST", "/forward", {{"model": "iris"}}, {json.dumps(IRIS)})
print(json.dumps([keys, r.status]))
"""
    env = {"MLFN_DATA_DIR": str(demo_env), "PATH": "/usr/bin:/bin",
           "AWS_LAMBDA_FUNCTION_NAME": "forward", "MLFN_PRELOAD_MODELS": "iris, ghost,diabetes"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    keys, status = json.loads(out.stdout.strip().splitlines()[-1])
    assert keys == ["diabetes", "iris"] and status == 200
    assert "preload of model 'ghost' failed: NotFound" in out.stderr
    # Outside Lambda (tests, the local server's imports) nothing is loaded at import.
    env.pop("AWS_LAMBDA_FUNCTION_NAME")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[], 200]


def test_preload_everything_deployed(demo_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serving = context.serving()
    deployed = sorted(m.name for m in context.backends().experiments.list_models()
                      if m.deployed_experiment_id is not None)
    assert len(deployed) >= 4
    assert sorted(serving.preload("*")) == deployed
    assert sorted(k[0] for k in serving.sessions._items) == deployed
    monkeypatch.setenv("MLFN_SESSION_CACHE_SIZE", "2")
    context.reset()
    assert len(context.serving().preload("*")) == 2
    assert context.serving().preload("") == []


def test_a_streamed_reply_is_sent_whole_by_both_adapters(tmp_path: Path) -> None:
    """A reply whose body is an open file (a batch job's result): the FastAPI adapter sends it
    block by block, the Lambda one as one payload; both send every byte, say its length and
    close the file."""
    import asyncio

    from common.web import fastapi_app, lambda_events
    from common.web.request import Reply

    data = bytes(range(256)) * 10_000  # 2.5 MB: three blocks
    path = tmp_path / "result.bin"
    path.write_bytes(data)
    with open(path, "rb") as first:
        event = lambda_events.to_response(
            "2.0", Reply(200, content_type="application/octet-stream", stream=first))
        assert first.closed
    assert base64.b64decode(event["body"]) == data and event["isBase64Encoded"]
    assert event["headers"]["content-length"] == str(len(data))

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(60)  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with open(path, "rb") as second:
        response = fastapi_app.to_response(Reply(200, content_type="text/csv", stream=second))
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [],
                 "asgi": {"version": "3.0", "spec_version": "2.4"}}
        asyncio.run(response(scope, receive, send))
        assert second.closed
    start, *blocks = sent
    assert dict(start["headers"])[b"content-length"] == str(len(data)).encode()
    assert b"".join(m.get("body", b"") for m in blocks) == data
    assert len([m for m in blocks if m.get("body")]) == 3


def test_a_streamed_reply_closes_its_file_when_the_client_goes_away(tmp_path: Path) -> None:
    """uvicorn speaks ASGI 2.3: Starlette watches for the disconnect and stops sending; the
    file is closed as the response ends, not left to the garbage collector."""
    import asyncio

    from common.web import fastapi_app
    from common.web.request import Reply

    path = tmp_path / "result.bin"
    path.write_bytes(b"x" * (8 * 1024 * 1024))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        await asyncio.sleep(0.15)  # a slow client

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [],
             "asgi": {"version": "3.0", "spec_version": "2.3"}}
    async def server(stream: BinaryIO) -> bool:  # the event loop goes on, as uvicorn's does
        await fastapi_app.to_response(Reply(200, content_type="text/csv", stream=stream))(
            scope, receive, send)
        await asyncio.sleep(0)
        return stream.closed

    with open(path, "rb") as stream:
        assert asyncio.run(server(stream))
    received = sum(len(m.get("body", b"")) for m in sent)
    assert 0 < received < 8 * 1024 * 1024  # it stopped part way
