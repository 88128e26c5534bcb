"""Serving-side metrics in NumPy, so /evaluate never imports scikit-learn.

They follow scikit-learn's definitions (macro averages over the model's classes with
zero_division=0, one-vs-rest macro ROC AUC, log loss clipped at 1e-15); a test checks them
against scikit-learn on the same inputs.
"""

from __future__ import annotations

import numpy as np


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    err = pred - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else 0.0
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": r2,
    }


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
