"""The served prediction is the most probable class of the served probabilities, for every
classifier; the SVM trains on tiny data; the parity gate refuses labels that say otherwise."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest

from common.demo import DEMOS
from common.domain import ImageSpec, Task
from common.errors import ParityError
from common.inference.onnx_model import OnnxModel, Predictions
from common.training import export
from common.training.frames import infer_features, pixel_columns
from common.training.trainer import TrainingSpec, feeds, train

FAST = {
    "random_forest": {"n_estimators": 30},  # even: exact 0.5 ties between trees do happen
    "svm": {},
    "logistic_regression": {},
    "catboost": {"iterations": 60, "depth": 4},
}
TIE = 2 * export.PROBA_ATOL


def assert_served_is_most_probable(out: Predictions) -> None:
    """Every label is the first class (in class order) of highest served probability."""
    assert out.probabilities is not None
    wrong = [(label, row) for label, row in zip(out.predictions, out.probabilities, strict=True)
             if str(label) != max(row, key=row.__getitem__)]
    assert not wrong, f"{len(wrong)} of {len(out.predictions)} rows, e.g. {wrong[:3]}"


def assert_graph_agrees(model: OnnxModel, onnx_feeds: dict[str, np.ndarray]) -> None:
    """The graph's own label output is the argmax of its probability output (bar near-ties)."""
    labels, proba = model.run(onnx_feeds)[:2]
    top2 = np.sort(proba, axis=1)[:, -2:]
    bad = np.flatnonzero((labels.reshape(-1) != proba.argmax(axis=1)) & (top2[:, 1] - top2[:, 0] > TIE))
    assert not bad.size, f"rows {bad[:5].tolist()}: labels {labels[bad[:5]]}, proba {proba[bad[:5]]}"


def assert_native_agrees(pipeline: Any, frame: pd.DataFrame) -> None:
    proba = pipeline.predict_proba(frame)
    top2 = np.sort(proba, axis=1)[:, -2:]
    untied = top2[:, 1] - top2[:, 0] > TIE
    np.testing.assert_array_equal(np.asarray(pipeline.predict(frame)).reshape(-1)[untied], proba.argmax(axis=1)[untied])


def spec_for(frame: pd.DataFrame, model_class: str, target: str = "y", **kw: Any) -> TrainingSpec:
    return TrainingSpec(model="m", experiment_id=1, model_class=model_class, task=Task.classification,
                        target=target, features=infer_features(frame, target), **kw)


def records_over(frame: pd.DataFrame, columns: list[str], per_axis: int) -> list[dict[str, Any]]:
    """A dense grid over the range of each (numeric) column."""
    axes = [np.linspace(frame[c].min(), frame[c].max(), per_axis) for c in columns]
    return [dict(zip(columns, map(float, point), strict=True)) for point in itertools.product(*axes)]


def test_iris_demo_svm_serves_its_most_probable_class() -> None:
    """The defect: the iris demo (an SVM) answered "setosa" with setosa the least probable class,
    because SVC(probability=True) labels by its decision function and ONNX passed that label on."""
    demo = next(d for d in DEMOS if d.name == "iris")
    frame = demo.load()
    trained = train(frame, spec_for(frame, demo.model_class, demo.target,
                                    hyperparameters=demo.hyperparameters))
    model = OnnxModel(trained.onnx_bytes)
    records = records_over(frame, [f.name for f in model.features], 9)  # 6561 rows
    assert_served_is_most_probable(model.predict(records))
    grid = pd.DataFrame(records)
    assert_graph_agrees(model, feeds(spec_for(frame, "svm", demo.target), grid))
    assert_native_agrees(trained.pipeline, grid)


def dataset(n_classes: int, n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.uniform(-2, 2, size=n),
                          "city": rng.choice(["paris", "lyon", "nice"], size=n)})
    signal = frame["x1"] + 0.5 * frame["x2"] + frame["city"].map({"paris": 0.7, "lyon": -0.7, "nice": 0.0})
    signal = signal + rng.normal(scale=0.5, size=n)
    names = np.array(["low", "mid", "high"][:n_classes])
    cuts = np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1])
    frame["y"] = names[np.searchsorted(cuts, signal)]
    return frame


def wide_rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Random rows beyond the training range, where classes meet and models are least sure."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x1": rng.uniform(-5, 5, size=n), "x2": rng.uniform(-5, 5, size=n),
                         "city": rng.choice(["paris", "lyon", "nice"], size=n)})


CASES = [(c, k) for c in FAST for k in (2, 3)]


@pytest.mark.parametrize(("model_class", "n_classes"), CASES,
                         ids=[f"{c}-{'binary' if k == 2 else 'multiclass'}" for c, k in CASES])
def test_every_classifier_serves_its_most_probable_class(model_class: str, n_classes: int) -> None:
    frame = dataset(n_classes)
    spec = spec_for(frame, model_class, hyperparameters=FAST[model_class])
    trained = train(frame, spec)
    model = OnnxModel(trained.onnx_bytes)
    rows = pd.concat([frame.drop(columns="y"), wide_rows(frame, 3000, seed=1)], ignore_index=True)
    served = model.predict_feeds(feeds(spec, rows))
    assert_served_is_most_probable(served)
    assert_graph_agrees(model, feeds(spec, rows))
    assert_native_agrees(trained.pipeline, rows)
    # What the holdout metrics were computed from is what serving answers.
    assert trained.served == model.predict_feeds(trained.holdout_feeds)
    assert trained.holdout_target is not None
    index = {str(c): i for i, c in enumerate(trained.classes)}
    accuracy = np.mean([index[str(p)] == t for p, t in
                        zip(trained.served.predictions, trained.holdout_target, strict=True)])
    assert trained.metrics["accuracy"] == pytest.approx(accuracy)


@pytest.mark.parametrize("model_class", ["svm", "random_forest"])
def test_image_classifier_serves_its_most_probable_class(model_class: str) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    image = ImageSpec(width=8, height=8, mode="L")
    frame = pd.DataFrame(digits.data[:300] / 16.0, columns=pixel_columns(image))
    frame["label"] = [str(t) for t in digits.target[:300]]
    spec = TrainingSpec(model="d", experiment_id=1, model_class=model_class, task=Task.classification,
                        target="label", features=[], image=image, hyperparameters=FAST[model_class])
    trained = train(frame, spec)
    model = OnnxModel(trained.onnx_bytes)
    rng = np.random.default_rng(2)
    pixels = np.vstack([digits.data[300:800] / 16.0, rng.uniform(0, 1, size=(500, 64))])
    onnx_feeds = {"pixels": pixels.astype(np.float32)}
    assert_served_is_most_probable(model.predict_feeds(onnx_feeds))
    assert_graph_agrees(model, onnx_feeds)
    assert_native_agrees(trained.pipeline, pd.DataFrame(pixels, columns=pixel_columns(image)))


def tiny(counts: list[int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(len(counts)), counts)
    frame = pd.DataFrame({"a": codes + rng.normal(scale=0.6, size=len(codes)),
                          "b": rng.normal(size=len(codes)),
                          "y": [f"class_{c}" for c in codes]})
    return frame.sample(frac=1, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize("tune", [False, True], ids=["default", "tuned"])
@pytest.mark.parametrize("counts", [[5, 5], [3, 3, 4], [4, 3, 3], [2, 4, 4]],
                         ids=["binary-5-5", "3-3-4", "4-3-3", "2-4-4"])
def test_svm_trains_on_ten_rows(counts: list[int], tune: bool) -> None:
    """10 rows is the minimum; a class of 2 rows leaves a single one to train (and calibrate) on."""
    frame = tiny(counts)
    spec = spec_for(frame, "svm", tune=tune)
    trained = train(frame, spec)  # through the parity gate
    assert trained.parity["max_proba_diff"] <= export.PROBA_ATOL
    assert trained.split["method"] == "stratified"
    assert trained.split["holdout_rows"] >= len(counts)  # a holdout row of every class
    model = OnnxModel(trained.onnx_bytes)
    assert model.classes == sorted(set(frame["y"]))
    rows = pd.DataFrame({"a": np.linspace(-3, 6, 200), "b": np.linspace(2, -2, 200)})
    assert_served_is_most_probable(model.predict_feeds(feeds(spec, rows)))
    assert_native_agrees(trained.pipeline, rows)


def test_calibration_folds_follow_the_smallest_class() -> None:
    from common.training.estimators import CalibrationFolds

    folds = CalibrationFolds(3, seed=5)
    X = np.zeros((12, 1))
    for y, n in (([0] * 6 + [1] * 6, 3), ([0] * 2 + [1] * 10, 2), ([0] + [1] * 11, 1)):
        splits = list(folds.split(X, np.array(y)))
        assert folds.get_n_splits(X, y) == len(splits) == n
        tests = np.sort(np.concatenate([test for _, test in splits]))
        np.testing.assert_array_equal(tests, np.arange(12))  # every row predicted once
        for train_rows, _ in splits:  # every class on the training side of every split
            assert set(np.array(y)[train_rows]) == {0, 1}
    balanced = np.array([0] * 6 + [1] * 6)  # the same folds every time for a seed
    assert [t.tolist() for _, t in folds.split(X, balanced)] == [t.tolist() for _, t in folds.split(X, balanced)]


def test_svm_hyperparameters_reach_the_svc_and_the_grid_searches_them() -> None:
    frame = dataset(3, n=90)
    trained = train(frame, spec_for(frame, "svm", hyperparameters={"C": 3.0, "kernel": "linear"}))
    svc = trained.pipeline.named_steps["model"].calibrated_classifiers_[0].estimator
    assert (svc.C, svc.kernel, svc.gamma) == (3.0, "linear", "scale")
    tuned = train(frame, spec_for(frame, "svm", tune=True, hyperparameters={"gamma": "auto"}))
    searched = [r["params"] for r in tuned.grid_scores]
    assert {(p["C"], p["kernel"]) for p in searched} == {(c, k) for c in (0.3, 1.0, 3.0)
                                                         for k in ("rbf", "linear")}
    svc = tuned.pipeline.named_steps["model"].calibrated_classifiers_[0].estimator
    assert svc.gamma == "auto" and (svc.C, svc.kernel) in {(p["C"], p["kernel"]) for p in searched}


def test_svm_is_deterministic_for_a_seed() -> None:
    frame = dataset(3, n=90)
    first, second = (train(frame, spec_for(frame, "svm", seed=7)) for _ in range(2))
    rows = wide_rows(frame, 200, seed=3)
    np.testing.assert_array_equal(first.pipeline.predict_proba(rows), second.pipeline.predict_proba(rows))


def relabelled(model_bytes: bytes, shift: int, n_classes: int) -> bytes:
    """The same graph, its label output moved ``shift`` classes on: label -> (label + shift) % n."""
    proto = onnx.load_from_string(model_bytes)
    label = proto.graph.output[0].name
    inner = f"{label}_inner"
    for node in proto.graph.node:
        for i, name in enumerate(node.output):
            if name == label:
                node.output[i] = inner
    proto.graph.initializer.extend([
        onnx.numpy_helper.from_array(np.array([shift], dtype=np.int64), "shift"),
        onnx.numpy_helper.from_array(np.array([n_classes], dtype=np.int64), "n_classes"),
    ])
    proto.graph.node.extend([
        onnx.helper.make_node("Add", [inner, "shift"], ["shifted"]),
        onnx.helper.make_node("Mod", ["shifted", "n_classes"], [label]),
    ])
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def test_parity_gate_refuses_labels_that_are_not_the_most_probable_class() -> None:
    frame = dataset(3)
    spec = spec_for(frame, "logistic_regression")
    trained = train(frame, spec)
    holdout = trained.holdout
    assert holdout is not None
    sample = holdout.drop(columns="y")
    onnx_feeds = feeds(spec, sample)
    honest = OnnxModel(trained.onnx_bytes)
    assert export.check_parity(trained.pipeline, honest, sample, onnx_feeds, Task.classification)

    lying = OnnxModel(relabelled(trained.onnx_bytes, 1, 3))
    assert not np.array_equal(lying.run(onnx_feeds)[0], honest.run(onnx_feeds)[0])
    np.testing.assert_array_equal(lying.run(onnx_feeds)[1], honest.run(onnx_feeds)[1])
    with pytest.raises(ParityError, match="label output differs from the native model's most probable"):
        export.check_parity(trained.pipeline, lying, sample, onnx_feeds, Task.classification)
    # Serving answers from the probabilities, so even this graph would serve the right class.
    assert lying.predict_feeds(onnx_feeds) == honest.predict_feeds(onnx_feeds)


def test_parity_gate_checks_against_native_probabilities_not_native_predict() -> None:
    """A native model whose predict disagrees with its own probabilities (as SVC(probability=True)
    did) is judged by its probabilities: a graph labelling by them passes."""
    frame = dataset(3)
    spec = spec_for(frame, "logistic_regression")
    trained = train(frame, spec)
    sample = wide_rows(frame, 300, seed=4)
    onnx_feeds = feeds(spec, sample)

    class PredictsSecondBest:
        def __init__(self, pipeline: Any) -> None:
            self.pipeline = pipeline

        def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
            return self.pipeline.predict_proba(X)

        def predict(self, X: pd.DataFrame) -> np.ndarray:
            return np.argsort(self.pipeline.predict_proba(X), axis=1)[:, -2]

    native = PredictsSecondBest(trained.pipeline)
    honest = OnnxModel(trained.onnx_bytes)
    assert export.check_parity(native, honest, sample, onnx_feeds, Task.classification)
