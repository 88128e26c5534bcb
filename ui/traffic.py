"""Inference-log analysis for the Monitor page (pandas only): rows shaped like
``{"time", "model", "experiment_id", "route", "rows", "latency_ms", "status", "prediction_summary"}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from numbers import Real
from typing import Any

import pandas as pd

from ui.client import InferenceLogRow

COLUMNS = ["time", "model", "experiment_id", "route", "rows", "latency_ms", "status", "prediction_summary"]
# Keys a regression summary may carry; the first present is plotted.
VALUE_KEYS = ("mean", "value", "prediction", "median")


def frame_of(rows: Sequence[InferenceLogRow]) -> pd.DataFrame:
    log = pd.DataFrame(list(rows), columns=COLUMNS)
    log["time"] = pd.to_datetime(log["time"], utc=True, errors="coerce", format="ISO8601")
    log["latency_ms"] = pd.to_numeric(log["latency_ms"], errors="coerce")
    log["rows"] = pd.to_numeric(log["rows"], errors="coerce").fillna(0).astype(int)
    log["status"] = pd.to_numeric(log["status"], errors="coerce").fillna(0).astype(int)
    return log.dropna(subset=["time"]).sort_values("time").reset_index(drop=True)


def summary(log: pd.DataFrame) -> dict[str, float]:
    """Requests, rows, errors, error rate and latency percentiles (ms)."""
    latency = log["latency_ms"].dropna()
    errors = int((log["status"] >= 400).sum())
    out = {
        "requests": float(len(log)),
        "rows": float(log["rows"].sum()),
        "errors": float(errors),
        "error_rate": errors / len(log) if len(log) else 0.0,
    }
    for q in (50, 95, 99):
        out[f"p{q}"] = float(latency.quantile(q / 100)) if len(latency) else float("nan")
    return out


def latency_by_route(log: pd.DataFrame) -> pd.DataFrame:
    grouped = log.groupby("route")["latency_ms"]
    return pd.DataFrame({
        "requests": grouped.size(),
        "p50 ms": grouped.quantile(0.5),
        "p95 ms": grouped.quantile(0.95),
        "p99 ms": grouped.quantile(0.99),
        "errors": log.assign(error=log["status"] >= 400).groupby("route")["error"].sum(),
    }).reset_index()


def bin_width(log: pd.DataFrame, bins: int = 30) -> str:
    """A round pandas frequency that splits the log's time span into about ``bins`` bins."""
    span = (log["time"].max() - log["time"].min()) if len(log) else pd.Timedelta(0)
    for freq in ("1s", "5s", "10s", "30s", "1min", "5min", "10min", "30min", "1h", "6h"):
        if span / bins <= pd.Timedelta(freq):
            return freq
    return "1D"


def label_counts(summary: Any, rows: int) -> dict[str, float]:
    """A classification summary as ``{label: count}``: a label, a list of labels, or a mapping
    (``{label: count}`` or ``{"counts": {...}}``)."""
    if isinstance(summary, dict):
        inner = summary.get("counts") or summary.get("classes")
        if isinstance(inner, dict):
            summary = inner
        if all(isinstance(v, Real) and not isinstance(v, bool) for v in summary.values()):
            return {str(k): float(v) for k, v in summary.items()}
        return {}
    if isinstance(summary, list):
        return {str(k): float(v) for k, v in Counter(map(str, summary)).items()}
    if isinstance(summary, str | int) and not isinstance(summary, bool):
        return {str(summary): float(max(rows, 1))}
    return {}


def value_of(summary: Any) -> float | None:
    """A regression summary as one number: the value, a mapping's mean, or a list's mean."""
    if isinstance(summary, Real) and not isinstance(summary, bool):
        return float(summary)
    if isinstance(summary, dict):
        for key in VALUE_KEYS:
            if isinstance(summary.get(key), Real):
                return float(summary[key])
    if isinstance(summary, list):
        numbers = [float(v) for v in summary if isinstance(v, Real)]
        return sum(numbers) / len(numbers) if numbers else None
    return None


def predictions(log: pd.DataFrame, task: str) -> pd.DataFrame:
    """Classification: rows (time, label, count); regression: rows (time, value)."""
    ok = log[log["status"] < 400]
    if task == "classification":
        records = [
            {"time": t, "label": label, "count": count}
            for t, s, n in zip(ok["time"], ok["prediction_summary"], ok["rows"], strict=True)
            for label, count in label_counts(s, n).items()
        ]
        return pd.DataFrame(records, columns=["time", "label", "count"])
    records = [{"time": t, "value": v} for t, s in zip(ok["time"], ok["prediction_summary"], strict=True)
               if (v := value_of(s)) is not None]
    return pd.DataFrame(records, columns=["time", "value"])
