"""The forest converters' whole-array tree attributes are skl2onnx's own, byte for byte."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.pipeline import Pipeline

from common.domain import Feature, FeatureKind, Task
from common.training import export
from common.training.estimators import preprocessor


def original_and_fast(pipeline: Pipeline, features: list[Feature], task: Task) -> tuple[bytes, bytes]:
    from skl2onnx.operator_converters import random_forest

    export._register_fast_trees()
    fast = random_forest.add_tree_to_attribute_pairs
    assert fast.__name__ == "tree_attribute_pairs"
    got = export.to_onnx(pipeline, features, task)
    random_forest.add_tree_to_attribute_pairs = fast.original
    try:
        want = export.to_onnx(pipeline, features, task)
    finally:
        random_forest.add_tree_to_attribute_pairs = fast
    got.graph.name = want.graph.name  # a random name each conversion
    return want.SerializeToString(), got.SerializeToString()


def frame(n: int, seed: int) -> tuple[pd.DataFrame, list[Feature]]:
    rng = np.random.default_rng(seed)
    # values at float32's edges and repeated ones: thresholds that float32 rounds up, down, not
    cols: dict[str, Any] = {"a": rng.normal(size=n), "b": rng.integers(0, 5, n).astype(float),
                            "c": rng.normal(size=n) * 1e-30, "d": rng.normal(size=n) * 1e30,
                            "e": np.round(rng.uniform(0, 1, n), 1) + 1e-9}
    cols["city"] = rng.choice(["paris", "lyon", "nice"], n)
    kinds = {c: FeatureKind.categorical if c == "city" else FeatureKind.numeric for c in cols}
    return pd.DataFrame(cols), [Feature(name=c, kind=k) for c, k in kinds.items()]


def fitted(model: Any, features: list[Feature], x: pd.DataFrame, y: Any) -> Pipeline:
    return Pipeline([("preprocess", preprocessor(features, False)), ("model", model)]).fit(x, y)


@pytest.mark.parametrize("classes", [2, 3, 7])
@pytest.mark.parametrize("params", [{"n_estimators": 9}, {"n_estimators": 5, "max_depth": 3},
                                    {"n_estimators": 4, "min_samples_leaf": 20},
                                    {"n_estimators": 3, "max_depth": 1}])
def test_classifiers(classes: int, params: dict[str, Any]) -> None:
    x, features = frame(600, classes)
    rng = np.random.default_rng(1)
    y = np.where(x["a"] + rng.normal(size=len(x)) > 0, "yes", "no") if classes == 2 \
        else rng.integers(0, classes, len(x)) + (x["b"] > 2)
    pipeline = fitted(RandomForestClassifier(random_state=0, **params), features, x, y)
    want, got = original_and_fast(pipeline, features, Task.classification)
    assert got == want


@pytest.mark.parametrize("params", [{"n_estimators": 7}, {"n_estimators": 3, "max_depth": 2}])
def test_regressors(params: dict[str, Any]) -> None:
    x, features = frame(500, 4)
    y = x["a"] * 3 + x["b"] + np.random.default_rng(2).normal(size=len(x))
    pipeline = fitted(RandomForestRegressor(random_state=0, **params), features, x, y)
    want, got = original_and_fast(pipeline, features, Task.regression)
    assert got == want


def test_a_single_leaf_tree() -> None:
    x, features = frame(50, 5)
    pipeline = fitted(RandomForestClassifier(n_estimators=3, random_state=0), features, x,
                      ["same"] * 49 + ["other"])
    want, got = original_and_fast(pipeline, features, Task.classification)
    assert got == want


def test_a_regressor_of_two_targets() -> None:
    x, features = frame(300, 9)
    y = np.stack([x["a"] * 2, x["b"]], axis=1)
    pipeline = fitted(RandomForestRegressor(n_estimators=3, random_state=0), features, x, y)
    want, got = original_and_fast(pipeline, features, Task.regression)
    assert got == want
