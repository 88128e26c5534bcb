"""Plotly figures for the pages, built from pandas frames (no Streamlit here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

# Metrics where a smaller value is better; every other metric is "higher is better".
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss", "mse"})
HEIGHT = 360


def _tidy(fig: go.Figure, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def target_distribution(frame: pd.DataFrame, target: str, task: str) -> go.Figure:
    if task == "classification" or not is_numeric(frame[target]):
        counts = frame[target].astype(str).value_counts(dropna=False).rename_axis(target).reset_index()
        fig = px.bar(counts, x=target, y="count", color=target, title=f"Target distribution: {target}")
        fig.update_layout(showlegend=False)
        fig.update_xaxes(type="category")  # labels such as "0".."9" are classes, not numbers
    else:
        fig = px.histogram(frame, x=target, nbins=40, title=f"Target distribution: {target}")
    return _tidy(fig)


def _by_target(frame: pd.DataFrame, target: str, task: str) -> tuple[pd.DataFrame, str | None]:
    """A copy whose target is a string label (classification), so colours are categories."""
    if task != "classification":
        return frame, None
    labelled = frame.assign(**{target: frame[target].astype(str)})
    return labelled, target


def feature_histogram(frame: pd.DataFrame, feature: str, target: str | None, task: str) -> go.Figure:
    """The feature's histogram, one colour per class when the target is a class label."""
    data, color = _by_target(frame, target, task) if target else (frame, None)
    fig = px.histogram(data, x=feature, color=color, barmode="overlay", nbins=40, opacity=0.7,
                       title=f"{feature}: histogram" + (f" by {target}" if color else ""))
    return _tidy(fig)


def feature_by_target(frame: pd.DataFrame, feature: str, target: str, task: str) -> go.Figure:
    """A box plot of the feature per class; for regression a scatter against the target."""
    data, color = _by_target(frame, target, task)
    if color and is_numeric(frame[feature]):
        fig = px.box(data, x=target, y=feature, color=target, points="outliers",
                     title=f"{feature} by {target}")
        fig.update_layout(showlegend=False)
        fig.update_xaxes(type="category")
    elif color:
        counts = data.groupby([feature, target], dropna=False).size().reset_index(name="count")
        fig = px.bar(counts, x=feature, y="count", color=target, barmode="group",
                     title=f"{feature} by {target}")
    elif is_numeric(frame[feature]):
        fig = px.scatter(frame, x=feature, y=target, opacity=0.6, title=f"{target} against {feature}")
    else:
        fig = px.box(frame, x=feature, y=target, title=f"{target} by {feature}")
    return _tidy(fig)


def correlation_heatmap(frame: pd.DataFrame) -> go.Figure | None:
    """Pearson correlations between the numeric columns; None if there are fewer than two."""
    numeric = frame[[c for c in frame.columns if is_numeric(frame[c])]]
    if numeric.shape[1] < 2:
        return None
    corr = numeric.corr().round(2)
    fig = px.imshow(corr, text_auto=numeric.shape[1] <= 15, zmin=-1, zmax=1,
                    color_continuous_scale="RdBu_r", aspect="auto", title="Correlation (numeric columns)")
    return _tidy(fig, height=max(HEIGHT, 22 * numeric.shape[1]))


def missing_values(frame: pd.DataFrame) -> go.Figure:
    missing = frame.isna().sum().rename_axis("column").reset_index(name="missing")
    missing["share"] = missing["missing"] / max(len(frame), 1)
    fig = px.bar(missing, x="column", y="missing", hover_data={"share": ":.1%"},
                 title=f"Missing values per column ({int(missing['missing'].sum())} cells)")
    return _tidy(fig)


def label_counts(labels: Sequence[str], title: str) -> go.Figure:
    counts = pd.Series(list(labels), dtype=str).value_counts().rename_axis("label").reset_index()
    fig = px.bar(counts, x="label", y="count", title=title)
    fig.update_xaxes(type="category")
    return _tidy(fig)


def metric_comparison(table: pd.DataFrame, metric: str, deployed_id: int | None) -> go.Figure:
    """One bar per experiment (``experiment_id``, ``model_class``, the metric column)."""
    data = table.dropna(subset=[metric]).sort_values("experiment_id").copy()
    data["experiment"] = [
        f"#{i}" + (" (deployed)" if i == deployed_id else "") for i in data["experiment_id"]
    ]
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    fig = px.bar(data, x="experiment", y=metric, color="model_class", text_auto=".3f",
                 title=f"{metric} per experiment ({better} is better)",
                 category_orders={"experiment": list(data["experiment"])})
    return _tidy(fig)


def probabilities(probs: Mapping[str, float]) -> go.Figure:
    data = pd.DataFrame({"class": list(probs), "probability": list(probs.values())})
    data = data.sort_values("probability", ascending=False)
    fig = px.bar(data, x="probability", y="class", orientation="h", text_auto=".3f",
                 range_x=[0, 1], title="Probabilities")
    fig.update_yaxes(type="category", categoryorder="total ascending")
    return _tidy(fig, height=max(220, 40 * len(data) + 80))


def confusion_matrix(actual: Sequence[Any], predicted: Sequence[Any]) -> go.Figure:
    actual_s = pd.Series([str(a) for a in actual], name="actual")
    predicted_s = pd.Series([str(p) for p in predicted], name="predicted")
    labels = sorted(set(actual_s) | set(predicted_s))
    matrix = pd.crosstab(actual_s, predicted_s).reindex(index=labels, columns=labels, fill_value=0)
    fig = px.imshow(matrix, text_auto=True, color_continuous_scale="Blues", aspect="auto",
                    labels={"x": "predicted", "y": "actual", "color": "rows"}, title="Confusion matrix")
    fig.update_xaxes(type="category", side="bottom")
    fig.update_yaxes(type="category")
    return _tidy(fig, height=max(HEIGHT, 40 * len(labels) + 120))


def residuals(actual: Sequence[float], predicted: Sequence[float]) -> go.Figure:
    data = pd.DataFrame({"predicted": list(predicted), "actual": list(actual)})
    data["residual"] = data["actual"] - data["predicted"]
    fig = px.scatter(data, x="predicted", y="residual", opacity=0.7, hover_data=["actual"],
                     title="Residuals (actual − predicted)")
    fig.add_hline(y=0, line_dash="dash", line_color="grey")
    return _tidy(fig)


def requests_over_time(log: pd.DataFrame, freq: str) -> go.Figure:
    counts = (log.assign(outcome=log["status"].map(lambda s: "error" if s >= 400 else "ok"))
              .groupby([pd.Grouper(key="time", freq=freq), "outcome"]).size().reset_index(name="requests"))
    fig = px.bar(counts, x="time", y="requests", color="outcome", title="Requests",
                 color_discrete_map={"ok": "#2e7d32", "error": "#c62828"})
    return _tidy(fig)


def latency_over_time(log: pd.DataFrame) -> go.Figure:
    fig = px.scatter(log, x="time", y="latency_ms", color="route", opacity=0.7,
                     hover_data=["rows", "status", "experiment_id"], title="Latency (ms)")
    return _tidy(fig)


def predictions_over_time(counts: pd.DataFrame, freq: str) -> go.Figure:
    """``counts`` has columns time, label, count (classification)."""
    binned = (counts.groupby([pd.Grouper(key="time", freq=freq), "label"])["count"].sum()
              .reset_index())
    return _tidy(px.bar(binned, x="time", y="count", color="label", title="Predictions per class"))


def values_over_time(values: pd.DataFrame) -> go.Figure:
    """``values`` has columns time, value (regression: the predicted value or batch mean)."""
    return _tidy(px.scatter(values, x="time", y="value", title="Predicted values"))


def psi_per_feature(features: pd.DataFrame, threshold: float) -> go.Figure:
    """``features`` has columns feature, psi, drifted (ui/drift.py); one bar per feature with a
    PSI, drifted ones in red, and the threshold as a line."""
    data = features.dropna(subset=["psi"]).assign(
        state=lambda f: f["drifted"].map({True: "drifted", False: "stable"}))
    fig = px.bar(data, x="psi", y="feature", orientation="h", color="state", text_auto=".3f",
                 color_discrete_map={"drifted": "#c62828", "stable": "#2e7d32"},
                 title=f"PSI per feature (drifted above {threshold:g})",
                 category_orders={"feature": list(data["feature"])})
    fig.add_vline(x=threshold, line_dash="dash", line_color="grey",
                  annotation_text=f"threshold {threshold:g}", annotation_position="top right")
    fig.update_yaxes(type="category")
    return _tidy(fig, height=max(HEIGHT, 28 * len(data) + 120))
