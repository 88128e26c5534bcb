"""Serving-side metrics in NumPy, so /evaluate never imports scikit-learn.

They follow scikit-learn's definitions (macro averages over the model's classes with
zero_division=0, one-vs-rest macro ROC AUC, log loss clipped at 1e-15); a test checks them
against scikit-learn on the same inputs. Regression metrics square scaled values, so targets
near ±1e300 still give finite metrics; a metric beyond float64 raises MetricOverflow.
"""

from __future__ import annotations

import numpy as np


class MetricOverflow(ArithmeticError):
    """A metric whose value is beyond float64 (e.g. r2 of targets that hardly vary, against
    predictions far off); ``row`` is the row with the largest error."""

    def __init__(self, metric: str, row: int) -> None:
        super().__init__(f"{metric} is beyond the float64 range (largest error at row {row})")
        self.metric = metric
        self.row = row


def _scaled(values: np.ndarray) -> tuple[float, np.ndarray]:
    """``values`` as ``scale * unit`` with ``|unit| <= 1``, so that squaring ``unit`` neither
    overflows (values near 1e300) nor vanishes (values near 1e-300)."""
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    return (scale, values / scale) if scale > 0 else (0.0, values)


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and r2 of finite ``pred`` against finite ``y``, finite whenever the value is
    representable in float64 (squares are taken of scaled values); MetricOverflow otherwise."""
    with np.errstate(over="ignore"):
        err = pred - y
    factor = 1.0
    if not np.isfinite(err).all():  # |pred - y| itself beyond float64: work on halves
        err, factor = pred / 2 - y / 2, 2.0
    err_scale, err_unit = _scaled(err)
    y_scale, y_unit = _scaled(y)
    deviation = y_unit - y_unit.mean()
    ss_res, ss_tot = np.sum(err_unit**2), np.sum(deviation**2)
    scale = np.float64(err_scale)  # NumPy scalars: an overflow is inf, not an exception
    with np.errstate(over="ignore"):
        out = {
            "rmse": float(factor * (scale * np.sqrt(np.mean(err_unit**2)))),
            "mae": float(factor * (scale * np.mean(np.abs(err_unit)))),
            # sum(err**2) / sum((y - mean)**2), each side divided by its own scale squared
            "r2": float(1.0 - (factor * (scale / y_scale)) ** 2 * (ss_res / ss_tot)) if ss_tot > 0 else 0.0,
        }
    for name, value in out.items():
        if not np.isfinite(value):
            raise MetricOverflow(name, int(np.argmax(np.abs(err))))
    return out


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney U with average ranks for ties (what roc_auc_score computes)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    i = 0
    while i < len(score):
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(y: np.ndarray, pred: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """``y`` and ``pred`` are class indices into the columns of ``proba``."""
    k = proba.shape[1]
    precision, recall, f1 = [], [], []
    for c in range(k):
        tp = float(np.sum((pred == c) & (y == c)))
        fp = float(np.sum((pred == c) & (y != c)))
        fn = float(np.sum((pred != c) & (y == c)))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    clipped = np.clip(proba / proba.sum(axis=1, keepdims=True), 1e-15, 1.0)
    out = {
        "accuracy": float(np.mean(pred == y)),
        "f1_macro": float(np.mean(f1)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "log_loss": float(-np.mean(np.log(clipped[np.arange(len(y)), y]))),
    }
    present = np.unique(y)
    if len(present) == k:  # undefined when a class is absent, as in scikit-learn
        if k == 2:
            out["roc_auc"] = _binary_auc(y == 1, proba[:, 1])
        else:
            out["roc_auc"] = float(np.mean([_binary_auc(y == c, proba[:, c]) for c in range(k)]))
    return out
