"""Write events/*.json: the sample events of every route and of the training and ingestion
workers.

Each event starts from what ``sam local generate-event`` prints (the real API Gateway REST v1
proxy, HTTP API v2 and SQS shapes) and is then given its method, resource, path, path and query
parameters and body, as API Gateway would send them for template.yaml's routes:

- Every REST API body arrives base64-encoded (``isBase64Encoded: true``), JSON too: the API's
  binary media type is ``*/*`` (template.yaml, MlfnApi), so that tritonclient's binary tensors,
  sent with no Content-Type, arrive intact. The HTTP API event (forward_v2) keeps its JSON body
  as text, as HTTP APIs send text types.
- ``inference_binary`` is an infer request as tritonclient sends it: the JSON header, then the
  raw little-endian tensors, ``Inference-Header-Content-Length`` and neither Content-Type nor
  Accept.
- SQS bodies are set here, JSON-encoded, because ``generate-event sqs --body`` does not escape.

Run with the tools venv that infra/aws/check.sh creates (it needs the ``sam`` command)::

    .venv-aws-tools/bin/python infra/aws/make_events.py          # rewrite events/
    .venv-aws-tools/bin/python infra/aws/make_events.py --check  # fail if events/ is stale
"""

from __future__ import annotations

import argparse
import base64
import copy
import difflib
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
STAGE = "v1"  # template.yaml's StageName default
QUEUE = "mlfn-jobs"
INGEST_QUEUE = "mlfn-ingest"
BATCH_QUEUE = "mlfn-batch"

IRIS = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2,
     "species": "setosa"},
    {"sepal_length": 4.9, "sepal_width": 3.0, "petal_length": 1.4, "petal_width": 0.2,
     "species": "setosa"},
    {"sepal_length": 7.0, "sepal_width": 3.2, "petal_length": 4.7, "petal_width": 1.4,
     "species": "versicolor"},
    {"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5,
     "species": "versicolor"},
    {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5,
     "species": "virginica"},
    {"sepal_length": 5.8, "sepal_width": 2.7, "petal_length": 5.1, "petal_width": 1.9,
     "species": "virginica"},
]
FEATURES = [{k: v for k, v in row.items() if k != "species"} for row in IRIS]
# The deployed experiment of the demo iris model (its OIP version).
IRIS_VERSION = "2"
# tritonclient's HTTP transport (geventhttpclient) sends only this of its own.
TRITON_USER_AGENT = "python/gevent-http-client-2.6.1"
# Headers a browser or curl sends and tritonclient does not.
NOT_FROM_TRITON = ("Accept", "Accept-Encoding", "Accept-Language", "Cache-Control",
                   "Upgrade-Insecure-Requests", "Content-Type")


@dataclass(frozen=True)
class RawBody:
    """A body sent as bytes with these headers instead of JSON with a Content-Type."""

    data: bytes
    headers: dict[str, str]


def infer_json(rows: list[dict[str, float]]) -> dict[str, Any]:
    """An OIP infer request: one FP32 [rows, 1] input per feature column, as JSON."""
    return {"inputs": [{"name": name, "shape": [len(rows), 1], "datatype": "FP32",
                        "data": [row[name] for row in rows]} for name in rows[0]]}


def infer_binary(rows: list[dict[str, float]]) -> RawBody:
    """The same request as tritonclient's defaults send it (``set_data_from_numpy`` with
    binary_data=True, no outputs listed, so every output is asked for in binary)."""
    names = list(rows[0])
    tensors = [struct.pack(f"<{len(rows)}f", *(row[name] for row in rows)) for name in names]
    header = json.dumps({
        "inputs": [{"name": name, "shape": [len(rows), 1], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}
                   for name, raw in zip(names, tensors, strict=True)],
        "parameters": {"binary_data_output": True},
    }).encode()
    return RawBody(header + b"".join(tensors), {"Inference-Header-Content-Length": str(len(header))})


MODEL = {"model": "iris"}
VERSIONED = {"model": "iris", "version": IRIS_VERSION}

# file -> (method, resource, path parameters, query, body); one file per route. The file named
# after a function (events/<name>.json) is that function's main route.
ROUTES: dict[str, tuple[str, str, dict[str, str] | None, dict[str, str] | None, Any]] = {
    "health": ("GET", "/health", None, None, None),
    "models": ("GET", "/models", None, None, None),
    "create_model": ("POST", "/models", None, None,
                     {"name": "churn", "task": "classification", "target": "churned"}),
    "model_classes": ("GET", "/model_classes", None, None, None),
    "forward": ("POST", "/forward", None, {"model": "iris"}, FEATURES[0]),
    "forward_batch": ("POST", "/forward_batch", None, {"model": "iris"},
                      {"records": FEATURES[::2]}),
    "metadata": ("GET", "/metadata", None, {"model": "iris"}, None),
    "evaluate": ("POST", "/evaluate", None, {"model": "iris"}, {"records": IRIS}),
    "add_data": ("PUT", "/add_data", None, {"model": "iris"}, {"records": IRIS}),
    "retrain": ("PUT", "/retrain", None, {"model": "iris"},
                {"model_class": "random_forest", "hyperparameters": {"n_estimators": 51},
                 "tune": False, "deploy": "never"}),
    "metrics": ("GET", "/metrics/{experiment_id}", {"experiment_id": "1"}, None, None),
    "artifacts": ("GET", "/artifacts/{experiment_id}/{name+}",
                  {"experiment_id": "1", "name": "model.onnx"}, None, None),
    "deploy": ("POST", "/deploy/{experiment_id}", {"experiment_id": "2"}, None, None),
    "deployments": ("GET", "/deployments", None, {"model": "iris"}, None),
    "experiments": ("GET", "/experiments", None, {"model": "iris"}, None),
    "delete_experiment": ("DELETE", "/experiments/{experiment_id}", {"experiment_id": "1"},
                          None, None),
    # Each undoes another event: the model events/create_model.json creates, the part that
    # events/add_data.json adds to the demo iris model (dataset version 2); 404 without it.
    "delete_model": ("DELETE", "/models/{name}", {"name": "churn"}, None, None),
    "datasets": ("GET", "/datasets", None, {"model": "iris"}, None),
    "delete_dataset_part": ("DELETE", "/datasets/parts/{version}", {"version": "2"},
                            {"model": "iris"}, None),
    # Safe rollouts (functions/rollouts); a canary starts with /deploy/{id}?canary=PERCENT.
    "rollouts": ("GET", "/rollout", None, {"model": "iris"}, None),
    "deploy_canary": ("POST", "/deploy/{experiment_id}", {"experiment_id": "2"},
                      {"model": "iris", "canary": "10", "guard": "true"}, None),
    "end_canary": ("DELETE", "/canary", None, {"model": "iris"}, None),
    "end_shadow": ("DELETE", "/shadow", None, {"model": "iris"}, None),
    "feedback": ("POST", "/feedback", None, {"model": "iris"},
                 [{"request_id": "3f0c1e9a5b2d4c6e8f7a1b2c3d4e5f60", "label": "setosa"}]),
    "live_metrics": ("GET", "/live_metrics", None, {"model": "iris"}, None),
    "drift": ("GET", "/drift", None, {"model": "iris"}, None),
    # The Open Inference Protocol v2 (functions/inference).
    "inference": ("POST", "/v2/models/{model}/infer", MODEL, None, infer_json(FEATURES[::2])),
    "inference_binary": ("POST", "/v2/models/{model}/infer", MODEL, None,
                         infer_binary(FEATURES[::2])),
    "inference_version": ("POST", "/v2/models/{model}/versions/{version}/infer", VERSIONED, None,
                          infer_json(FEATURES[:1])),
    "inference_server": ("GET", "/v2", None, None, None),
    "inference_live": ("GET", "/v2/health/live", None, None, None),
    "inference_ready": ("GET", "/v2/health/ready", None, None, None),
    "inference_metadata": ("GET", "/v2/models/{model}", MODEL, None, None),
    "inference_version_metadata": ("GET", "/v2/models/{model}/versions/{version}", VERSIONED,
                                   None, None),
    "inference_model_ready": ("GET", "/v2/models/{model}/ready", MODEL, None, None),
    "inference_version_ready": ("GET", "/v2/models/{model}/versions/{version}/ready", VERSIONED,
                                None, None),
    # Uploads of any size (functions/uploads) and their ingestion (PUT /add_data?upload=);
    # the ids are ones no store has (404), as an upload's id is random.
    "uploads": ("POST", "/uploads", None, {"model": "iris", "filename": "iris.csv"}, None),
    "upload_status": ("GET", "/uploads/{upload_id}", {"upload_id": "0" * 32}, None, None),
    "complete_upload": ("POST", "/uploads/{upload_id}/complete", {"upload_id": "0" * 32}, None,
                        None),
    "upload_content": ("PUT", "/uploads/{upload_id}/content", {"upload_id": "0" * 32}, None,
                       None),
    "ingestion": ("GET", "/ingestions/{ingestion_id}", {"ingestion_id": "0" * 32}, None, None),
    "add_data_upload": ("PUT", "/add_data", None, {"model": "iris", "upload": "0" * 32}, None),
    # Batch scoring jobs (functions/batch_jobs) of an upload; ids no store has (404).
    "batch_jobs": ("POST", "/batch_jobs", None, {"model": "iris", "upload": "0" * 32}, None),
    "batch_job": ("GET", "/batch_jobs/{job_id}", {"job_id": "0" * 32}, None, None),
    "batch_result": ("GET", "/batch_jobs/{job_id}/result", {"job_id": "0" * 32}, None, None),
    # Local and docker-compose only (the inference log lives in the SQL experiment store).
    "inference_log": ("GET", "/inference_log", None, {"model": "iris", "limit": "50"}, None),
}


def sam(*args: str) -> dict[str, Any]:
    exe = shutil.which("sam", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if exe is None:
        raise SystemExit("the sam command is missing; run infra/aws/check.sh once to install it")
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    out = subprocess.run([exe, "local", "generate-event", *args], check=True, env=env,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def concrete(resource: str, params: dict[str, str] | None) -> str:
    path = resource
    for name, value in (params or {}).items():
        path = re.sub(r"\{" + name + r"\+?\}", value, path)  # {name} or greedy {name+}
    return path


def v1_event(base: dict[str, Any], method: str, resource: str, params: dict[str, str] | None,
             query: dict[str, str] | None, body: Any) -> dict[str, Any]:
    event = copy.deepcopy(base)
    path = concrete(resource, params)
    headers = dict(event["headers"])
    headers["Accept"] = "application/octet-stream" if "/artifacts/" in resource else "application/json"
    if isinstance(body, RawBody):
        headers = {k: v for k, v in headers.items() if k not in NOT_FROM_TRITON}
        headers.update(body.headers)
        headers["User-Agent"] = TRITON_USER_AGENT
        raw: bytes | None = body.data
    elif body is not None:
        headers["Content-Type"] = "application/json"
        raw = json.dumps(body).encode()
    else:
        raw = None
    event.update(
        # The API's binary media type is */*: every body arrives base64-encoded.
        body=None if raw is None else base64.b64encode(raw).decode(),
        isBase64Encoded=raw is not None,
        resource=resource,
        path=path,
        httpMethod=method,
        queryStringParameters=query,
        multiValueQueryStringParameters=None if query is None
        else {k: [v] for k, v in query.items()},
        pathParameters=params,
        stageVariables=None,
        headers=headers,
        multiValueHeaders={k: [v] for k, v in headers.items()},
    )
    context = event["requestContext"]
    context.update(path=f"/{STAGE}{path}", resourcePath=resource, httpMethod=method, stage=STAGE)
    context["identity"]["userAgent"] = headers["User-Agent"]
    return event


def v2_event(base: dict[str, Any]) -> dict[str, Any]:
    """POST /forward?model=iris through an HTTP API ($default route, no authorizer)."""
    event = copy.deepcopy(base)
    query = {"model": "iris"}
    event.update(
        rawPath="/forward",
        rawQueryString=urlencode(query),
        cookies=[],
        headers={"accept": "application/json", "content-type": "application/json",
                 "host": "abc123.execute-api.us-east-1.amazonaws.com",
                 "user-agent": "curl/8.5.0", "x-forwarded-proto": "https"},
        queryStringParameters=query,
        body=json.dumps(FEATURES[0]),
        isBase64Encoded=False,
    )
    event.pop("pathParameters", None)
    event.pop("stageVariables", None)
    context = event["requestContext"]
    context.pop("authentication", None)
    context.pop("authorizer", None)
    context.update(domainName="abc123.execute-api.us-east-1.amazonaws.com", domainPrefix="abc123")
    context["http"].update(method="POST", path="/forward", sourceIp="203.0.113.7",
                           userAgent="curl/8.5.0")
    return event


def sqs_event(base: dict[str, Any], experiment_id: int) -> dict[str, Any]:
    event = copy.deepcopy(base)
    record = event["Records"][0]
    body = json.dumps({"experiment_id": experiment_id})
    record.update(body=body, md5OfBody=hashlib.md5(body.encode()).hexdigest())
    return event


def task_event(base: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(base)
    record = event["Records"][0]
    body = json.dumps(task)
    record.update(body=body, md5OfBody=hashlib.md5(body.encode()).hexdigest())
    return event


def build() -> dict[str, dict[str, Any]]:
    base_v1 = sam("apigateway", "aws-proxy", "--stage", STAGE)
    events = {name: v1_event(base_v1, *route) for name, route in ROUTES.items()}
    events["forward_v2"] = v2_event(sam("apigateway", "http-api-proxy"))
    events["train_worker"] = sqs_event(sam("sqs", "receive-message", "--queue-name", QUEUE), 1)
    events["ingest_worker"] = task_event(sam("sqs", "receive-message", "--queue-name", INGEST_QUEUE),
                                         {"task": "ingest", "id": "0" * 32})
    events["score_worker"] = task_event(sam("sqs", "receive-message", "--queue-name", BATCH_QUEUE),
                                        {"task": "batch_chunk", "id": "0" * 32 + "-000000"})
    return events


def render(event: dict[str, Any]) -> str:
    return json.dumps(event, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with events/, write nothing")
    args = parser.parse_args(argv)
    out_dir = ROOT / "events"
    events = build()
    stale = []
    for name, event in sorted(events.items()):
        path = out_dir / f"{name}.json"
        text = render(event)
        old = path.read_text() if path.exists() else ""
        if old == text:
            continue
        if args.check:
            stale.append(name)
            sys.stdout.writelines(difflib.unified_diff(
                old.splitlines(True), text.splitlines(True), f"events/{name}.json", "generated"))
        else:
            out_dir.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote events/{name}.json")
    if stale:
        print(f"events out of date: {', '.join(stale)}; run {Path(__file__).relative_to(ROOT)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
