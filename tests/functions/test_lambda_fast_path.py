"""The serving handlers answer hot requests without FastAPI (common/web/lambda_http.py): the same
API Gateway event must get the same answer from that path as from the FastAPI router through
Mangum, and every request the fast path does not mirror must reach the FastAPI router."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from common import context
from common.web.lambda_http import LambdaRoute, parse_event
from functions.forward import api as forward_api
from functions.forward import app as forward_app
from functions.forward_batch import api as batch_api
from functions.forward_batch import app as batch_app
from functions.metadata import api as metadata_api
from functions.metadata import app as metadata_app
from infra.local.cli import lambda_context
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


# (name, route, method, path, query, body, headers, answered by the fast path)
CASES: list[tuple[str, str, str, str, dict[str, str] | None, Any, dict[str, str], bool]] = [
    ("forward classification", "forward", "POST", "/forward", {"model": "iris"}, IRIS, JSON, True),
    ("forward regression, categorical", "forward", "POST", "/forward", {"model": "diabetes"},
     diabetes_row(), JSON, True),
    ("forward without content type", "forward", "POST", "/forward", {"model": "iris"}, IRIS, {},
     True),
    ("forward charset", "forward", "POST", "/forward", {"model": "iris"}, IRIS,
     {"Content-Type": "application/json; charset=utf-8"}, True),
    ("forward malformed json", "forward", "POST", "/forward", {"model": "iris"}, "{nope", JSON,
     True),
    ("forward empty body", "forward", "POST", "/forward", {"model": "iris"}, "", JSON, True),
    ("forward wrong type", "forward", "POST", "/forward", {"model": "iris"}, "a=1",
     {"Content-Type": "application/x-www-form-urlencoded"}, True),
    ("forward raw image", "forward", "POST", "/forward", {"model": "digits"}, b"\x89PNG",
     {"Content-Type": "image/png"}, True),
    ("forward unknown feature", "forward", "POST", "/forward", {"model": "iris"},
     {**IRIS, "colour": 1}, JSON, True),
    ("forward missing feature", "forward", "POST", "/forward", {"model": "iris"},
     {"sepal_length": 1.0}, JSON, True),
    ("forward mistyped", "forward", "POST", "/forward", {"model": "iris"},
     {**IRIS, "sepal_width": "wide"}, JSON, True),
    ("forward list body", "forward", "POST", "/forward", {"model": "iris"}, [IRIS], JSON, True),
    ("forward unknown model", "forward", "POST", "/forward", {"model": "ghost"}, IRIS, JSON, True),
    ("forward invalid model name", "forward", "POST", "/forward", {"model": "../x"}, IRIS, JSON,
     True),
    ("forward image model given JSON", "forward", "POST", "/forward", {"model": "digits"},
     {"pixels": 1}, JSON, True),
    ("forward declared too large", "forward", "POST", "/forward", {"model": "iris"}, IRIS,
     {**JSON, "Content-Length": "99999999"}, True),
    ("forward extra query parameter", "forward", "POST", "/forward",
     {"model": "iris", "debug": "1"}, IRIS, JSON, True),
    ("forward missing model", "forward", "POST", "/forward", None, IRIS, JSON, False),
    # Starlette reads header bytes as latin-1: non-ASCII values go to the framework.
    ("forward non-ascii content type", "forward", "POST", "/forward", {"model": "iris"}, IRIS,
     {"Content-Type": "application/json\u00a0"}, False),
    ("batch non-ascii top-k", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     {"records": [IRIS]}, {**JSON, "X-Top-K": "\u00a02"}, False),
    ("forward non-ascii query value", "forward", "POST", "/forward", {"model": "irisé"}, IRIS,
     JSON, True),
    ("forward wrong method", "forward", "GET", "/forward", {"model": "iris"}, None, {}, False),
    ("forward other path", "forward", "POST", "/forward/", {"model": "iris"}, IRIS, JSON, False),
    ("forward unknown route", "forward", "GET", "/nowhere", None, None, {}, False),
    ("forward multipart image", "forward", "POST", "/forward", {"model": "digits"},
     "multipart", {"X-Top-K": "3"}, False),
    ("batch json", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     {"records": [IRIS, {**IRIS, "petal_length": 5.0}]}, JSON, True),
    ("batch csv", "forward_batch", "POST", "/forward_batch", {"model": "iris"}, IRIS_CSV, CSV,
     True),
    ("batch csv bad cell", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     IRIS_CSV.replace("6.7", "x"), CSV, True),
    ("batch bad row", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     {"records": [IRIS, {**IRIS, "petal_length": "x"}]}, JSON, True),
    ("batch wrong type", "forward_batch", "POST", "/forward_batch", {"model": "iris"}, "hello",
     {"Content-Type": "text/plain"}, True),
    ("batch bad zip", "forward_batch", "POST", "/forward_batch", {"model": "digits"},
     b"PK\x03\x04broken", {"Content-Type": "application/zip"}, True),
    ("batch bad top-k", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     {"records": [IRIS]}, {**JSON, "X-Top-K": "0"}, True),
    ("batch top-k", "forward_batch", "POST", "/forward_batch", {"model": "iris"},
     {"records": [IRIS]}, {**JSON, "X-Top-K": "1"}, True),
    ("batch missing model", "forward_batch", "POST", "/forward_batch", None, {"records": [IRIS]},
     JSON, False),
    ("metadata", "metadata", "GET", "/metadata", {"model": "diabetes"}, None, {}, True),
    ("metadata unknown model", "metadata", "GET", "/metadata", {"model": "ghost"}, None, {}, True),
    ("metadata missing model", "metadata", "GET", "/metadata", None, None, {}, False),
    ("metadata wrong method", "metadata", "POST", "/metadata", {"model": "iris"}, None, {}, False),
]
HANDLERS = {
    "forward": (forward_app.handler, forward_api.handler),
    "forward_batch": (batch_app.handler, batch_api.handler),
    "metadata": (metadata_app.handler, metadata_api.handler),
}


def build(version: str, method: str, path: str, query: dict[str, str] | None, body: Any,
          headers: dict[str, str]) -> dict[str, Any]:
    headers = dict(headers)
    if body == "multipart":
        body, extra = multipart({"image": ("seven.png", png_digit(), "image/png")})
        headers.update(extra)
    raw = body_of(body)
    make = v1_event if version == "v1" else v2_event
    return make(method, path, query, raw, headers,
                base64_body=version == "v1" or isinstance(raw, bytes))


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_answer_as_the_fastapi_router(demo_env: Path, version: str, case: tuple) -> None:
    _, route, method, path, query, body, headers, fast = case
    light, framework = HANDLERS[route]
    event = build(version, method, path, query, body, headers)
    request = parse_event(event)
    handled = request is not None and light.handles(request, context.backends().settings)
    assert handled is fast
    ours = light(copy.deepcopy(event), lambda_context(route))
    theirs = framework(copy.deepcopy(event), lambda_context(route))
    assert ours == theirs
    assert ours["statusCode"] != 500, ours


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_body_over_the_limit_without_content_length(demo_env: Path, version: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_MAX_BODY_BYTES", "1024")
    context.reset()
    for route, path, body in (("forward", "/forward", {**IRIS, "pad": "x" * 1500}),
                              ("forward_batch", "/forward_batch", {"records": [IRIS] * 30})):
        light, framework = HANDLERS[route]
        event = build(version, "POST", path, {"model": "iris"}, body, JSON)
        ours, theirs = (h(copy.deepcopy(event), lambda_context(route)) for h in (light, framework))
        assert ours == theirs and ours["statusCode"] == 413, ours
        assert "more than 1024 bytes" in json.loads(ours["body"])["detail"]


def test_api_key_and_cors_follow_the_framework_path(demo_env: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_API_KEY", "s3cret")
    context.reset()
    for headers, status in ((JSON, 401), ({**JSON, "x-api-key": "wrong"}, 401),
                            ({**JSON, "X-Api-Key": "s3cret"}, 200)):
        event = build("v1", "POST", "/forward", {"model": "iris"}, IRIS, headers)
        ours = forward_app.handler(copy.deepcopy(event), lambda_context("forward"))
        assert ours == forward_api.handler(copy.deepcopy(event), lambda_context("forward"))
        assert ours["statusCode"] == status
    # With CORS configured, browser requests (Origin) go to the framework, which adds the headers.
    monkeypatch.setenv("MLFN_CORS_ORIGINS", "https://app.example")
    context.reset()
    event = build("v2", "POST", "/forward", {"model": "iris"}, IRIS,
                  {**JSON, "x-api-key": "s3cret", "Origin": "https://app.example"})
    request = parse_event(event)
    assert request is not None and not forward_app.handler.handles(request, context.backends().settings)


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
def test_events_it_cannot_read_go_to_the_framework(event: dict[str, Any]) -> None:
    assert parse_event(event) is None
    seen: list[dict[str, Any]] = []
    route = LambdaRoute("POST", "/forward", lambda r, s: {}, fallback="builtins:print")
    route._fallback = lambda e, c: seen.append(e) or {"statusCode": 418}  # type: ignore[assignment]
    assert route(event, None) == {"statusCode": 418} and seen == [event]


def test_non_ascii_raw_query_goes_to_the_framework(demo_env: Path) -> None:
    event = build("v2", "POST", "/forward", None, IRIS, JSON)
    event["rawQueryString"] = "model=irisé"
    assert parse_event(event) is None
    ours = forward_app.handler(copy.deepcopy(event), lambda_context("forward"))
    assert ours == forward_api.handler(copy.deepcopy(event), lambda_context("forward"))
    assert ours["statusCode"] == 400


@pytest.mark.parametrize("body", [{"sepal_length": 1}, 5])
def test_body_that_is_not_text_goes_to_the_framework(body: object) -> None:
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
    request = parse_event(event)
    assert request is not None
    assert request.body == body and request.one("model") == "iris" and request.one("tag") is None
    assert request.media_type == "application/json" and request.payload_version == "1.0"
    v2 = v2_event("POST", "/forward", None, base64.b64encode(body).decode(), {"A": "b"})
    v2["rawQueryString"] = "model=iris&model=wine"
    request = parse_event(v2)
    assert request is not None and request.one("model") is None and request.headers["a"] == "b"


def test_json_forward_cold_process_imports_no_web_framework(demo_env: Path) -> None:
    """A JSON forward, a CSV batch and metadata never import FastAPI, Starlette or Mangum; a
    multipart image then loads them on demand and still answers."""
    script = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.apigw import invoke, multipart
from functions.forward import app
from functions.forward_batch import app as batch
from functions.metadata import app as meta
r = invoke(app.handler, "v1", "POST", "/forward", {{"model": "iris"}}, {json.dumps(IRIS)})
assert r.status == 200, r.body
r = invoke(batch.handler, "v2", "POST", "/forward_batch", {{"model": "iris"}}, {IRIS_CSV!r},
           {{"Content-Type": "text/csv"}})
assert r.status == 200, r.body
assert invoke(meta.handler, "v2", "GET", "/metadata", {{"model": "iris"}}).status == 200
web = sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette", "mangum"))
body, headers = multipart({{"image": ("seven.png", {png_digit()!r}, "image/png")}})
r = invoke(app.handler, "v1", "POST", "/forward", {{"model": "digits"}}, body, headers)
print(json.dumps([web, r.status, "fastapi" in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT,
                         env={"MLFN_DATA_DIR": str(demo_env), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    web, status, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert web == [] and status == 200 and loaded


def test_lambda_init_preloads_the_named_models(demo_env: Path) -> None:
    """MLFN_PRELOAD_MODELS: the deployed sessions are loaded while the entry point is imported
    (Lambda init, what SnapStart snapshots); a model that cannot be loaded is logged, not fatal."""
    script = f"""
import json, logging, sys
sys.path.insert(0, {str(ROOT)!r})
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from common import context
from functions.forward import app
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
