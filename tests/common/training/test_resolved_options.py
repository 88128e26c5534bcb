"""to_onnx's conversion options skip skl2onnx's walk over every sub-model's attributes; the
converted models are the ones skl2onnx's own option processing gives, byte for byte."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest

from common.catalog import model_class
from common.domain import Feature, FeatureKind, ImageSpec, Task
from common.training import export
from common.training.estimators import build_image_pipeline, build_pipeline


def both_ways(convert: Any) -> tuple[bytes, bytes]:
    """``convert()`` with the options fast path, then with skl2onnx's own processing."""
    from skl2onnx import _parse
    from skl2onnx import convert as skl_convert

    export.register_converters()
    fast = skl_convert._process_options
    assert fast.__name__ == "process_options" and _parse._process_options is fast
    got: onnx.ModelProto = convert()
    skl_convert._process_options = _parse._process_options = fast.original
    try:
        want: onnx.ModelProto = convert()
    finally:
        skl_convert._process_options = _parse._process_options = fast
    got.graph.name = want.graph.name  # a random name each conversion
    return want.SerializeToString(), got.SerializeToString()


def tabular(n: int = 240) -> tuple[pd.DataFrame, list[Feature]]:
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 4, n).astype(float),
                      "city": rng.choice(["paris", "lyon", "nice"], n)})
    x.loc[::17, "a"] = np.nan  # the imputer has something to do
    kinds = {"a": FeatureKind.numeric, "b": FeatureKind.numeric, "city": FeatureKind.categorical}
    return x, [Feature(name=c, kind=k) for c, k in kinds.items()]


def small(name: str) -> dict[str, Any]:
    return {"random_forest": {"n_estimators": 5}, "catboost": {"iterations": 5}}.get(name, {})


@pytest.mark.parametrize("name", ["random_forest", "svm", "logistic_regression", "catboost"])
@pytest.mark.parametrize("classes", [2, 3])
def test_tabular_classifiers(name: str, classes: int) -> None:
    x, features = tabular()
    y = np.array(["no", "yes", "maybe"][:classes])[np.arange(len(x)) % classes]
    params = model_class(name).resolve(Task.classification, small(name))
    pipeline = build_pipeline(name, Task.classification, features, params, 0).fit(x, y)
    want, got = both_ways(lambda: export.to_onnx(pipeline, features, Task.classification))
    assert got == want


@pytest.mark.parametrize("name", ["random_forest", "svm"])
def test_regressors_convert_as_before(name: str) -> None:  # no options: nothing changes
    x, features = tabular()
    y = x["b"].to_numpy() * 2 + 1
    params = model_class(name).resolve(Task.regression, small(name))
    pipeline = build_pipeline(name, Task.regression, features, params, 0).fit(x, y)
    want, got = both_ways(lambda: export.to_onnx(pipeline, features, Task.regression))
    assert got == want


@pytest.mark.parametrize("name", ["random_forest", "logistic_regression"])
def test_image_classifiers(name: str) -> None:
    image = ImageSpec(width=4, height=3, mode="L")
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (60, image.n_pixels))
    y = np.where(x[:, 0] > 0.5, "light", "dark")
    params = model_class(name).resolve(Task.classification, small(name))
    pipeline = build_image_pipeline(name, Task.classification, params, 0).fit(x, y)
    want, got = both_ways(lambda: export.to_onnx(pipeline, [], Task.classification, image))
    assert got == want


def test_other_options_still_go_through_skl2onnx() -> None:
    """Options keyed by name (or any plain dict) are resolved by skl2onnx as before."""
    from skl2onnx import convert as skl_convert

    x, features = tabular()
    pipeline = build_pipeline("logistic_regression", Task.classification, features,
                              model_class("logistic_regression").resolve(Task.classification, {}),
                              0).fit(x, np.arange(len(x)) % 2)
    export.register_converters()
    resolved = skl_convert._process_options(pipeline, {"model__zipmap": False})
    assert resolved[id(pipeline.named_steps["model"])] == {"zipmap": False}
    mine = export.ResolvedOptions({id(pipeline.named_steps["model"]): {"zipmap": False}})
    assert skl_convert._process_options(pipeline, mine) is mine
