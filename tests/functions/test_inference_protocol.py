"""The Open Inference Protocol v2 over REST (functions/inference): every route through real API
Gateway events, answered alike by the Lambda entry point and the FastAPI adapter; JSON and
binary tensors; inputs as tritonclient and MLServer's pandas codec send them; predictions equal
/forward_batch's; errors are the protocol's {"error": ...} with the documented statuses."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common import context
from functions.forward_batch import handler as batch_app
from functions.inference import handler as inference_app
from tests.apigw import call, invoke, v1_event, v2_event
from tests.functions.test_adapters import fastapi_handler

IRIS_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])


def per_feature(rows: np.ndarray = ROWS, datatype: str = "FP32", shape1: bool = True) -> list[dict]:
    return [{"name": n, "datatype": datatype, "shape": [len(rows), 1] if shape1 else [len(rows)],
             "data": rows[:, j].tolist()} for j, n in enumerate(IRIS_NAMES)]


def binary_body(inputs: list[tuple[str, str, np.ndarray]], header: dict[str, Any] | None = None
                ) -> tuple[bytes, dict[str, str]]:
    """A binary-tensor request as tritonclient builds it: JSON header, then the raw tensors."""
    entries, blobs = [], []
    for name, datatype, array in inputs:
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1))
        else:
            raw = np.ascontiguousarray(array).tobytes()
        entries.append({"name": name, "datatype": datatype, "shape": list(array.shape),
                        "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    doc = json.dumps({"inputs": entries, **(header or {"parameters": {"binary_data_output": True}})})
    head = doc.encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


def read_binary(reply_body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """The outputs of a binary answer, decoded as tritonclient decodes them."""
    length = int(headers["inference-header-content-length"])
    doc = json.loads(reply_body[:length])
    pos, out = length, {}
    for output in doc["outputs"]:
        size = output["parameters"]["binary_data_size"]
        blob = reply_body[pos:pos + size]
        pos += size
        if output["datatype"] == "BYTES":
            values, i = [], 0
            while i < len(blob):
                (n,) = struct.unpack_from("<I", blob, i)
                values.append(blob[i + 4:i + 4 + n].decode())
                i += 4 + n
            out[output["name"]] = values
        else:
            out[output["name"]] = np.frombuffer(blob, dtype="<f4").reshape(output["shape"])
    assert pos == len(reply_body)
    return out


def infer(model: str, body: Any, headers: dict[str, str] | None = None, version: str = "v1",
          path: str | None = None) -> Any:
    return invoke(inference_app.handler, version, "POST", path or f"/v2/models/{model}/infer",
                  None, body, headers)


def batch_of(model: str, records: list[dict]) -> dict[str, Any]:
    reply = invoke(batch_app.handler, "v1", "POST", "/forward_batch", {"model": model},
                   {"records": records})
    assert reply.status == 200, reply.body
    return reply.json()


def test_server_routes(demo_env: Path) -> None:
    assert invoke(inference_app.handler, "v1", "GET", "/v2").json() == {
        "name": "mlfn", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    assert invoke(inference_app.handler, "v2", "GET", "/v2/health/live").json() == {"live": True}
    assert invoke(inference_app.handler, "v1", "GET", "/v2/health/ready").json() == {"ready": True}


def test_model_metadata_and_readiness(demo_env: Path) -> None:
    meta = invoke(inference_app.handler, "v1", "GET", "/v2/models/wine").json()
    deployed = meta["parameters"]["experiment_id"]
    assert meta["platform"] == "onnx_onnxv1" and meta["versions"] == [str(deployed)]
    kinds = {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]}
    assert kinds["colour"] == ("BYTES", [-1, 1]) and kinds["alcohol"] == ("FP32", [-1, 1])
    assert meta["outputs"] == [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                               {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    assert json.loads(meta["parameters"]["classes"]) == ["cultivar_0", "cultivar_1", "cultivar_2"]
    diabetes = invoke(inference_app.handler, "v2", "GET", "/v2/models/diabetes").json()
    assert diabetes["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
    digits = invoke(inference_app.handler, "v1", "GET", "/v2/models/digits").json()
    assert digits["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    versioned = invoke(inference_app.handler, "v1", "GET",
                       f"/v2/models/wine/versions/{deployed}").json()
    assert versioned == meta
    ready = invoke(inference_app.handler, "v1", "GET", "/v2/models/wine/ready")
    assert ready.status == 200 and ready.json() == {"name": "wine", "ready": True}
    assert invoke(inference_app.handler, "v1", "GET",
                  f"/v2/models/wine/versions/{deployed}/ready").status == 200


@pytest.mark.parametrize("path,detail", [
    ("/v2/models/ghost", "model 'ghost' does not exist"),
    ("/v2/models/ghost/ready", "model 'ghost' does not exist"),
    ("/v2/models/iris/versions/999999", "has no version 999999"),
    ("/v2/models/iris/versions/abc", "has no version 'abc'"),
    ("/v2/models/iris/versions/1", "has no version 1"),  # experiment 1 is breast-cancer's
])
def test_unknown_models_and_versions_are_404(demo_env: Path, path: str, detail: str) -> None:
    reply = invoke(inference_app.handler, "v1", "GET", path)
    assert reply.status == 404 and set(reply.json()) == {"error"}, reply.body
    assert detail in reply.json()["error"]
    infer_reply = infer("", {"inputs": per_feature()}, path=path.removesuffix("/ready") + "/infer")
    assert infer_reply.status == 404 and detail in infer_reply.json()["error"]


def test_json_infer_equals_forward_batch(demo_env: Path) -> None:
    reply = infer("iris", {"id": "r-1", "inputs": per_feature()})
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["id"] == "r-1" and doc["model_name"] == "iris"
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["shape"] == [3]
    assert outputs["probabilities"]["shape"] == [3, 3]
    batch = batch_of("iris", [dict(zip(IRIS_NAMES, r, strict=True)) for r in ROWS.tolist()])
    assert outputs["label"]["data"] == batch["predictions"]
    assert doc["model_version"] == str(batch["experiment_id"])
    expected = [[p[c] for c in ("setosa", "versicolor", "virginica")] for p in batch["probabilities"]]
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (3, 3)), expected,
                               atol=1e-6)


def test_binary_infer_as_tritonclient_sends_it(demo_env: Path) -> None:
    """Binary inputs, binary outputs, no Content-Type, base64 through API Gateway (v1 and v2)."""
    inputs = [(n, "FP32", ROWS[:, j:j + 1].astype(np.float32)) for j, n in enumerate(IRIS_NAMES)]
    body, headers = binary_body(inputs)
    batch = batch_of("iris", [dict(zip(IRIS_NAMES, r, strict=True)) for r in ROWS.tolist()])
    for version in ("v1", "v2"):
        reply = infer("iris", body, headers, version)
        assert reply.status == 200, reply.body
        assert reply.headers["content-type"] == "application/octet-stream"
        out = read_binary(reply.body, reply.headers)
        assert out["label"] == batch["predictions"]
        assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == (3, 3)
    # One output binary, the other JSON: the output's own setting wins over the request's.
    body, headers = binary_body(inputs, {"outputs": [
        {"name": "label", "parameters": {"binary_data": False}}, {"name": "probabilities"}],
        "parameters": {"binary_data_output": True}})
    doc_length = int(infer("iris", body, headers).headers["inference-header-content-length"])
    reply = infer("iris", body, headers)
    header = json.loads(reply.body[:doc_length])
    assert header["outputs"][0]["data"] == batch["predictions"]
    assert header["outputs"][1]["parameters"]["binary_data_size"] == 3 * 3 * 4


def test_inputs_as_mlserver_pandas_codec_and_as_one_matrix(demo_env: Path) -> None:
    """[N] columns with parameters.content_type "pd"; categories as BYTES; one [N, n] FP64."""
    wine = {"alcohol": 13.2, "malic_acid": 1.8, "flavanoids": 2.8, "proline": 1050.0,
            "od280_od315": 3.1, "colour": "red", "hue": "amber"}
    meta = invoke(inference_app.handler, "v1", "GET", "/v2/models/wine").json()
    inputs = []
    for spec in meta["inputs"]:
        value = wine.get(spec["name"], 1.0)
        if spec["datatype"] == "BYTES":
            inputs.append({"name": spec["name"], "datatype": "BYTES", "shape": [2],
                           "parameters": {"content_type": "str"}, "data": [value, value]})
        else:
            inputs.append({"name": spec["name"], "datatype": "FP64", "shape": [2],
                           "data": [value, value]})
    reply = infer("wine", {"parameters": {"content_type": "pd"}, "inputs": inputs})
    assert reply.status == 200, reply.body
    record = {s["name"]: wine.get(s["name"], 1.0) for s in meta["inputs"]}
    assert [o for o in reply.json()["outputs"] if o["name"] == "label"][0]["data"] == \
        batch_of("wine", [record, record])["predictions"]
    # The all-numeric iris model also takes one [N, 4] tensor in the metadata's feature order.
    order = [i["name"] for i in invoke(inference_app.handler, "v1", "GET", "/v2/models/iris").json()["inputs"]]
    matrix = ROWS[:, [IRIS_NAMES.index(n) for n in order]]
    body, headers = binary_body([("input-0", "FP64", matrix.astype("<f8"))])
    out = read_binary(infer("iris", body, headers).body, infer("iris", body, headers).headers)
    assert out["label"] == batch_of("iris", [dict(zip(IRIS_NAMES, r, strict=True)) for r in ROWS.tolist()])["predictions"]


def test_regression_and_image_models(demo_env: Path) -> None:
    row = {"age": 50.0, "sex": "2", "bmi": 27.1, "bp": 95.0, "s1": 180.0, "s2": 110.0,
           "s3": 45.0, "s4": 4.0, "s5": 4.6, "s6": 90.0}
    inputs = [{"name": k, "datatype": "BYTES" if isinstance(v, str) else "FP32", "shape": [1, 1],
               "data": [v]} for k, v in row.items()]
    doc = infer("diabetes", {"inputs": inputs}).json()
    (prediction,) = doc["outputs"]
    assert prediction["name"] == "prediction" and prediction["shape"] == [1]
    assert prediction["data"][0] == pytest.approx(batch_of("diabetes", [row])["predictions"][0], rel=1e-6)
    pixels = np.zeros((2, 64), dtype=np.float32)
    pixels[:, 4::8] = 1.0
    body, headers = binary_body([("pixels", "FP32", pixels)])
    reply = infer("digits", body, headers)
    assert reply.status == 200, reply.body
    assert len(read_binary(reply.body, reply.headers)["label"]) == 2


def test_missing_values_and_numbers_checked_as_forward_checks_them(demo_env: Path) -> None:
    rows = ROWS.copy()
    rows[0, 1] = np.nan  # a missing value, imputed in the graph as a JSON null is
    inputs = [(n, "FP32", rows[:, j:j + 1].astype(np.float32)) for j, n in enumerate(IRIS_NAMES)]
    body, headers = binary_body(inputs)
    assert infer("iris", body, headers).status == 200
    for bad, words in ((np.inf, "(row 1): inf is not a finite number"),
                       (1e39, "(row 1): 1e+39 is outside the float32 range")):
        rows = ROWS.copy()
        rows[1, 2] = bad
        body, headers = binary_body([(n, "FP64", rows[:, j:j + 1]) for j, n in enumerate(IRIS_NAMES)])
        reply = infer("iris", body, headers)
        assert reply.status == 400 and reply.json() == {"error": f"input 'petal_length' {words}"}


@pytest.mark.parametrize("body,headers,words", [
    ("{nope", None, "malformed JSON"),
    ({"inputs": []}, None, "'inputs' must be a non-empty list"),
    ({"inputs": [{"name": "sepal_length", "datatype": "FP32", "shape": [1, 1]}]}, None,
     "has neither 'data' nor parameters.binary_data_size"),
    ({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}, None,
     "unknown datatype 'FP99'"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}, None,
     "shape must be a list of non-negative integers"),
    ({"inputs": per_feature()[:2]}, None, "missing inputs 'petal_length', 'petal_width'"),
    ({"inputs": [*per_feature(), {"name": "colour", "datatype": "BYTES", "shape": [3, 1],
                                  "data": ["a", "b", "c"]}]}, None, "input 'colour' is not a feature"),
    ({"inputs": [{**per_feature()[0], "shape": [2, 1]}, *per_feature()[1:]]}, None,
     "2 values do not make shape" if False else "3 values do not make shape [2, 1]"),
    ({"inputs": [{**per_feature()[0], "datatype": "BYTES",
                  "data": ["1", "2", "3"]}, *per_feature()[1:]]}, None,
     "input 'sepal_length' is numeric: send FP32, FP64 or an integer type, not BYTES"),
    ({"inputs": per_feature(), "outputs": [{"name": "logits"}]}, None,
     "output 'logits' does not exist"),
    ({"inputs": per_feature()}, {"Inference-Header-Content-Length": "99999"},
     "header Inference-Header-Content-Length must be the length of the JSON part"),
    ({"inputs": per_feature()}, {"Inference-Header-Content-Length": "0"},
     "without a JSON header"),
])
def test_invalid_requests_are_400_naming_what_is_wrong(demo_env: Path, body: Any,
                                                      headers: dict | None, words: str) -> None:
    reply = infer("iris", body, headers)
    assert reply.status == 400, reply.body
    assert set(reply.json()) == {"error"} and words in reply.json()["error"], reply.json()


def test_binary_sizes_that_do_not_add_up(demo_env: Path) -> None:
    inputs = [(n, "FP32", ROWS[:, j:j + 1].astype(np.float32)) for j, n in enumerate(IRIS_NAMES)]
    body, headers = binary_body(inputs)
    reply = infer("iris", body + b"\x00" * 4, headers)
    assert reply.status == 400 and "4 bytes of binary data are not claimed" in reply.json()["error"]
    reply = infer("iris", body[:-2], headers)
    assert reply.status == 400 and "runs past the end of the binary data" in reply.json()["error"]
    broken, headers = binary_body([("colour", "BYTES", np.array([b"red"], dtype=object))])
    length = int(headers["Inference-Header-Content-Length"])
    truncated = broken[:length] + struct.pack("<I", 99) + b"red"
    doc = json.loads(broken[:length])
    doc["inputs"][0]["parameters"]["binary_data_size"] = 7
    head = json.dumps(doc).encode()
    reply = infer("wine", head + truncated[length:], {"Inference-Header-Content-Length": str(len(head))})
    assert reply.status == 400 and "BYTES element 0 says 99 bytes" in reply.json()["error"]


def test_same_limits_as_forward_batch(demo_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_MAX_BATCH_ROWS", "2")
    context.reset()
    reply = infer("iris", {"inputs": per_feature()})
    assert reply.status == 400 and reply.json() == {"error": "the batch has 3 rows; the limit is 2"}
    monkeypatch.setenv("MLFN_MAX_BODY_BYTES", "1024")
    context.reset()
    big = np.tile(ROWS, (40, 1))
    reply = infer("iris", {"inputs": per_feature(big)})
    assert reply.status == 413 and "the limit is 1024" in reply.json()["error"]


def test_api_key_is_required_but_not_for_health(demo_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_API_KEY", "s3cret")
    context.reset()
    assert invoke(inference_app.handler, "v1", "GET", "/v2/health/live").status == 200
    assert invoke(inference_app.handler, "v1", "GET", "/v2/health/ready").status == 200
    refused = invoke(inference_app.handler, "v1", "GET", "/v2/models/iris")
    assert refused.status == 401 and refused.json() == {"error": "missing or wrong x-api-key header"}
    assert invoke(inference_app.handler, "v1", "GET", "/v2/models/iris", None, None,
                  {"x-api-key": "s3cret"}).status == 200


CASES: list[tuple[str, str, Any, dict[str, str] | None]] = [
    ("GET", "/v2", None, None),
    ("GET", "/v2/health/live", None, None),
    ("GET", "/v2/health/ready", None, None),
    ("GET", "/v2/models/wine", None, None),
    ("GET", "/v2/models/wine/ready", None, None),
    ("GET", "/v2/models/wine/versions/4", None, None),
    ("GET", "/v2/models/wine/versions/4/ready", None, None),
    ("GET", "/v2/models/ghost", None, None),
    ("POST", "/v2/models/iris/infer", {"inputs": per_feature()}, None),
    ("POST", "/v2/models/iris/infer", "binary", None),
    ("POST", "/v2/models/iris/versions/2/infer", {"inputs": per_feature()}, None),
    ("POST", "/v2/models/iris/infer", {"inputs": []}, None),
    ("POST", "/v2/models/iris/infer", "{nope", None),
    ("DELETE", "/v2/models/iris", None, None),
]


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]} {str(c[2])[:12]}" for c in CASES])
def test_same_answer_from_lambda_and_fastapi(demo_env: Path, version: str, case: tuple) -> None:
    from infra.local.cli import lambda_context

    method, path, body, headers = case
    headers = dict(headers or {})
    if body == "binary":
        body, extra = binary_body([(n, "FP32", ROWS[:, j:j + 1].astype(np.float32))
                                   for j, n in enumerate(IRIS_NAMES)])
        headers.update(extra)
    raw = json.dumps(body) if isinstance(body, dict) else body
    if isinstance(raw, str):
        raw = raw.encode()
    make = v1_event if version == "v1" else v2_event
    event = make(method, path, None, raw, headers, base64_body=True)
    ctx = lambda_context("inference")
    ours = inference_app.handler(json.loads(json.dumps(event)), ctx)
    theirs = fastapi_handler("inference")(json.loads(json.dumps(event)), ctx)
    assert ours == theirs
    assert ours["statusCode"] < 500
    reply = call(inference_app.handler, event)
    if reply.status >= 400:
        assert set(reply.json()) == {"error"}
