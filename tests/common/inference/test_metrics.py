"""Serving-side NumPy metrics agree with scikit-learn's on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from common.inference.metrics import classification_metrics, regression_metrics


@pytest.mark.parametrize("k", [2, 3, 5])
def test_classification_matches_sklearn(k: int) -> None:
    rng = np.random.default_rng(k)
    n = 400
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + np.eye(k)[y] * 1.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    proba = np.round(proba, 2)  # ties in scores exercise the rank averaging
    proba = proba / proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    labels = list(range(k))
    ours = classification_metrics(y, pred, proba)
    expected = {
        "accuracy": sk.accuracy_score(y, pred),
        "f1_macro": sk.f1_score(y, pred, average="macro", labels=labels, zero_division=0),
        "precision_macro": sk.precision_score(y, pred, average="macro", labels=labels, zero_division=0),
        "recall_macro": sk.recall_score(y, pred, average="macro", labels=labels, zero_division=0),
        "log_loss": sk.log_loss(y, proba, labels=labels),
        "roc_auc": sk.roc_auc_score(y, proba[:, 1]) if k == 2
        else sk.roc_auc_score(y, proba, multi_class="ovr", labels=labels),
    }
    assert set(ours) == set(expected)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name


def test_auc_is_omitted_when_a_class_is_absent() -> None:
    proba = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    out = classification_metrics(np.array([0, 1]), np.array([0, 1]), proba)
    assert "roc_auc" not in out and out["accuracy"] == 1.0


def test_regression_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(100, 20, 300)
    pred = y + rng.normal(0, 5, 300)
    ours = regression_metrics(y, pred)
    assert ours["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y, pred)))
    assert ours["mae"] == pytest.approx(sk.mean_absolute_error(y, pred))
    assert ours["r2"] == pytest.approx(sk.r2_score(y, pred))
