"""Image models through API Gateway v1 and v2 events: multipart forward, zip batches, hostile input."""

from __future__ import annotations

import base64
import io
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from common import context
from common.demo import digits_archive, digits_png
from common.domain import ImageSpec
from common.images import annotated_size
from functions.add_data import handler as add_data
from functions.evaluate import handler as evaluate
from functions.forward import handler as forward
from functions.forward_batch import handler as forward_batch
from functions.models import handler as models
from functions.retrain import handler as retrain
from tests.apigw import invoke, multipart

VERSIONS = ["v1", "v2"]


def digit_jpeg(index: int, size: int = 8) -> bytes:
    """The digit as an RGB JPEG (converted back to grayscale and resized by preprocessing)."""
    out = io.BytesIO()
    image = Image.open(io.BytesIO(digits_png(index))).convert("RGB")
    image.resize((size, size), Image.Resampling.NEAREST).save(out, format="JPEG", quality=95)
    return out.getvalue()


def storage_snapshot() -> tuple:
    b = context.backends()
    return (b.datasets.list(""), b.models.list(""),
            [(e.id, e.status.value) for e in b.experiments.list_experiments()],
            [(p.version, p.key) for p in b.experiments.dataset_parts("digits")])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_forward_image(demo_env: Path, version: str, kind: str) -> None:
    from sklearn.datasets import load_digits

    index = 10  # a 0
    data = digits_png(index) if kind == "png" else digit_jpeg(index, size=64)
    body, headers = multipart({"image": (f"digit.{kind}", data, f"image/{kind}")})
    reply = invoke(forward.handler, version, "POST", "/forward", {"model": "digits"}, body,
                   {**headers, "X-Top-K": "3"})
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["model"] == "digits" and isinstance(doc["experiment_id"], int)
    assert doc["prediction"] == str(load_digits().target[index])
    assert len(doc["probabilities"]) == 3
    values = list(doc["probabilities"].values())
    assert values == sorted(values, reverse=True)
    assert next(iter(doc["probabilities"])) == doc["prediction"]
    png = base64.b64decode(doc["image"])
    assert png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(png)).size == annotated_size(ImageSpec(width=8, height=8)) == (256, 284)


IMAGE_ERRORS = [
    ("missing image field", lambda: multipart({"file": ("d.png", digits_png(0), "image/png")}), "'image'"),
    ("undecodable image", lambda: multipart({"image": ("d.png", b"not an image at all", "image/png")}),
     "not a decodable image"),
    ("raw image body", lambda: (digits_png(0), {"Content-Type": "image/png"}), "field named 'image'"),
    ("wrong content type", lambda: (b"abc", {"Content-Type": "text/plain"}), "content type"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("case", "build", "needle"), IMAGE_ERRORS, ids=[c[0] for c in IMAGE_ERRORS])
def test_forward_image_errors(demo_env: Path, version: str, case: str, build: Callable, needle: str) -> None:
    body, headers = build()
    reply = invoke(forward.handler, version, "POST", "/forward", {"model": "digits"}, body, headers)
    assert reply.status == 400, reply.body
    assert reply.json()["error"] == "bad request" and needle in reply.json()["detail"]


@pytest.mark.parametrize("version", VERSIONS)
def test_image_and_json_sent_to_the_wrong_model(demo_env: Path, version: str) -> None:
    body, headers = multipart({"image": ("d.png", digits_png(0), "image/png")})
    reply = invoke(forward.handler, version, "POST", "/forward", {"model": "iris"}, body, headers)
    assert reply.status == 400 and "tabular" in reply.json()["detail"]
    reply = invoke(forward.handler, version, "POST", "/forward", {"model": "digits"}, {"px": 1})
    assert reply.status == 400 and "takes images" in reply.json()["detail"]
    bad_k = invoke(forward.handler, version, "POST", "/forward", {"model": "digits"}, body,
                   {**headers, "X-Top-K": "zero"})
    assert bad_k.status == 400 and "X-Top-K" in bad_k.json()["detail"]


@pytest.mark.parametrize("version", VERSIONS)
def test_forward_batch_zip_keeps_file_names(demo_env: Path, version: str) -> None:
    archive = digits_archive(range(20, 30))
    reply = invoke(forward_batch.handler, version, "POST", "/forward_batch", {"model": "digits"}, archive,
                   {"Content-Type": "application/zip"})
    assert reply.status == 200, reply.body
    doc = reply.json()
    names = zipfile.ZipFile(io.BytesIO(archive)).namelist()
    assert doc["files"] == names
    truth = [n.split("/")[0] for n in names]
    assert sum(p == t for p, t in zip(doc["predictions"], truth, strict=True)) >= 8
    assert len(doc["probabilities"]) == 10


def test_zip_round_trip_add_data_retrain_evaluate(demo_env: Path) -> None:
    created = invoke(models.handler, "v1", "POST", "/models", None,
                     {"name": "my-digits", "task": "classification", "input": "image", "image_size": [8, 8]})
    assert created.status == 201, created.body
    assert created.json()["image"] == {"width": 8, "height": 8, "mode": "L"}
    train_zip = digits_archive(range(0, 1200))
    body, headers = multipart({"file": ("train.zip", train_zip, "application/zip")})
    added = invoke(add_data.handler, "v2", "PUT", "/add_data", {"model": "my-digits"}, body, headers)
    assert added.status == 200, added.body
    assert added.json()["rows_added"] == 1200
    queued = invoke(retrain.handler, "v1", "PUT", "/retrain", {"model": "my-digits"},
                    {"model_class": "logistic_regression", "deploy": "always"})
    assert queued.status == 202
    context.wait_for_jobs()
    exp = context.lifecycle().store.get_experiment(queued.json()["experiment_id"])
    assert exp.status.value == "succeeded", exp.error
    meta = context.serving().metadata("my-digits")
    assert meta["image"] == {"width": 8, "height": 8, "mode": "L"} and "preprocess" in meta["preprocessing"]
    test_zip = digits_archive(range(1200, 1797))
    scored = invoke(evaluate.handler, "v1", "POST", "/evaluate", {"model": "my-digits"}, test_zip,
                    {"Content-Type": "application/zip"})
    assert scored.status == 200, scored.body
    doc = scored.json()
    assert doc["n"] == 597 and len(doc["files"]) == 597
    assert doc["metrics"]["accuracy"] > 0.85


def test_image_model_regression_and_labels_csv(demo_env: Path) -> None:
    """Flat archives with labels.csv; every class can train on pixels (here CatBoost regression)."""
    assert invoke(models.handler, "v1", "POST", "/models", None,
                  {"name": "ink", "task": "regression", "input": "image", "image_size": 8}).status == 201
    import numpy as np
    from sklearn.datasets import load_digits

    images = load_digits().images[:200]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        lines = ["filename,label"]
        for i in range(200):
            zf.writestr(f"img{i}.png", digits_png(i))
            lines.append(f"img{i}.png,{float(np.mean(images[i])):.4f}")
        zf.writestr("labels.csv", "\n".join(lines))
    added = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "ink"}, buf.getvalue(),
                   {"Content-Type": "application/zip"})
    assert added.status == 200, added.body
    exp = context.lifecycle().retrain("ink", {"model_class": "catboost", "deploy": "always",
                                              "hyperparameters": {"iterations": 50, "depth": 3}})
    context.wait_for_jobs()
    done = context.lifecycle().store.get_experiment(exp.id)
    assert done.status.value == "succeeded", done.error
    assert done.metrics["r2"] > 0.5
    # X-Top-K picks classes: on a regression model it is refused, image or tabular alike.
    body, headers = multipart({"image": ("d.png", digits_png(3), "image/png")})
    refused = invoke(forward.handler, "v1", "POST", "/forward", {"model": "ink"}, body,
                     {**headers, "X-Top-K": "2"})
    assert refused.status == 400 and "applies to classification" in refused.json()["detail"]
    refused = invoke(forward_batch.handler, "v2", "POST", "/forward_batch", {"model": "ink"},
                     buf.getvalue(), {"Content-Type": "application/zip", "X-Top-K": "1"})
    assert refused.status == 400 and "applies to classification" in refused.json()["detail"]


# -- hostile archives: 400 with the reason, storage unchanged -----------------------------------
def zip_with(entries: list[tuple[str, bytes]], symlink: str | None = None,
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def bomb_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (8000, 8000)).save(out, format="PNG")  # 64 Mpx, a few KB compressed
    return out.getvalue()


def zip_bomb_entry() -> bytes:
    return zip_with([("1/a.png", digits_png(1)), ("1/zeros.png", b"\0" * 100_000)])


HOSTILE = [
    ("absolute path", lambda: zip_with([("/1/a.png", digits_png(1))]), "absolute path"),
    ("dot-dot", lambda: zip_with([("1/../../evil.png", digits_png(1))]), "'..'"),
    ("symlink", lambda: zip_with([("1/a.png", digits_png(1))], symlink="1/link.png"), "symbolic link"),
    ("too many entries", lambda: zip_with([(f"1/{i}.png", digits_png(1)) for i in range(12)]), "entries"),
    ("total size", lambda: zip_with([(f"1/{i}.png", digits_png(1) + b"\0" * 40_000) for i in range(5)],
                                    compression=zipfile.ZIP_STORED), "unpacks to more than"),
    ("compression ratio", zip_bomb_entry, "compression ratio"),
    ("not an image", lambda: zip_with([("1/a.png", digits_png(1)), ("1/b.png", b"garbage bytes")]),
     "not a decodable image"),
    ("decompression bomb image", lambda: zip_with([("1/big.png", bomb_png())], compression=zipfile.ZIP_STORED),
     "decompression bomb"),
    ("labels.csv lists a missing file", lambda: zip_with([("a.png", digits_png(1)),
                                                         ("labels.csv", b"filename,label\na.png,1\nb.png,2\n")]),
     "mismatched labels"),
    ("image not in labels.csv", lambda: zip_with([("a.png", digits_png(1)), ("b.png", digits_png(2)),
                                                 ("labels.csv", b"filename,label\na.png,1\n")]),
     "mismatched labels"),
    ("unlabelled flat image", lambda: zip_with([("a.png", digits_png(1))]), "has no label"),
    ("not a zip", lambda: b"PK\x03\x04 but not really a zip archive", "not a zip"),
]


@pytest.fixture
def tight_limits(demo_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_ARCHIVE_MAX_ENTRIES", "10")
    monkeypatch.setenv("MLFN_ARCHIVE_MAX_BYTES", "150000")
    context.reset()


@pytest.mark.parametrize(("case", "build", "needle"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_archives_are_refused_before_any_write(tight_limits: None, case: str, build: Callable,
                                                       needle: str) -> None:
    before = storage_snapshot()
    archive = build()
    for handler, method, path in ((add_data.handler, "PUT", "/add_data"),
                                  (evaluate.handler, "POST", "/evaluate")):
        reply = invoke(handler, "v1", method, path, {"model": "digits"}, archive,
                       {"Content-Type": "application/zip"})
        assert reply.status == 400, (case, reply.body)
        assert needle in reply.json()["detail"], reply.json()
    assert storage_snapshot() == before


def test_zip_sent_to_tabular_model(demo_env: Path) -> None:
    before = storage_snapshot()
    reply = invoke(add_data.handler, "v2", "PUT", "/add_data", {"model": "iris"}, digits_archive(range(3)),
                   {"Content-Type": "application/zip"})
    assert reply.status == 400 and "tabular" in reply.json()["detail"]
    reply = invoke(add_data.handler, "v2", "PUT", "/add_data", {"model": "digits"},
                   {"records": [{"label": "1"}]})
    assert reply.status == 400 and "takes images" in reply.json()["detail"]
    assert storage_snapshot() == before


def test_model_failing_on_a_valid_image_is_403(demo_env: Path) -> None:
    import json

    from onnx import TensorProto, helper

    from common.domain import ExperimentStatus
    from common.names import model_key

    life = context.lifecycle()
    life.create_model({"name": "broken-eye", "task": "regression", "input": "image", "image_size": 8})
    exp = life.store.create_experiment({"model": "broken-eye", "model_class": "svm"})
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["pixels", "shape"], ["variable"])], "fails",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, None)],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [3, -1])])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(onnx_model, {
        "experiment_id": str(exp.id), "task": "regression", "target": "label", "classes": "[]",
        "features": "[]", "image": json.dumps({"width": 8, "height": 8, "mode": "L"}), "model": "broken-eye"})
    context.backends().models.put(model_key("broken-eye", exp.id), onnx_model.SerializeToString())
    life.store.update_experiment(exp.id, {"status": ExperimentStatus.succeeded})
    life.deploy(exp.id)
    body, headers = multipart({"image": ("d.png", digits_png(3), "image/png")})
    reply = invoke(forward.handler, "v2", "POST", "/forward", {"model": "broken-eye"}, body, headers)
    assert reply.status == 403
    assert reply.json()["error"] == "модель не смогла обработать данные"


@pytest.mark.parametrize("model_class", ["random_forest", "svm", "logistic_regression", "catboost"])
def test_every_class_trains_on_pixels_through_the_parity_gate(demo_env: Path, model_class: str) -> None:
    life = context.lifecycle()
    life.create_model({"name": "px", "task": "classification", "input": "image", "image_size": 8})
    life.add_images("px", digits_archive(range(400)))
    params = {"random_forest": {"n_estimators": 31}, "catboost": {"iterations": 60, "depth": 4}}
    done = life.train_now("px", {"model_class": model_class, "deploy": "always",
                                 "hyperparameters": params.get(model_class, {})})
    assert done.status.value == "succeeded", done.error
    assert done.metrics["accuracy"] > 0.75
    meta = context.serving().metadata("px")
    assert meta["model_class"] == model_class and meta["image"]["width"] == 8
    assert meta["parity"]["max_proba_diff"] < 1e-4
    body, headers = multipart({"image": ("d.png", digits_png(1600), "image/png")})
    reply = invoke(forward.handler, "v1", "POST", "/forward", {"model": "px"}, body, headers)
    assert reply.status == 200 and reply.json()["experiment_id"] == done.id
