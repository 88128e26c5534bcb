"""events/*.json: real event shapes, one per route, in step with template.yaml.

The events come from ``sam local generate-event`` (infra/aws/make_events.py); these tests check
their shape and that every function and every API route of the template has one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"

# Every Lambda function of the service (functions/<name>/handler.py); events/<name>.json is its
# main event.
FUNCTIONS = (
    "health", "models", "model_classes", "forward", "forward_batch", "metadata", "evaluate",
    "add_data", "retrain", "metrics", "artifacts", "deploy", "deployments", "experiments",
    "datasets", "inference", "train_worker",
)
# Served by the local server and docker-compose only, not deployed by template.yaml: the
# inference log lives in the SQL experiment store, which the AWS stack does not use.
LOCAL_ONLY = {"inference_log"}
# Routes that name their model in the query string (?model=NAME).
MODEL_SCOPED = {"/forward", "/forward_batch", "/metadata", "/evaluate", "/add_data", "/retrain",
                "/deployments", "/experiments", "/datasets", "/datasets/parts/{version}"}
HTTP_METHODS = {"GET", "POST", "PUT", "DELETE"}
# tritonclient's binary tensors: the JSON header is the body's first this many bytes.
HEADER_LENGTH = "Inference-Header-Content-Length"


def load(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    assert isinstance(doc, dict), f"{path.name}: not a JSON object"
    return doc


def all_events() -> dict[str, dict[str, Any]]:
    return {p.stem: load(p) for p in sorted(EVENTS.glob("*.json"))}


def kind(event: dict[str, Any]) -> str:
    if "Records" in event:
        return "sqs"
    if event.get("version") == "2.0":
        return "v2"
    if "httpMethod" in event:
        return "v1"
    return "unknown"


def body_bytes(event: dict[str, Any]) -> bytes | None:
    body = event.get("body")
    if body is None:
        return None
    assert isinstance(body, str)
    return base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()


def test_every_file_is_a_known_event_shape() -> None:
    events = all_events()
    assert events, "events/ is empty"
    unknown = [name for name, event in events.items() if kind(event) == "unknown"]
    assert not unknown, f"neither API Gateway v1/v2 nor SQS: {unknown}"


@pytest.mark.parametrize("name", [p.stem for p in sorted(EVENTS.glob("*.json"))])
def test_event_shape(name: str) -> None:
    event = load(EVENTS / f"{name}.json")
    shape = kind(event)
    if shape == "v1":
        check_v1(name, event)
    elif shape == "v2":
        check_v2(name, event)
    elif shape == "sqs":
        check_sqs(name, event)


def check_v1(name: str, event: dict[str, Any]) -> None:
    method, path, resource = event["httpMethod"], event["path"], event["resource"]
    assert method in HTTP_METHODS, name
    assert path.startswith("/"), name
    assert isinstance(event["isBase64Encoded"], bool), name
    # The path is the resource with its {parameters} filled in from pathParameters.
    params = event.get("pathParameters") or {}
    assert set(re.findall(r"{(\w+)\+?}", resource)) == set(params), name
    filled = resource
    for key, value in params.items():
        filled = re.sub(r"\{" + key + r"\+?\}", value, filled)  # {name} or greedy {name+}
    assert filled == path, f"{name}: resource {resource} does not match path {path}"
    context = event["requestContext"]
    assert context["httpMethod"] == method and context["resourcePath"] == resource, name
    assert context["path"] == f"/{context['stage']}{path}", name
    query = event.get("queryStringParameters") or {}
    if resource in MODEL_SCOPED:
        assert query.get("model"), f"{name}: {resource} needs ?model=NAME"
        assert event["multiValueQueryStringParameters"]["model"] == [query["model"]], name
    body = body_bytes(event)
    if method in ("GET", "DELETE"):
        assert body is None, f"{name}: a {method} request has no body"
        return
    if body is None:
        return
    # The REST API's binary media type is */*: every body arrives base64-encoded.
    assert event["isBase64Encoded"] is True, f"{name}: a REST API body is base64"
    headers = event["headers"]
    assert event["multiValueHeaders"] == {k: [v] for k, v in headers.items()}, name
    if HEADER_LENGTH in headers:
        # As tritonclient sends it: no Content-Type, the JSON header, then the raw tensors.
        assert "Content-Type" not in headers and "Accept" not in headers, name
        length = int(headers[HEADER_LENGTH])
        header = json.loads(body[:length])
        sizes = [i["parameters"]["binary_data_size"] for i in header["inputs"]]
        assert sum(sizes) == len(body) - length, f"{name}: binary_data_size vs the body"
    else:
        assert headers.get("Content-Type") == "application/json", name
        json.loads(body)


def check_v2(name: str, event: dict[str, Any]) -> None:
    http = event["requestContext"]["http"]
    assert http["method"] in HTTP_METHODS, name
    assert http["path"] == event["rawPath"], name
    query = event.get("queryStringParameters") or {}
    assert event["rawQueryString"] == "&".join(f"{k}={v}" for k, v in query.items()), name
    body = body_bytes(event)
    if body is not None:
        json.loads(body)


def check_sqs(name: str, event: dict[str, Any]) -> None:
    records = event["Records"]
    assert records, name
    for record in records:
        assert record["eventSource"] == "aws:sqs", name
        assert record["messageId"] and record["receiptHandle"], name
        body = json.loads(record["body"])
        assert isinstance(body, dict), name
        if name == "ingest_worker":  # a task message (common/tasks.py)
            assert body.get("task") == "ingest" and isinstance(body.get("id"), str), name
        elif name == "score_worker":  # a batch job's task (common/batch_jobs.py)
            assert body.get("task") in ("batch_job", "batch_chunk"), name
            assert isinstance(body.get("id"), str), name
        else:
            assert isinstance(body.get("experiment_id"), int), name
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest(), name


def function_names() -> set[str]:
    """The functions above and any function directory added since."""
    return set(FUNCTIONS) | {p.parent.name for p in (ROOT / "functions").glob("*/handler.py")}


def test_every_function_has_its_event() -> None:
    missing = sorted(n for n in function_names() if not (EVENTS / f"{n}.json").exists())
    assert not missing, f"no events/<name>.json for {missing}"


def test_the_training_worker_event_is_sqs() -> None:
    assert kind(load(EVENTS / "train_worker.json")) == "sqs"
    assert kind(load(EVENTS / "forward_v2.json")) == "v2"


# -- template.yaml -------------------------------------------------------------------------------


def template() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):  # type: ignore[name-defined]
        pass

    def tag(loader: Any, _suffix: str, node: Any) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_mapping(node, deep=True)

    Loader.add_multi_constructor("!", tag)
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)


def template_functions() -> dict[str, dict[str, Any]]:
    """Function name (functions/<name>) -> its template properties."""
    out = {}
    for resource in template()["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        handler = props.get("Handler") or props["ImageConfig"]["Command"][0]
        match = re.fullmatch(r"functions\.(\w+)\.handler\.handler", handler)
        assert match, f"handler {handler!r} is not functions.<name>.handler.handler"
        out[match.group(1)] = props
    return out


def test_the_template_has_every_function() -> None:
    functions = template_functions()
    assert set(functions) == function_names() - LOCAL_ONLY
    for name, props in functions.items():
        if props.get("PackageType") != "Image":
            assert props["CodeUri"] == f"functions/{name}", name


def api_events(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["Properties"] for e in (props.get("Events") or {}).values() if e["Type"] == "Api"]


def test_the_template_routes_are_the_functions_routes() -> None:
    """Each function's API events are its routes.py routes, and the public routes (the health
    checks) are the ones without an API key."""
    from infra.local.server import routes_of

    for name, props in template_functions().items():
        declared = {(r.method, re.sub(r"{(\w+):path}", r"{\1+}", r.path)): r.public
                    for r in routes_of(name)}
        events = {(p["Method"].upper(), p["Path"]): p.get("Auth", {}).get("ApiKeyRequired", True)
                  is False for p in api_events(props)}
        assert events == declared, name


def test_every_body_reaches_the_functions_base64_encoded() -> None:
    """tritonclient sends binary tensors with no Content-Type: only */* keeps them intact."""
    api = template()["Resources"]["MlfnApi"]["Properties"]
    assert api["BinaryMediaTypes"] == ["*~1*"]
    assert api["Auth"]["ApiKeyRequired"] is True


def test_every_api_route_has_an_event_and_every_event_a_route() -> None:
    routes = set()
    for props in template_functions().values():
        for event in (props.get("Events") or {}).values():
            if event["Type"] == "Api":
                routes.add((event["Properties"]["Method"].upper(), event["Properties"]["Path"]))
    sampled = {(e["httpMethod"], e["resource"]) for name, e in all_events().items()
               if kind(e) == "v1" and name not in LOCAL_ONLY}
    assert routes == sampled


def test_the_worker_consumes_sqs_and_reports_partial_failures() -> None:
    events = template_functions()["train_worker"]["Events"]
    (sqs,) = [e for e in events.values() if e["Type"] == "SQS"]
    assert sqs["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_task_queues_deliver_once_more_than_a_task_has_attempts() -> None:
    """A task (ingestion, batch job, chunk) whose 3 attempts all died (a Lambda timeout each
    time) is marked failed by the next delivery's claim: the queue must still deliver it."""
    from common import jobstate, tasks

    resources = template()["Resources"]
    for queue, attempts in (("IngestQueue", tasks.MAX_ATTEMPTS), ("BatchQueue", tasks.MAX_ATTEMPTS),
                            ("JobsQueue", jobstate.MAX_ATTEMPTS)):
        redrive = resources[queue]["Properties"]["RedrivePolicy"]
        assert int(redrive["maxReceiveCount"]) > attempts, queue
