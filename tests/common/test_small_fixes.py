"""Small defects, each pinned by a test through real API Gateway events: X-Top-K on every
classification answer, regression metrics of huge targets, control characters in a model's
target, and `make ui PORT=`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from common.inference.metrics import regression_metrics
from functions.evaluate import handler as evaluate
from functions.forward import handler as forward
from functions.forward_batch import handler as forward_batch
from functions.models import handler as models
from tests.apigw import invoke

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ["v1", "v2"]
IRIS = {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 5.1, "petal_width": 1.6}
IRIS_CSV = "sepal_length,sepal_width,petal_length,petal_width\n6.0,2.7,5.1,1.6\n5.1,3.5,1.4,0.2\n"
DIABETES = {"age": 50.0, "sex": "2", "bmi": 27.1, "bp": 95.0, "s1": 180.0, "s2": 110.0,
            "s3": 45.0, "s4": 4.0, "s5": 4.6, "s6": 90.0}
DIABETES_HEADER = "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,progression\n"
DIABETES_ROW = "50,2,27,95,180,110,45,4,4.6,90"
JSON = {"Content-Type": "application/json"}
CSV = {"Content-Type": "text/csv"}


def ranked(probabilities: dict[str, float]) -> bool:
    values = list(probabilities.values())
    return values == sorted(values, reverse=True)


# -- X-Top-K -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_top_k_applies_to_tabular_forward(demo_env: Path, version: str) -> None:
    everything = invoke(forward.handler, version, "POST", "/forward", {"model": "iris"}, IRIS).json()
    reply = invoke(forward.handler, version, "POST", "/forward", {"model": "iris"}, IRIS,
                   {"X-Top-K": "2"})
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert len(everything["probabilities"]) == 3 and len(doc["probabilities"]) == 2
    assert ranked(doc["probabilities"]) and next(iter(doc["probabilities"])) == doc["prediction"]
    best = sorted(everything["probabilities"].items(), key=lambda kv: kv[1], reverse=True)[:2]
    assert doc["probabilities"] == dict(best)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("body", "headers"), [({"records": [IRIS, IRIS]}, JSON), (IRIS_CSV, CSV)],
                         ids=["json", "csv"])
def test_top_k_applies_to_tabular_forward_batch(demo_env: Path, version: str, body: object,
                                                headers: dict) -> None:
    reply = invoke(forward_batch.handler, version, "POST", "/forward_batch", {"model": "iris"}, body,
                   {**headers, "X-Top-K": "1"})
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert [list(p) for p in doc["probabilities"]] == [[p] for p in doc["predictions"]]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("value", ["0", "-1", "1.5", "two", ""])
def test_bad_top_k_is_refused_on_tabular_routes(demo_env: Path, version: str, value: str) -> None:
    for handler, path, body in ((forward.handler, "/forward", IRIS),
                                (forward_batch.handler, "/forward_batch", {"records": [IRIS]})):
        reply = invoke(handler, version, "POST", path, {"model": "iris"}, body, {"X-Top-K": value})
        assert reply.status == 400, (path, reply.body)
        assert "X-Top-K must be a positive integer" in reply.json()["detail"]


@pytest.mark.parametrize("version", VERSIONS)
def test_top_k_on_a_regression_model_is_refused(demo_env: Path, version: str) -> None:
    for handler, path, body, headers in (
        (forward.handler, "/forward", DIABETES, JSON),
        (forward_batch.handler, "/forward_batch", {"records": [DIABETES]}, JSON),
        (forward_batch.handler, "/forward_batch", DIABETES_HEADER.replace(",progression", "")
         + DIABETES_ROW + "\n", CSV),
    ):
        reply = invoke(handler, version, "POST", path, {"model": "diabetes"}, body,
                       {**headers, "X-Top-K": "1"})
        assert reply.status == 400, (path, reply.body)
        assert "applies to classification" in reply.json()["detail"]
        plain = invoke(handler, version, "POST", path, {"model": "diabetes"}, body, headers)
        assert plain.status == 200, plain.body


# -- regression metrics of huge targets ----------------------------------------------------------


def test_regression_metrics_of_huge_values_are_finite() -> None:
    rng = np.random.default_rng(3)
    y_unit, pred_unit = rng.normal(size=50), rng.normal(size=50)
    expected = regression_metrics(y_unit, pred_unit)
    for scale in (1e300, -1e300, 1e-300):
        ours = regression_metrics(y_unit * scale, pred_unit * scale)
        assert ours["rmse"] == pytest.approx(expected["rmse"] * abs(scale), rel=1e-12)
        assert ours["mae"] == pytest.approx(expected["mae"] * abs(scale), rel=1e-12)
        assert ours["r2"] == pytest.approx(expected["r2"], rel=1e-12)
    # errors beyond float64 although every value is finite: rmse still representable
    y = np.array([1.7e308, -1.7e308, 0, 0, 0, 0, 0, 0])
    pred = np.array([-1.7e308, 0, 0, 0, 0, 0, 0, 0])
    assert regression_metrics(y, pred)["rmse"] == pytest.approx(np.sqrt((3.4**2 + 1.7**2) / 8) * 1e308)


def test_regression_metrics_beyond_float64_name_the_row() -> None:
    from common.inference.metrics import MetricOverflow

    with pytest.raises(MetricOverflow) as caught:
        regression_metrics(np.array([0.0, 1.7e308, -1.7e308]), np.array([0.0, -1.7e308, 1.7e308]))
    assert caught.value.metric == "rmse" and caught.value.row == 1
    with pytest.raises(MetricOverflow) as caught:  # r2 = 1 - ~1e404
        regression_metrics(np.array([0.0, 1e-200]), np.array([150.0, 160.0]))
    assert caught.value.metric == "r2" and caught.value.row == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_evaluate_refuses_targets_beyond_float32(demo_env: Path, version: str) -> None:
    for value in ("1e300", "-1e300", "3.5e38"):
        body = DIABETES_HEADER + f"{DIABETES_ROW},100\n{DIABETES_ROW},{value}\n"
        reply = invoke(evaluate.handler, version, "POST", "/evaluate", {"model": "diabetes"}, body, CSV)
        assert reply.status == 400, reply.body
        detail = reply.json()["detail"]
        assert "'progression' (row 1)" in detail and "float32 range" in detail, detail
    records = [{**DIABETES, "progression": 100}, {**DIABETES, "progression": 1e300}]
    reply = invoke(evaluate.handler, version, "POST", "/evaluate", {"model": "diabetes"},
                   {"records": records})
    assert reply.status == 400 and "float32 range" in reply.json()["detail"], reply.body


@pytest.mark.parametrize("version", VERSIONS)
def test_evaluate_metrics_are_finite_or_a_400(demo_env: Path, version: str) -> None:
    body = DIABETES_HEADER + f"{DIABETES_ROW},3.4e38\n{DIABETES_ROW},-3.4e38\n"
    reply = invoke(evaluate.handler, version, "POST", "/evaluate", {"model": "diabetes"}, body, CSV)
    assert reply.status == 200, reply.body
    metrics = reply.json()["metrics"]
    assert metrics["rmse"] == pytest.approx(3.4e38, rel=1e-6) and metrics["r2"] == pytest.approx(0, abs=1e-6)
    # targets that hardly vary: r2 is about -1e404, which float64 cannot hold
    body = DIABETES_HEADER + f"{DIABETES_ROW},0\n{DIABETES_ROW},1e-200\n"
    reply = invoke(evaluate.handler, version, "POST", "/evaluate", {"model": "diabetes"}, body, CSV)
    assert reply.status == 400, reply.body
    detail = reply.json()["detail"]
    assert "target 'progression' (row" in detail and "r2" in detail and "float64" in detail, detail


# -- control characters in a model's target ------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("target", "code"), [("churn\x00ed", "U+0000"), ("line\nbreak", "U+000A"),
                                              ("tab\t", "U+0009"), ("del\x7f", "U+007F"),
                                              ("\x1f", "U+001F")])
def test_create_model_refuses_control_characters_in_target(demo_env: Path, version: str,
                                                           target: str, code: str) -> None:
    from common import context

    for extra in ({}, {"input": "image"}):
        body = {"name": "churn", "task": "classification", "target": target, **extra}
        reply = invoke(models.handler, version, "POST", "/models", None, body)
        assert reply.status == 400, reply.body
        detail = reply.json()["detail"]
        assert "'target'" in detail and code in detail, detail
    assert "churn" not in {m.name for m in context.backends().experiments.list_models()}
    ok = {"name": "churn", "task": "classification", "target": "churned — ü"}
    assert invoke(models.handler, version, "POST", "/models", None, ok).status == 201


# -- make ui PORT= -------------------------------------------------------------------------------


def make_dry_run(*args: str, env: dict[str, str] | None = None) -> str:
    import os

    # -o: treat the venv as installed, so that only the target's own command is printed
    done = subprocess.run(["make", "-n", "-o", ".venv/.installed", *args], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_ui_and_serve_take_their_own_ports() -> None:
    assert "--server.port 8502" in make_dry_run("ui", "PORT=8502")
    assert "--server.port 8501" in make_dry_run("ui")
    assert "--server.port 8600" in make_dry_run("ui", "UI_PORT=8600")
    # an exported PORT is the API's: it never moves the UI onto it
    assert "--server.port 8501" in make_dry_run("ui", env={"PORT": "3000"})
    assert "--port 3001" in make_dry_run("serve", "PORT=3001")
    assert "--port 3000" in make_dry_run("serve")
