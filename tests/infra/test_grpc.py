"""The gRPC side of `mlfn serve`: the inference protocol through tritonclient (HTTP with binary
and JSON tensors, and gRPC) on every demo tabular model, the life cycle over mlfn.v1 end to end,
the API key in metadata, health and reflection; and the committed stubs match their protos.

The server runs in a subprocess, and tritonclient in another (tests/infra/triton_checks.py):
tritonclient and the server's generated modules register the same protobuf symbols."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from google.protobuf import json_format, struct_pb2

from infra.grpc_api import mlfn_pb2 as pb
from infra.grpc_api import mlfn_pb2_grpc as rpc
from tests.lifecycle_data import churn_rows
from tests.servers import free_port, start_server, stop

ROOT = Path(__file__).resolve().parents[2]
TABULAR = ("breast-cancer", "iris", "diabetes", "wine")


def start(demo_store: Path, tmp_path_factory: pytest.TempPathFactory,
          api_key: str) -> Iterator[dict[str, str]]:
    """`mlfn serve` on a copy of the demo store, HTTP and gRPC on free ports."""
    data = tmp_path_factory.mktemp("grpc") / "data"
    shutil.copytree(demo_store, data)
    grpc_port = free_port()
    proc, url = start_server(data, env={"MLFN_API_KEY": api_key}, grpc_port=grpc_port)
    yield {"http": url, "grpc": f"127.0.0.1:{grpc_port}", "key": api_key}
    stop(proc)


@pytest.fixture(scope="module")
def server(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """With an API key."""
    yield from start(demo_store, tmp_path_factory, "s3cret")


@pytest.fixture(scope="module")
def open_server(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Without an API key, as the README's examples assume."""
    yield from start(demo_store, tmp_path_factory, "")


def key(server: dict[str, str]) -> list[tuple[str, str]]:
    return [("x-api-key", server["key"])]


def rows_of(model: str, n: int = 40) -> list[dict[str, Any]]:
    from common import demo

    frame = getattr(demo, model.replace("-", "_"))()
    target = {"breast-cancer": "diagnosis", "iris": "species", "diabetes": "progression",
              "wine": "cultivar"}[model]
    records = frame.drop(columns=[target]).head(n).to_dict(orient="records")
    return [{k: (v if isinstance(v, str) else float(v)) for k, v in r.items()} for r in records]


def triton(server: dict[str, str], models: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """tritonclient's view, from a process of its own, the API key in every call's headers."""
    job = {"http": server["http"].removeprefix("http://"), "grpc": server["grpc"],
           "models": models, "headers": {"x-api-key": server["key"]}}
    done = subprocess.run([sys.executable, str(ROOT / "tests/infra/triton_checks.py")],
                          input=json.dumps(job), capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_generated_stubs_match_their_protos(tmp_path: Path) -> None:
    from infra.grpc_api.generate import generate

    for fresh in generate(tmp_path):
        committed = ROOT / fresh.relative_to(tmp_path)
        assert committed.exists() and filecmp.cmp(fresh, committed, shallow=False), (
            f"{committed.relative_to(ROOT)} is stale: run .venv/bin/python infra/grpc_api/generate.py")


def forward_batch(server: dict[str, str], model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    reply = requests.post(f"{server['http']}/forward_batch?model={model}", json={"records": rows},
                          headers={"x-api-key": server["key"]}, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def test_tritonclient_http_binary_json_and_grpc_equal_forward_batch(server: dict[str, str]) -> None:
    models = {m: rows_of(m) for m in TABULAR}
    seen = triton(server, models)
    assert seen["http_live"] and seen["http_ready"] and seen["grpc_live"] and seen["grpc_ready"]
    assert seen["http_server"]["extensions"] == ["binary_tensor_data"]
    assert seen["grpc_server"]["name"] == "mlfn"
    assert seen["without_key"]["http"].startswith("401")
    assert "StatusCode.UNAUTHENTICATED" in seen["without_key"]["grpc"]
    for model, rows in models.items():
        expected = forward_batch(server, model, rows)
        results = seen["models"][model]["results"]
        metadata = seen["models"][model]["metadata"]
        assert results["ready"] == [True, True, True, False]
        assert results["grpc_metadata"]["platform"] == "onnx_onnxv1"
        for how in ("http_binary", "http_json", "grpc", "grpc_version", "http_version"):
            got = results[how]
            if "probabilities" in got:
                assert got["label"] == [str(p) for p in expected["predictions"]], (model, how)
                classes = json.loads(metadata["parameters"]["classes"])
                want = [[p[c] for c in classes] for p in expected["probabilities"]]
                np.testing.assert_allclose(got["probabilities"], want, atol=1e-6)
            else:
                np.testing.assert_allclose(got["prediction"], expected["predictions"], rtol=1e-6)
    errors = seen["errors"]
    assert errors["http_unknown_model"].startswith("404") and "ghost" in errors["http_unknown_model"]
    assert "StatusCode.NOT_FOUND" in errors["grpc_unknown_model"]
    assert errors["http_unknown_version"].startswith("404")
    assert "StatusCode.NOT_FOUND" in errors["grpc_unknown_version"]
    assert "StatusCode.INVALID_ARGUMENT" in errors["grpc_missing_input"]
    assert "missing input" in errors["grpc_missing_input"]


def struct_of(doc: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(doc)
    return out


def doc_of(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def test_the_life_cycle_over_grpc(server: dict[str, str]) -> None:
    """create -> streamed add_data -> retrain -> watch until succeeded -> deploy -> ModelInfer."""
    channel = grpc.insecure_channel(server["grpc"])
    stub = rpc.MlfnStub(channel)
    md = key(server)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListModels(pb.Empty())
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    created = stub.CreateModel(pb.CreateModelRequest(model=struct_of(
        {"name": "churn-grpc", "task": "classification", "target": "churned"})), metadata=md)
    assert doc_of(created.json)["name"] == "churn-grpc"
    with pytest.raises(grpc.RpcError) as taken:
        stub.CreateModel(pb.CreateModelRequest(model=struct_of(
            {"name": "churn-grpc", "task": "classification", "target": "churned"})), metadata=md)
    assert taken.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert taken.value.details() == "model 'churn-grpc' already exists"
    rows = churn_rows(200)
    header = ",".join(rows[0])
    text = (header + "\n" + "".join(",".join(str(r[c]) for c in rows[0]) + "\n" for r in rows)).encode()
    chunks = [text[i:i + 1000] for i in range(0, len(text), 1000)]
    assert len(chunks) > 3
    stream = iter([pb.DataChunk(model="churn-grpc", content_type="text/csv", data=chunks[0]),
                   *(pb.DataChunk(data=c) for c in chunks[1:])])
    added = doc_of(stub.AddData(stream, metadata=md).json)
    assert added["rows_added"] == 200 and added["dataset_version"] == 1
    queued = stub.Retrain(pb.RetrainRequest(model="churn-grpc", request=struct_of(
        {"model_class": "random_forest", "hyperparameters": {"n_estimators": 31}})), metadata=md)
    assert queued.status == "queued" and queued.experiment_id > 0
    statuses = [e.status for e in stub.WatchExperiment(
        pb.ExperimentRequest(experiment_id=queued.experiment_id), metadata=md, timeout=240)]
    assert statuses[-1] == "succeeded" and len(set(statuses)) == len(statuses), statuses
    experiment = stub.GetExperiment(pb.ExperimentRequest(experiment_id=queued.experiment_id),
                                    metadata=md)
    assert doc_of(experiment.json)["hyperparameters"]["n_estimators"] == 31
    deployed = doc_of(stub.Deploy(pb.ExperimentRequest(experiment_id=queued.experiment_id),
                                  metadata=md).json)
    assert deployed["deployed"] == queued.experiment_id
    with pytest.raises(grpc.RpcError) as busy:
        stub.DeleteExperiment(pb.ExperimentRequest(experiment_id=queued.experiment_id), metadata=md)
    assert busy.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    record = {k: v for k, v in rows[0].items() if k != "churned"}
    forward = doc_of(stub.Forward(pb.ForwardRequest(model="churn-grpc", record=struct_of(record)),
                                  metadata=md).json)
    batch = doc_of(stub.ForwardBatch(pb.BatchRequest(model="churn-grpc", records=[struct_of(record)]),
                                     metadata=md).json)
    assert forward["prediction"] == batch["predictions"][0]
    listed = [doc_of(d) for d in stub.ListExperiments(pb.ListExperimentsRequest(model="churn-grpc"),
                                                       metadata=md).items]
    assert [e["experiment_id"] for e in listed] == [queued.experiment_id]
    with pytest.raises(grpc.RpcError) as bad:
        stub.Forward(pb.ForwardRequest(model="churn-grpc", record=struct_of({"nope": 1})), metadata=md)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "unknown feature 'nope'" in bad.value.details()
    # ModelInfer on the deployed experiment, through tritonclient's gRPC client.
    seen = triton(server, {"churn-grpc": [record]})
    got = seen["models"]["churn-grpc"]["results"]["grpc"]
    assert got["label"] == [str(forward["prediction"])]
    # The dataset and the model's deletion, as on REST.
    datasets = doc_of(stub.Datasets(pb.ModelRequest(model="churn-grpc"), metadata=md).json)
    assert [p["version"] for p in datasets["parts"]] == [1]
    with pytest.raises(grpc.RpcError) as running_model:
        stub.RemoveDatasetPart(pb.PartRequest(model="churn-grpc", version=7), metadata=md)
    assert running_model.value.code() is grpc.StatusCode.NOT_FOUND
    stub.DeleteModel(pb.ModelRequest(model="churn-grpc"), metadata=md)
    with pytest.raises(grpc.RpcError) as gone:
        stub.Datasets(pb.ModelRequest(model="churn-grpc"), metadata=md)
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND


def test_rollouts_feedback_and_drift_over_grpc(server: dict[str, str]) -> None:
    """A canary started, served, judged on feedback and ended over mlfn.v1; drift read."""
    stub, md = rpc.MlfnStub(grpc.insecure_channel(server["grpc"])), key(server)
    queued = stub.Retrain(pb.RetrainRequest(model="iris", request=struct_of(
        {"model_class": "logistic_regression"})), metadata=md)
    statuses = [e.status for e in stub.WatchExperiment(
        pb.ExperimentRequest(experiment_id=queued.experiment_id), metadata=md, timeout=240)]
    assert statuses[-1] == "succeeded", statuses
    with pytest.raises(grpc.RpcError) as bad:
        stub.StartRollout(pb.RolloutRequest(experiment_id=queued.experiment_id, model="iris",
                                            sample=10), metadata=md)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "'sample' applies to a shadow" in bad.value.details()
    started = doc_of(stub.StartRollout(pb.RolloutRequest(
        experiment_id=queued.experiment_id, model="iris", canary=50), metadata=md).json)
    assert started["canary"]["experiment_id"] == queued.experiment_id
    assert started["canary"]["share"] == 50 and started["canary"]["guard"] is False
    assert doc_of(stub.Rollout(pb.ModelRequest(model="iris"), metadata=md).json) == started

    rows = rows_of("iris", 40)
    sides = set()
    for i, row in enumerate(rows):
        answer = doc_of(stub.Forward(pb.ForwardRequest(model="iris", record=struct_of(row)),
                                     metadata=[*md, ("x-request-id", f"grpc-{i}")]).json)
        sides.add(int(answer["experiment_id"]))
    assert queued.experiment_id in sides and len(sides) == 2
    outcomes = [struct_of({"request_id": f"grpc-{i}", "label": "setosa"}) for i in range(40)]
    fed = doc_of(stub.Feedback(pb.FeedbackRequest(model="iris", outcomes=outcomes), metadata=md).json)
    assert fed["outcomes"] == fed["matched"] == 40 and fed["unmatched"] == []
    live = doc_of(stub.LiveMetrics(pb.WindowRequest(model="iris"), metadata=md).json)
    roles = {e["role"]: e for e in live["experiments"]}
    assert set(roles) == {"champion", "canary"}
    assert sum(e["with_outcome"] for e in roles.values()) == 40
    drift = doc_of(stub.Drift(pb.DriftRequest(model="iris", experiment_id=queued.experiment_id),
                              metadata=md).json)
    assert drift["experiment_id"] == queued.experiment_id and 0 < drift["rows"] < 40
    with pytest.raises(grpc.RpcError) as since:
        stub.Drift(pb.DriftRequest(model="iris", since="last week"), metadata=md)
    assert since.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "since" in since.value.details()

    ended = doc_of(stub.EndCanary(pb.ModelRequest(model="iris"), metadata=md).json)
    assert ended["canary"] is None and ended["history"][-1]["reason"] == "ended by request"
    with pytest.raises(grpc.RpcError) as none:
        stub.EndShadow(pb.ModelRequest(model="iris"), metadata=md)
    assert none.value.code() is grpc.StatusCode.NOT_FOUND


def test_health_and_reflection(server: dict[str, str]) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(server["grpc"])
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService", "mlfn.v1.Mlfn"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]))
    listed = {s.name for r in replies for s in r.list_services_response.service}
    assert {"inference.GRPCInferenceService", "mlfn.v1.Mlfn", "grpc.health.v1.Health"} <= listed


def test_the_readme_examples_of_the_protocol_section_run(open_server: dict[str, str]) -> None:
    """The README's Python snippets of the protocol section, each in a process of its own."""
    import re

    text = (ROOT / "README.md").read_text()
    section = text.split("## Triton, KServe and MLServer clients", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    port = open_server["http"].rsplit(":", 1)[1]
    grpc_port = open_server["grpc"].rsplit(":", 1)[1]
    outputs = []
    for block in blocks:
        code = block.replace("127.0.0.1:3000", f"127.0.0.1:{port}").replace(
            "127.0.0.1:8081", f"127.0.0.1:{grpc_port}")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout)
    assert "[b'setosa' b'virginica']" in outputs[0] and "['setosa' 'virginica']" in outputs[0]
    assert outputs[1].split()[:3] == ["queued", "running", "succeeded"] or "succeeded" in outputs[1]
    assert "'prediction': 'setosa'" in outputs[1]
