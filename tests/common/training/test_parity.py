"""ONNX export: every class x task x (numeric only, with categorical features) passes parity,
and the file carries its provenance."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest

from common.domain import Task
from common.errors import ParityError
from common.inference.onnx_model import OnnxModel
from common.training import export
from common.training.frames import infer_features
from common.training.trainer import TrainingSpec, train

FAST = {
    "random_forest": {"n_estimators": 31},
    "svm": {},
    "logistic_regression": {},
    "catboost": {"iterations": 60, "depth": 4},
}
REQUIRED_METADATA = ("commit", "saved_at", "experiment_name", "experiment_id", "model_class", "task",
                     "target", "features", "classes", "hyperparameters", "metrics")


def dataset(task: Task, categorical: bool, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 240
    frame = pd.DataFrame({"x1": rng.normal(size=n), "x 2": rng.uniform(-2, 2, size=n),
                          "x3": rng.normal(3, 1, size=n)})
    signal = frame["x1"] + 0.5 * frame["x 2"]
    if categorical:
        frame["city"] = rng.choice(["paris", "lyon", "nice"], size=n)
        frame["plan"] = rng.choice(["free", "pro"], size=n)
        signal = signal + frame["city"].map({"paris": 1.0, "lyon": -1.0, "nice": 0.0}) \
            + (frame["plan"] == "pro") * 0.8
    frame.loc[5, "x3"] = np.nan  # missing numbers are imputed inside the graph
    if task is Task.regression:
        frame["y"] = 10 * signal + rng.normal(scale=0.1, size=n)
    else:
        frame["y"] = np.where(signal > 0.6, "high", np.where(signal < -0.6, "low", "mid"))
    return frame


CASES = [
    (cls, task, cat)
    for cls in FAST
    for task in (Task.classification, Task.regression)
    for cat in (False, True)
    if not (cls == "logistic_regression" and task is Task.regression)
]


@pytest.mark.parametrize(("model_class", "task", "categorical"), CASES,
                         ids=[f"{c}-{t.value}-{'cat' if k else 'num'}" for c, t, k in CASES])
def test_export_passes_parity_and_serves(model_class: str, task: Task, categorical: bool) -> None:
    frame = dataset(task, categorical)
    features = infer_features(frame, "y")
    assert {f.name: f.kind.value for f in features}.get("city", "categorical") == "categorical"
    spec = TrainingSpec(model="parity", experiment_id=7, model_class=model_class, task=task,
                        target="y", features=features, hyperparameters=FAST[model_class])
    trained = train(frame, spec)

    proto = onnx.load_from_string(trained.onnx_bytes)
    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert list(inputs) == [f.name for f in features]  # one input per column, real names
    for f in features:
        elem = inputs[f.name].elem_type
        assert elem == (onnx.TensorProto.FLOAT if f.kind.value == "numeric" else onnx.TensorProto.STRING)
        assert [d.dim_value for d in inputs[f.name].shape.dim][1] == 1
    assert not any(n.op_type == "ZipMap" for n in proto.graph.node)
    for node in proto.graph.node:  # per-node attributes equal to their default are not stored
        if node.op_type.startswith("TreeEnsemble"):
            names = {a.name for a in node.attribute}
            assert "nodes_hitrates" not in names and "nodes_values" in names

    meta = {p.key: p.value for p in proto.metadata_props}
    for key in REQUIRED_METADATA:
        assert key in meta, key
    assert meta["model_class"] == model_class and meta["task"] == task.value
    assert meta["experiment_id"] == "7" and meta["target"] == "y"
    assert json.loads(meta["hyperparameters"])  == trained.hyperparameters
    assert json.loads(meta["metrics"]) == trained.metrics
    assert meta["saved_at"].endswith("Z")

    served = OnnxModel(trained.onnx_bytes)
    holdout = trained.holdout
    assert holdout is not None
    records = [{f.name: (None if (isinstance(v, float) and np.isnan(v)) else v)
                for f, v in zip(features, row, strict=True)}
               for row in holdout[[f.name for f in features]].itertuples(index=False)]
    out = served.predict(records)
    if task is Task.classification:
        assert set(out.predictions) <= set(json.loads(meta["classes"]))
        assert out.probabilities is not None
        for row in out.probabilities:
            assert abs(sum(row.values()) - 1.0) < 1e-4
        assert trained.metrics["accuracy"] > 0.6
        assert set(trained.metrics) >= {"accuracy", "f1_macro", "precision_macro", "recall_macro",
                                        "log_loss"}
    else:
        assert out.probabilities is None
        assert trained.metrics["r2"] > 0.5
        assert set(trained.metrics) == {"rmse", "mae", "r2"}


def test_only_all_default_tree_attributes_are_dropped() -> None:
    from onnx import helper

    node = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml",
        nodes_hitrates=[1.0, 1.0, 1.0], nodes_missing_value_tracks_true=[0, 1, 0],
        nodes_values=[0.5, 0.0, 0.0])
    graph = helper.make_graph([node], "g", [], [])
    model = helper.make_model(graph)
    export.drop_default_tree_attributes(model)
    kept = {a.name: list(a.ints) for a in model.graph.node[0].attribute}
    assert "nodes_hitrates" not in kept
    assert kept["nodes_missing_value_tracks_true"] == [0, 1, 0]  # one entry differs: kept
    assert "nodes_values" in kept


def test_missing_value_row_is_imputed_not_rejected() -> None:
    frame = dataset(Task.classification, categorical=True)
    features = infer_features(frame, "y")
    trained = train(frame, TrainingSpec(model="m", experiment_id=1, model_class="random_forest",
                                        task=Task.classification, target="y", features=features,
                                        hyperparameters={"n_estimators": 11}))
    served = OnnxModel(trained.onnx_bytes)
    out = served.predict([{"x1": None, "x 2": 0.1, "x3": None, "city": None, "plan": "unseen"}])
    assert out.predictions[0] in ("high", "low", "mid")


def test_parity_gate_rejects_a_graph_that_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = dataset(Task.regression, categorical=False)
    features = infer_features(frame, "y")
    real_to_onnx = export.to_onnx

    def shifted(pipeline, feats, task, image=None):  # type: ignore[no-untyped-def]
        other = frame.copy()
        other["y"] = other["y"] + 100.0  # a different model with the same inputs
        from sklearn.base import clone

        pipe = clone(pipeline).fit(other[[f.name for f in feats]], other["y"])
        return real_to_onnx(pipe, feats, task, image)

    monkeypatch.setattr("common.training.trainer.to_onnx", shifted)
    with pytest.raises(ParityError, match="differ beyond tolerance"):
        train(frame, TrainingSpec(model="m", experiment_id=1, model_class="svm", task=Task.regression,
                                  target="y", features=features))
