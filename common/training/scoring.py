"""Holdout metrics with scikit-learn's metric functions (training side only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from common.domain import Task
from common.inference.onnx_model import Predictions


def score(task: Task, y_true: np.ndarray, served: Predictions, classes: list[Any]) -> dict[str, float]:
    """Metrics of the served (ONNX) predictions against encoded targets."""
    from sklearn import metrics as m

    if len(y_true) == 0:
        return {}
    if task is Task.regression:
        pred = np.asarray(served.predictions, dtype=np.float64)
        return {
            "rmse": float(np.sqrt(m.mean_squared_error(y_true, pred))),
            "mae": float(m.mean_absolute_error(y_true, pred)),
            "r2": float(m.r2_score(y_true, pred)) if len(y_true) > 1 else 0.0,
        }
    index = {str(c): i for i, c in enumerate(classes)}
    pred = np.array([index[str(p)] for p in served.predictions])
    keys = [str(c) for c in classes]
    proba = np.array([[row[k] for k in keys] for row in served.probabilities or []])
    proba = proba / proba.sum(axis=1, keepdims=True)  # float32 rows sum to 1 only within 1e-7
    labels = list(range(len(classes)))
    out = {
        "accuracy": float(m.accuracy_score(y_true, pred)),
        "f1_macro": float(m.f1_score(y_true, pred, average="macro", labels=labels, zero_division=0)),
        "precision_macro": float(
            m.precision_score(y_true, pred, average="macro", labels=labels, zero_division=0)
        ),
        "recall_macro": float(
            m.recall_score(y_true, pred, average="macro", labels=labels, zero_division=0)
        ),
        "log_loss": float(m.log_loss(y_true, np.clip(proba, 1e-15, 1.0), labels=labels)),
    }
    present = np.unique(y_true)
    if len(present) == len(classes):  # AUC is undefined when a class is absent from the holdout
        if len(classes) == 2:
            out["roc_auc"] = float(m.roc_auc_score(y_true, proba[:, 1]))
        else:
            out["roc_auc"] = float(
                m.roc_auc_score(y_true, proba, multi_class="ovr", labels=labels)
            )
    return out
