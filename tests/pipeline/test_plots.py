"""common.training.plots on each kind of model: which plots apply, their data and their PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from common import demo
from common.domain import ImageSpec, Task
from common.training.frames import infer_features, pixel_columns
from common.training.plots import holdout_plots, table_names, write_plots
from common.training.trainer import TrainingSpec, train


def trained_on(frame: pd.DataFrame, target: str, task: Task, model_class: str, **params: object):
    features = infer_features(frame, target)
    spec = TrainingSpec(model="m", experiment_id=1, model_class=model_class, task=task, target=target,
                        features=features, hyperparameters=dict(params))
    return train(frame, spec), features


def written(plots, tmp_path: Path) -> dict[str, dict]:
    definitions = write_plots(plots, tmp_path / "data", tmp_path / "images", tmp_path)
    for plot in plots:
        with Image.open(tmp_path / "images" / f"{plot.name}.png") as image:
            image.load()
            assert image.format == "PNG"
    return {name: props for d in definitions for name, props in d.items()}


def test_regression_random_forest(tmp_path: Path) -> None:
    trained, features = trained_on(demo.diabetes(), "progression", Task.regression, "random_forest",
                                   n_estimators=20)
    defs = written(holdout_plots(trained, Task.regression, features), tmp_path)
    assert list(defs) == ["residuals", "predicted_vs_actual", "feature_importance"]
    residuals = pd.read_csv(tmp_path / "data" / "residuals.csv")
    assert len(residuals) == trained.split["holdout_rows"]
    assert np.allclose(residuals["actual"] - residuals["predicted"], residuals["residual"])
    importance = pd.read_csv(tmp_path / "data" / "feature_importance.csv")
    # the one-hot columns of the categorical `sex` are summed back onto it
    assert sorted(importance["feature"]) == sorted(f.name for f in features)
    assert importance["importance"].sum() == pytest.approx(1.0)
    assert defs["feature_importance"]["y"] == {"data/feature_importance.csv": "feature"}


def test_binary_logistic_regression_has_no_importance(tmp_path: Path) -> None:
    frame = demo.breast_cancer().iloc[:, [0, 1, 2, 3, -1]]
    trained, features = trained_on(frame, "diagnosis", Task.classification, "logistic_regression")
    defs = written(holdout_plots(trained, Task.classification, features), tmp_path)
    assert list(defs) == ["confusion_matrix", "roc", "precision_recall"]
    positive = trained.classes[1]
    assert defs["roc"]["y"] == {f"data/roc_{positive}.csv": "tpr"}  # binary: the positive class
    roc = pd.read_csv(tmp_path / "data" / f"roc_{positive}.csv")
    assert roc["fpr"].iloc[0] == 0.0 and roc["tpr"].iloc[-1] == 1.0
    confusion = pd.read_csv(tmp_path / "data" / "confusion_matrix.csv")
    assert len(confusion) == trained.split["holdout_rows"]


def test_image_model_importance_is_per_pixel(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    spec_image = ImageSpec(width=8, height=8, mode="L")
    frame = pd.DataFrame(digits.data[:300] / 16.0, columns=pixel_columns(spec_image))
    frame["label"] = [str(t) for t in digits.target[:300]]
    spec = TrainingSpec(model="d", experiment_id=1, model_class="random_forest", task=Task.classification,
                        target="label", features=[], image=spec_image, hyperparameters={"n_estimators": 10})
    trained = train(frame, spec)
    defs = written(holdout_plots(trained, Task.classification, [], spec_image), tmp_path)
    assert "feature_importance" in defs and len(defs["roc"]["y"]) == 10
    importance = pd.read_csv(tmp_path / "data" / "feature_importance.csv")
    assert len(importance) == 64 and set(importance["feature"]) == set(pixel_columns(spec_image))


def test_table_names_are_safe_and_unique() -> None:
    assert table_names(["a/b", "a b", "", "ok"]) == ["a_b", "a_b_1", "class2", "ok"]
