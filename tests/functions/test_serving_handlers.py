"""forward, forward_batch, metadata, models, health through real API Gateway v1 and v2 events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from common import context
from common.domain import ExperimentStatus
from common.names import model_key
from functions.forward import handler as forward_app
from functions.forward_batch import handler as batch_app
from functions.health import handler as health_app
from functions.metadata import handler as metadata_app
from functions.models import handler as models_app
from tests.apigw import invoke

IRIS = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VERSIONS = ["v1", "v2"]


def diabetes_row() -> dict:
    return {"age": 50.0, "sex": "2", "bmi": 27.1, "bp": 95.0, "s1": 180.0, "s2": 110.0,
            "s3": 45.0, "s4": 4.0, "s5": 4.6, "s6": 90.0}


@pytest.mark.parametrize("version", VERSIONS)
def test_health(demo_env: Path, version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_MAX_BODY_BYTES", "65536")
    context.reset()
    reply = invoke(health_app.handler, version, "GET", "/health")
    assert reply.status == 200
    assert reply.json()["status"] == "ok"
    assert reply.json()["max_body_bytes"] == 65536 and reply.json()["max_batch_rows"] == 10_000
    # a monitor's cache-buster is no misspelt parameter (other routes refuse unknown ones)
    assert invoke(health_app.handler, version, "GET", "/health", {"t": "1733300000"}).status == 200


@pytest.mark.parametrize("version", VERSIONS)
def test_models_lists_demo_models(demo_env: Path, version: str) -> None:
    reply = invoke(models_app.handler, version, "GET", "/models")
    assert reply.status == 200
    models = {m["name"]: m for m in reply.json()}
    assert set(models) == {"breast-cancer", "iris", "diabetes", "wine", "digits"}
    assert models["digits"]["input"] == "image"
    assert models["iris"]["task"] == "classification" and models["iris"]["target"] == "species"
    assert models["diabetes"]["task"] == "regression"
    assert {"name": "sex", "kind": "categorical"} in models["diabetes"]["features"]
    assert all(isinstance(m["deployed_experiment_id"], int) for m in models.values())
    assert models["iris"]["rows_total"] == 150 and models["iris"]["dataset_version"] == 1
    assert models["digits"]["image"] == {"width": 8, "height": 8, "mode": "L"}


@pytest.mark.parametrize("version", VERSIONS)
def test_forward_classification(demo_env: Path, version: str) -> None:
    reply = invoke(forward_app.handler, version, "POST", "/forward", {"model": "iris"}, IRIS)
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["model"] == "iris" and isinstance(body["experiment_id"], int)
    assert body["prediction"] == "setosa"
    assert set(body["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert body["probabilities"]["setosa"] == max(body["probabilities"].values())
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4


@pytest.mark.parametrize("version", VERSIONS)
def test_forward_regression_with_categorical(demo_env: Path, version: str) -> None:
    reply = invoke(forward_app.handler, version, "POST", "/forward", {"model": "diabetes"},
                   diabetes_row())
    assert reply.status == 200, reply.body
    body = reply.json()
    assert isinstance(body["prediction"], float) and 20 < body["prediction"] < 400
    assert "probabilities" not in body


def test_forward_v1_plain_text_body(demo_env: Path) -> None:
    from tests.apigw import call, v1_event

    event = v1_event("POST", "/forward", {"model": "iris"}, json.dumps(IRIS),
                     {"Content-Type": "application/json"}, base64_body=False)
    assert call(forward_app.handler, event).json()["prediction"] == "setosa"


@pytest.mark.parametrize("version", VERSIONS)
def test_forward_batch_json_in_order(demo_env: Path, version: str) -> None:
    virginica = {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}
    records = [IRIS, virginica, IRIS]
    reply = invoke(batch_app.handler, version, "POST", "/forward_batch", {"model": "iris"},
                   {"records": records})
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["predictions"] == ["setosa", "virginica", "setosa"]
    assert len(body["probabilities"]) == 3


@pytest.mark.parametrize("version", VERSIONS)
def test_forward_batch_csv(demo_env: Path, version: str) -> None:
    csv_body = "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n50,2,27.1,95,180,110,45,4,4.6,90\n30,1,,80,150,90,60,3,4.2,85\n"
    reply = invoke(batch_app.handler, version, "POST", "/forward_batch", {"model": "diabetes"},
                   csv_body, {"Content-Type": "text/csv"})
    assert reply.status == 200, reply.body
    assert len(reply.json()["predictions"]) == 2  # the empty bmi cell is imputed


@pytest.mark.parametrize("version", VERSIONS)
def test_metadata_is_read_from_the_onnx_file(demo_env: Path, version: str) -> None:
    reply = invoke(metadata_app.handler, version, "GET", "/metadata", {"model": "diabetes"})
    assert reply.status == 200
    meta = reply.json()
    for key in ("commit", "saved_at", "experiment_name", "experiment_id", "model_class", "task",
                "target", "features", "classes", "hyperparameters", "metrics"):
        assert key in meta, key
    assert meta["model_class"] == "catboost" and meta["task"] == "regression"
    assert meta["target"] == "progression"
    assert meta["hyperparameters"]["iterations"] == 200
    assert set(meta["metrics"]) == {"rmse", "mae", "r2"}
    stored = onnx.load_from_string(
        context.backends().models.get(model_key("diabetes", meta["experiment_id"])))
    assert {p.key: p.value for p in stored.metadata_props}["saved_at"] == meta["saved_at"]


# -- errors ---------------------------------------------------------------------------------
BAD_FORWARD = [
    ("malformed json", b"{not json", {"Content-Type": "application/json"}, "malformed JSON"),
    ("wrong content type", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"},
     "content type"),
    ("unknown feature", {**IRIS, "colour": 1}, None, "'colour'"),
    ("missing feature", {k: v for k, v in IRIS.items() if k != "petal_width"}, None, "'petal_width'"),
    ("mistyped feature", {**IRIS, "sepal_length": "wide"}, None, "'sepal_length'"),
    ("boolean as number", {**IRIS, "sepal_length": True}, None, "'sepal_length'"),
    ("not an object", [IRIS], None, "JSON object"),
    ("empty body", b"", {"Content-Type": "application/json"}, "empty"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("case", "body", "headers", "needle"), BAD_FORWARD, ids=[c[0] for c in BAD_FORWARD])
def test_forward_bad_request(demo_env: Path, version: str, case: str, body: object,
                             headers: dict | None, needle: str) -> None:
    reply = invoke(forward_app.handler, version, "POST", "/forward", {"model": "iris"}, body, headers)
    assert reply.status == 400, reply.body
    doc = reply.json()
    assert doc["error"] == "bad request"
    assert needle in doc["detail"]


def test_non_finite_and_float32_overflow_rejected(demo_env: Path) -> None:
    for value, needle in ((1e39, "float32"), (10**400, "")):
        reply = invoke(forward_app.handler, "v1", "POST", "/forward", {"model": "iris"},
                       {**IRIS, "sepal_length": value})
        assert reply.status == 400 and needle in reply.json()["detail"], reply.body
    # JSON has no NaN literal, but Python's json module writes one: it must not slip through.
    raw = json.dumps({**IRIS, "petal_width": float("nan")})
    reply = invoke(forward_app.handler, "v2", "POST", "/forward", {"model": "iris"}, raw,
                   {"Content-Type": "application/json"})
    assert reply.status == 400, reply.body


BAD_BATCH = [
    ("empty batch", {"records": []}, None, "empty"),
    ("records not a list", {"records": {"a": 1}}, None, "array"),
    ("no records key", {"rows": []}, None, "records"),
    ("bad row named", {"records": [IRIS, {**IRIS, "petal_length": "x"}]}, None, "row 1"),
    ("malformed csv", "sepal_length,sepal_width\n1,2,3\n", {"Content-Type": "text/csv"}, "row 0"),
    ("csv unknown column", "sepal_length,sepal_width,petal_length,petal_width,z\n1,2,3,4,5\n",
     {"Content-Type": "text/csv"}, "'z'"),
    ("csv bad number", "sepal_length,sepal_width,petal_length,petal_width\n1,2,x,4\n",
     {"Content-Type": "text/csv"}, "'petal_length' (row 0)"),
    ("wrong content type", "hello", {"Content-Type": "text/plain"}, "content type"),
    ("target sent to forward_batch", {"records": [{**IRIS, "species": "setosa"}]}, None, "/evaluate"),
    ("csv target column", "sepal_length,sepal_width,petal_length,petal_width,species\n1,2,3,4,setosa\n",
     {"Content-Type": "text/csv"}, "/evaluate"),
    ("semicolon csv", "sepal_length;sepal_width;petal_length;petal_width\n1;2;3;4\n",
     {"Content-Type": "text/csv"}, "separated"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("case", "body", "headers", "needle"), BAD_BATCH, ids=[c[0] for c in BAD_BATCH])
def test_forward_batch_bad_request(demo_env: Path, version: str, case: str, body: object,
                                   headers: dict | None, needle: str) -> None:
    reply = invoke(batch_app.handler, version, "POST", "/forward_batch", {"model": "iris"}, body,
                   headers)
    assert reply.status == 400, reply.body
    assert needle in reply.json()["detail"]


@pytest.mark.parametrize("version", VERSIONS)
def test_oversized_batch(demo_env: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setenv("MLFN_MAX_BATCH_ROWS", "5")
    context.reset()
    reply = invoke(batch_app.handler, version, "POST", "/forward_batch", {"model": "iris"},
                   {"records": [IRIS] * 6})
    assert reply.status == 400 and "limit is 5" in reply.json()["detail"]
    # A CSV over the limit is refused for its size before its cells are read: fixing a bad
    # cell would otherwise only lead to this error next.
    rows = "".join(f"{5.1 + i / 10},3.5,1.4,0.2\n" for i in range(6)) + "x,3.5,1.4,0.2\n"
    csv_body = "sepal_length,sepal_width,petal_length,petal_width\n" + rows
    reply = invoke(batch_app.handler, version, "POST", "/forward_batch", {"model": "iris"},
                   csv_body, {"Content-Type": "text/csv"})
    assert reply.status == 400 and reply.json()["detail"] == "the batch has 7 rows; the limit is 5"


@pytest.mark.parametrize("version", VERSIONS)
def test_oversized_body_is_413(demo_env: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setenv("MLFN_MAX_BODY_BYTES", "2048")
    context.reset()
    reply = invoke(batch_app.handler, version, "POST", "/forward_batch", {"model": "iris"},
                   {"records": [IRIS] * 40})
    assert reply.status == 413
    assert reply.json()["error"] == "payload too large"


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_model_404(demo_env: Path, version: str) -> None:
    for handler, method, path, body in (
        (forward_app.handler, "POST", "/forward", IRIS),
        (batch_app.handler, "POST", "/forward_batch", {"records": [IRIS]}),
        (metadata_app.handler, "GET", "/metadata", None),
    ):
        reply = invoke(handler, version, method, path, {"model": "ghost"}, body)
        assert reply.status == 404, (path, reply.body)
        assert reply.json() == {"error": "not found", "detail": "model 'ghost' does not exist"}


@pytest.mark.parametrize("version", VERSIONS)
def test_missing_or_invalid_model_parameter(demo_env: Path, version: str) -> None:
    reply = invoke(forward_app.handler, version, "POST", "/forward", None, IRIS)
    assert reply.status == 400 and "model" in reply.json()["detail"]
    reply = invoke(forward_app.handler, version, "POST", "/forward", {"model": "../etc"}, IRIS)
    assert reply.status == 400 and "invalid model name" in reply.json()["detail"]


def test_model_without_deployment_404(demo_env: Path) -> None:
    context.lifecycle().create_model({"name": "empty", "task": "regression", "target": "y"})
    reply = invoke(forward_app.handler, "v2", "POST", "/forward", {"model": "empty"}, {"a": 1})
    assert reply.status == 404 and "no deployed experiment" in reply.json()["detail"]


def failing_model_bytes(experiment_id: int) -> bytes:
    """A valid ONNX regression model that fails at run time (reshape to 3 values, given 1)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["variable"])],
        "fails",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, None)],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [3, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {
        "experiment_id": str(experiment_id), "task": "regression", "target": "y", "classes": "[]",
        "features": json.dumps([{"name": "x", "kind": "numeric"}]), "model_class": "svm",
        "hyperparameters": "{}", "metrics": "{}", "commit": "unknown", "saved_at": "2026-01-01T00:00:00Z",
        "experiment_name": "broken"})
    return model.SerializeToString()


@pytest.mark.parametrize("version", VERSIONS)
def test_model_failure_is_403_with_contract_wording(demo_env: Path, version: str) -> None:
    life = context.lifecycle()
    life.create_model({"name": "broken", "task": "regression", "target": "y"})
    exp = life.store.create_experiment({"model": "broken", "model_class": "svm"})
    context.backends().models.put(model_key("broken", exp.id), failing_model_bytes(exp.id))
    life.store.update_experiment(exp.id, {"status": ExperimentStatus.succeeded})
    life.deploy(exp.id)
    reply = invoke(forward_app.handler, version, "POST", "/forward", {"model": "broken"}, {"x": 1.0})
    assert reply.status == 403
    doc = reply.json()
    assert doc["error"] == "модель не смогла обработать данные"
    assert "Reshape" in doc["detail"] or "reshape" in doc["detail"].lower()
    assert "Traceback" not in reply.body.decode()


def test_unknown_route_is_json_404(demo_env: Path) -> None:
    reply = invoke(forward_app.handler, "v1", "GET", "/nowhere")
    assert reply.status == 404 and reply.json()["error"] == "not found"


def test_api_key_enforced_when_set(demo_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_API_KEY", "s3cret")
    context.reset()
    assert invoke(forward_app.handler, "v1", "POST", "/forward", {"model": "iris"}, IRIS).status == 401
    ok = invoke(forward_app.handler, "v1", "POST", "/forward", {"model": "iris"}, IRIS,
                {"x-api-key": "s3cret"})
    assert ok.status == 200
    assert invoke(health_app.handler, "v2", "GET", "/health").status == 200


def test_serving_never_imports_training_libraries(demo_env: Path) -> None:
    script = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.apigw import invoke
from functions.forward import handler as app
from functions.forward_batch import handler as batch
r = invoke(app.handler, "v1", "POST", "/forward", {{"model": "diabetes"}}, {json.dumps(diabetes_row())})
assert r.status == 200, r.body
r = invoke(batch.handler, "v2", "POST", "/forward_batch", {{"model": "iris"}}, {{"records": [{json.dumps(IRIS)}]}})
assert r.status == 200, r.body
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "pandas", "scipy", "catboost", "skl2onnx", "dvc", "matplotlib", "tensorboardX", "pyarrow", "fastapi", "starlette", "mangum", "grpc"))
print(json.dumps(heavy))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={"MLFN_DATA_DIR": str(demo_env), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def scaling_model_bytes(experiment_id: int, factor: float) -> bytes:
    """A valid ONNX regression model answering ``factor * x``."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["variable"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("k", TensorProto.FLOAT, [1], [factor])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {
        "experiment_id": str(experiment_id), "task": "regression", "target": "y", "classes": "[]",
        "features": json.dumps([{"name": "x", "kind": "numeric"}]), "model_class": "svm",
        "hyperparameters": "{}", "metrics": "{}", "commit": "unknown",
        "saved_at": "2026-01-01T00:00:00Z", "experiment_name": f"x{factor}"})
    return model.SerializeToString()


def test_stale_pointer_to_a_deleted_experiment_is_reread(demo_env: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another instance deploys a new experiment and deletes the old one while this instance
    still trusts its cached pointer: the request is answered by the new one, not a 404."""
    monkeypatch.setenv("MLFN_DEPLOY_CHECK_SECONDS", "3600")
    context.reset()
    life = context.lifecycle()
    life.create_model({"name": "scale", "task": "regression", "target": "y"})
    ids = []
    for factor in (2.0, 3.0):
        exp = life.store.create_experiment({"model": "scale", "model_class": "svm"})
        context.backends().models.put(model_key("scale", exp.id), scaling_model_bytes(exp.id, factor))
        life.store.update_experiment(exp.id, {"status": ExperimentStatus.succeeded})
        ids.append(exp.id)
    life.deploy(ids[0])
    reply = invoke(forward_app.handler, "v1", "POST", "/forward", {"model": "scale"}, {"x": 1.5})
    assert reply.json()["prediction"] == 3.0
    # "Another instance": the store changes behind this process's cached pointer and sessions.
    life.store.deploy("scale", ids[1], ids[0])
    context.serving().sessions._items.clear()
    life.store.delete_experiment(ids[0])
    context.backends().models.delete(model_key("scale", ids[0]))
    reply = invoke(forward_app.handler, "v2", "POST", "/forward", {"model": "scale"}, {"x": 1.5})
    assert reply.status == 200, reply.body
    assert reply.json()["prediction"] == 4.5 and reply.json()["experiment_id"] == ids[1]
