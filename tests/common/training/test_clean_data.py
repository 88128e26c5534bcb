"""add_data stores only what the model can take: every value is checked by /forward's functions.

Each test drives the real use case, a Lifecycle over the embedded backends on a temp dir, and
trains on what was accepted; a refused upload must leave the storage exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from common.errors import BadRequest
from common.lifecycle import Lifecycle
from tests.lifecycle_data import churn_rows, to_csv

FAST = {"model_class": "random_forest", "hyperparameters": {"n_estimators": 10}}


@pytest.fixture
def life(tmp_path: Path) -> Iterator[Lifecycle]:
    from common.backends import Backends
    from common.serving import Serving
    from common.settings import Settings

    backends = Backends.from_settings(Settings(data_dir=tmp_path / "data", deploy_check_seconds=0))
    lifecycle = Lifecycle(backends, Serving(backends))
    yield lifecycle
    lifecycle.close()


def body(kind: str, rows: list[dict[str, Any]]) -> bytes:
    return (json.dumps({"records": rows}) if kind == "json" else to_csv(rows)).encode()


def upload(life: Lifecycle, name: str, kind: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return life.add_frame_or_archive(name, kind, body(kind, rows))


def snapshot(life: Lifecycle, name: str) -> tuple:
    model = life.store.get_model(name)
    parts = [(p.version, p.key, p.rows) for p in life.store.dataset_parts(name)]
    return parts, life.backends.datasets.list(""), model.features


def refused(life: Lifecycle, name: str, kind: str, data: bytes) -> str:
    """The 400 detail of an upload, checking that it stored nothing."""
    before = snapshot(life, name)
    with pytest.raises(BadRequest) as info:
        life.add_frame_or_archive(name, kind, data)
    assert snapshot(life, name) == before
    return str(info.value)


def churn(life: Lifecycle, n: int = 40) -> None:
    life.create_model({"name": "churn", "task": "classification", "target": "churned"})
    upload(life, "churn", "json", churn_rows(n))


def trains(life: Lifecycle, name: str, deploy: str = "never") -> None:
    exp = life.train_now(name, {**FAST, "deploy": deploy})
    assert exp.status.value == "succeeded", exp.error


def features_only(rows: list[dict[str, Any]], target: str = "churned") -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != target} for r in rows]


@pytest.mark.parametrize("kind", ["json", "csv"])
@pytest.mark.parametrize("value", [1e39, 1.7e308, -1e39])
def test_numbers_beyond_float32_are_refused_as_forward_refuses_them(
    life: Lifecycle, kind: str, value: float
) -> None:
    churn(life)
    trains(life, "churn", deploy="always")
    rows = churn_rows(3, seed=1)
    rows[1]["tenure"] = value
    detail = refused(life, "churn", kind, body(kind, rows))
    assert detail == f"feature 'tenure' (row 1): {value} is outside the float32 range"
    with pytest.raises(BadRequest) as served:  # the same words as /forward_batch
        life.serving.forward_batch("churn", features_only(rows))
    assert str(served.value) == detail
    trains(life, "churn")  # the model is not poisoned


@pytest.mark.parametrize(("cell", "message"), [
    ("inf", "inf is not a finite number"),
    ("-inf", "-inf is not a finite number"),
    ("nan", "nan is not a finite number"),
    ("1e400", "inf is not a finite number"),
    ("fifty", "expected a number, got 'fifty'"),
])
def test_csv_cells_are_read_as_forward_reads_them(life: Lifecycle, cell: str, message: str) -> None:
    churn(life)
    rows = churn_rows(3, seed=1)
    data = to_csv(rows).replace(f",{rows[2]['charges']},", f",{cell},", 1).encode()
    assert refused(life, "churn", "csv", data) == f"feature 'charges' (row 2): {message}"
    trains(life, "churn")


def test_a_first_upload_with_a_huge_number_fixes_no_schema(life: Lifecycle) -> None:
    life.create_model({"name": "churn", "task": "classification", "target": "churned"})
    rows = churn_rows(20)
    rows[7]["charges"] = 1e39
    for kind in ("json", "csv"):
        detail = refused(life, "churn", kind, body(kind, rows))
        assert detail == "feature 'charges' (row 7): 1e+39 is outside the float32 range"
    assert life.store.get_model("churn").features is None
    upload(life, "churn", "csv", churn_rows(20))
    trains(life, "churn")


@pytest.mark.parametrize("rows", [
    [{"tenure": "55", "charges": 50.0, "plan": "basic", "region": "north", "churned": "no"}],
    [{**r, "tenure": str(int(r["tenure"]))} for r in churn_rows(5, seed=2)],  # all text
    [{**r, "tenure": "55" if i == 3 else r["tenure"]} for i, r in enumerate(churn_rows(5, seed=2))],
])
def test_a_json_string_for_a_numeric_feature_is_refused(life: Lifecycle, rows: list[dict[str, Any]]) -> None:
    churn(life)
    trains(life, "churn", deploy="always")
    row = next(i for i, r in enumerate(rows) if isinstance(r["tenure"], str))
    detail = refused(life, "churn", "json", body("json", rows))
    assert detail == f"feature 'tenure' (row {row}): expected a number, got {rows[row]['tenure']!r}"
    if len(rows) > 1:
        with pytest.raises(BadRequest) as served:
            life.serving.forward_batch("churn", features_only(rows))
        assert str(served.value) == detail
    else:
        with pytest.raises(BadRequest, match="feature 'tenure': expected a number, got '55'"):
            life.serving.forward("churn", features_only(rows)[0])


def test_booleans_are_not_numbers(life: Lifecycle) -> None:
    churn(life)
    rows = churn_rows(3, seed=3)
    rows[2]["charges"] = True
    assert refused(life, "churn", "json", body("json", rows)) == (
        "feature 'charges' (row 2): expected a number, got True")


def test_missing_numbers_stay_allowed(life: Lifecycle) -> None:
    churn(life)
    rows = churn_rows(6, seed=4)
    rows[1]["tenure"] = None
    upload(life, "churn", "json", rows)
    csv_rows = churn_rows(6, seed=5)
    csv_rows[4]["charges"] = ""
    csv_rows[0]["plan"] = ""
    upload(life, "churn", "csv", csv_rows)
    trains(life, "churn")


def codes_model(life: Lifecycle) -> None:
    """A classifier whose categorical ``code`` holds digits, learned from JSON strings."""
    life.create_model({"name": "codes", "task": "classification", "target": "y"})
    rows = [{"code": str(7 + i % 3), "x": float(i % 5), "y": "a" if i % 3 == 0 else "b"} for i in range(30)]
    upload(life, "codes", "json", rows)
    features = life.store.get_model("codes").features
    assert features is not None and {f.name: f.kind.value for f in features} == {
        "code": "categorical", "x": "numeric"}


def test_json_integers_are_categories_as_their_text(life: Lifecycle) -> None:
    from common.training.datasets import load_dataset

    codes_model(life)
    more: list[dict[str, Any]] = [
        {"code": 7 + i % 3, "x": float(i % 5), "y": "a" if i % 3 == 0 else "b"} for i in range(12)
    ]
    more[5]["code"] = None
    more[6]["code"] = "8"  # a later upload may mix them: each value is checked against the schema
    upload(life, "codes", "json", more)
    model = life.store.get_model("codes")
    stored = load_dataset(life.backends.datasets, life.store, model, 2)["code"].tolist()[-12:]
    assert stored[:5] == ["7", "8", "9", "7", "8"] and pd.isna(stored[5]) and stored[6] == "8"
    trains(life, "codes", deploy="always")
    for x in (0.0, 3.0):
        as_int = life.serving.forward("codes", {"code": 7, "x": x})
        as_text = life.serving.forward("codes", {"code": "7", "x": x})
        assert as_int["prediction"] == as_text["prediction"]
        assert as_int["probabilities"] == as_text["probabilities"]
    batch = life.serving.forward_batch("codes", [{"code": 9, "x": 1.0}, {"code": "9", "x": 1.0}])
    assert batch["predictions"][0] == batch["predictions"][1]


@pytest.mark.parametrize("value", [7.0, 7.5, True, {"a": 1}])
def test_other_json_values_are_not_categories(life: Lifecycle, value: Any) -> None:
    codes_model(life)
    rows = [{"code": "7", "x": 1.0, "y": "a"}, {"code": value, "x": 2.0, "y": "b"}]
    detail = refused(life, "codes", "json", body("json", rows))
    if isinstance(value, dict):
        assert detail == f"column 'code' (row 1): expected a scalar, got {value!r}"
        return
    assert detail == f"feature 'code' (row 1): expected a string category, got {value!r}"
    trains(life, "codes", deploy="always")
    with pytest.raises(BadRequest) as served:
        life.serving.forward_batch("codes", [{k: v for k, v in r.items() if k != "y"} for r in rows])
    assert str(served.value) == detail


def test_a_first_upload_still_infers_a_column_of_numbers_as_numeric(life: Lifecycle) -> None:
    life.create_model({"name": "m", "task": "classification", "target": "y"})
    rows = [{"n": i, "m": None if i == 2 else i, "t": str(i), "y": "p" if i % 2 else "q"} for i in range(12)]
    upload(life, "m", "json", rows)
    features = life.store.get_model("m").features
    assert features is not None
    assert {f.name: f.kind.value for f in features} == {"n": "numeric", "m": "numeric", "t": "categorical"}
    life.create_model({"name": "mixed", "task": "classification", "target": "y"})
    rows[4]["t"] = 4  # a first upload mixing numbers and text is refused, as before
    assert "mixes a number into a column of text" in refused(life, "mixed", "json", body("json", rows))


@pytest.mark.parametrize("kind", ["json", "csv"])
@pytest.mark.parametrize("label", ["y\x00es", "yes\n", "y\tes", "no\x7f"])
def test_control_characters_in_labels_are_refused(life: Lifecycle, kind: str, label: str) -> None:
    churn(life)
    rows = churn_rows(4, seed=6)
    rows[3]["churned"] = label
    detail = refused(life, "churn", kind, body(kind, rows))  # CSV quotes a cell with a line break
    code = f"U+{ord(next(c for c in label if ord(c) < 32 or ord(c) == 127)):04X}"
    assert detail == (f"target 'churned' (row 3): the label {label!r} contains the control character "
                      f"{code}; labels must be printable text")
    trains(life, "churn")


def test_control_characters_in_column_names_are_refused(life: Lifecycle) -> None:
    life.create_model({"name": "churn", "task": "classification", "target": "churned"})
    rows = [{("pl\x00an" if k == "plan" else k): v for k, v in r.items()} for r in churn_rows(20)]
    assert refused(life, "churn", "json", body("json", rows)) == (
        "column 'pl\\x00an' (row 0): the name contains the control character U+0000; "
        "column names must be printable text")
    assert refused(life, "churn", "csv", body("csv", rows)) == (
        "column 'pl\\x00an' of the CSV header contains the control character U+0000; "
        "column names must be printable text")
    tabbed = [{("re\tgion" if k == "region" else k): v for k, v in r.items()} for r in churn_rows(20)]
    assert "'re\\tgion' (row 0): the name contains the control character U+0009" in refused(
        life, "churn", "json", body("json", tabbed))
    assert life.store.get_model("churn").features is None
    upload(life, "churn", "json", churn_rows(20))
    trains(life, "churn")


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_categories_refuse_nul_but_keep_tabs(life: Lifecycle, kind: str) -> None:
    churn(life)
    rows = churn_rows(4, seed=7)
    rows[2]["region"] = "no\x00rth"
    assert refused(life, "churn", kind, body(kind, rows)) == (
        "feature 'region' (row 2): 'no\\x00rth' contains a NUL character (U+0000)")
    rows[2]["region"] = "north\tshore"
    upload(life, "churn", kind, rows)
    trains(life, "churn")


def test_regression_targets_must_fit_the_model(life: Lifecycle) -> None:
    life.create_model({"name": "r", "task": "regression", "target": "y"})
    rows = [{"x": float(i), "y": 2.0 * i} for i in range(20)]
    upload(life, "r", "json", rows)
    bad = [{"x": 1.0, "y": 1.0}, {"x": 2.0, "y": 1.7e308}]
    # in float64 range, but the ONNX graph predicts float32: trees would learn an infinite leaf
    assert refused(life, "r", "json", body("json", bad)) == (
        "target 'y' (row 1): 1.7e+308 is outside the float32 range")
    assert refused(life, "r", "csv", b"x,y\n1,1\n2,1e400\n") == (
        "target 'y' (row 1): '1e400' is not a finite number")
    assert refused(life, "r", "csv", b"x,y\n1,\n") == "target 'y' (row 0) is missing"
    assert refused(life, "r", "json", b'{"records": [{"x": 1, "y": "ten"}]}') == (
        "target 'y' (row 0): expected a number for regression, got 'ten'")
    upload(life, "r", "json", [{"x": 3.0, "y": 3.0e38}])  # large but representable
    trains(life, "r")


def test_integer_labels_stay_allowed(life: Lifecycle) -> None:
    life.create_model({"name": "ints", "task": "classification", "target": "y"})
    upload(life, "ints", "json", [{"x": float(i), "y": i % 2} for i in range(20)])
    life.add_frame_or_archive("ints", "csv", b"x,y\n1,0\n2,1\n")
    trains(life, "ints")
