"""Training plots of an experiment: the data behind each plot (CSV) and a PNG of the same data.

Which plots apply depends on the task and the model class: learning curves for iterative models
(CatBoost's per-iteration loss), a confusion matrix and one-vs-rest ROC and precision-recall
curves for classification, residuals and predicted-vs-actual for regression, and feature
importance where the model has it (random forest, CatBoost), summed back onto the input columns.
Every plot is computed on the holdout, from the ONNX model's predictions (``trained.served``).

The CSV tables come with their DVC plot definitions (``dvc plots show`` renders them); the PNGs
are drawn with matplotlib's Agg canvas, imported only here and only when a figure is drawn.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.domain import Feature, ImageSpec, Task
from common.training.frames import pixel_columns

TOP_FEATURES = 30  # bars drawn in the importance PNG (the CSV has every feature)
DPI = 100


@dataclass
class Plot:
    """One plot: its tables, how DVC renders them, and how matplotlib draws them."""

    name: str
    title: str
    template: str
    x: str
    y: dict[str, str | list[str]]  # table name -> its y field(s)
    x_label: str
    y_label: str
    tables: dict[str, pd.DataFrame]
    draw: Callable[[Any], None]  # draws onto a matplotlib Figure
    size: tuple[float, float] = (6.4, 4.8)


def holdout_plots(
    trained: Any, task: Task, features: Sequence[Feature], image: ImageSpec | None = None
) -> list[Plot]:
    """The plots that apply to ``trained`` (a :class:`~common.training.trainer.TrainedModel`)."""
    plots: list[Plot] = []
    curves = learning_curves(trained)
    if curves is not None:
        plots.append(curves)
    if task is Task.classification:
        plots.append(confusion_matrix(trained))
        plots.extend(roc_and_pr(trained))
    else:
        plots.extend(regression_plots(trained))
    importance = feature_importance(trained, features, image)
    if importance is not None:
        plots.append(importance)
    return plots


def write_plots(plots: Sequence[Plot], data_dir: Path, image_dir: Path, relative_to: Path) -> list[dict]:
    """Write each plot's tables as CSV under ``data_dir`` and its PNG under ``image_dir``.

    Returns the DVC top-level plot definitions of the tables, with paths relative to
    ``relative_to`` (the directory of the ``dvc.yaml`` that will hold them).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    definitions: list[dict] = []
    for plot in plots:
        y: dict[str, str | list[str]] = {}
        for table, frame in plot.tables.items():
            path = data_dir / table
            frame.to_csv(path, index=False)
            y[path.relative_to(relative_to).as_posix()] = plot.y[table]
        render(plot, image_dir / f"{plot.name}.png")
        definitions.append(
            {
                plot.name: {
                    "template": plot.template,
                    "x": plot.x,
                    "y": y,
                    "title": plot.title,
                    "x_label": plot.x_label,
                    "y_label": plot.y_label,
                }
            }
        )
    return definitions


def render(plot: Plot, path: Path) -> None:
    """Draw ``plot`` into a PNG file with the Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=plot.size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    plot.draw(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")


# -- the plots -----------------------------------------------------------------------------------


def learning_curves(trained: Any) -> Plot | None:
    """Per-iteration learn and validation (holdout) loss, for models that record it."""
    columns: dict[str, list[float]] = {}
    for split, metrics in trained.learning_curves.items():
        for metric, values in metrics.items():
            columns[f"{split}_{metric}"] = list(values)
    if not columns:
        return None
    length = max(len(v) for v in columns.values())
    table = pd.DataFrame({"iteration": np.arange(length)})
    for name, values in columns.items():
        table[name] = pd.Series(values, dtype=np.float64)
    metric_names = sorted({m for metrics in trained.learning_curves.values() for m in metrics})

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        for name in columns:
            ax.plot(table["iteration"], table[name], label=name.replace("_", " ", 1))
        ax.set(title="Learning curves", xlabel="iteration", ylabel=", ".join(metric_names))
        ax.grid(alpha=0.3)
        ax.legend()

    return Plot(
        name="learning_curves",
        title="Learning curves (learn and holdout loss per iteration)",
        template="simple",
        x="iteration",
        y={"learning_curves.csv": list(columns)},
        x_label="iteration",
        y_label=", ".join(metric_names),
        tables={"learning_curves.csv": table},
        draw=draw,
    )


def confusion_matrix(trained: Any) -> Plot:
    """Holdout rows by actual and predicted class."""
    classes = [str(c) for c in trained.classes]
    actual = [classes[int(i)] for i in trained.holdout_target]
    predicted = [str(p) for p in trained.served.predictions]
    table = pd.DataFrame({"actual": actual, "predicted": predicted})
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for a, p in zip(actual, predicted, strict=True):
        counts[index[a], index[p]] += 1

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        shown = ax.imshow(counts, cmap="Blues")
        figure.colorbar(shown, ax=ax, label="rows")
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, labels=classes, rotation=45 if len(classes) > 4 else 0, ha="right")
        ax.set_yticks(ticks, labels=classes)
        ax.set(title="Confusion matrix (holdout)", xlabel="predicted", ylabel="actual")
        threshold = counts.max() / 2 if counts.size else 0
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center",
                    color="white" if value > threshold else "black")

    side = max(4.8, 0.5 * len(classes) + 2.5)
    return Plot(
        name="confusion_matrix",
        title="Confusion matrix (holdout)",
        template="confusion",
        x="actual",
        y={"confusion_matrix.csv": "predicted"},
        x_label="actual",
        y_label="predicted",
        tables={"confusion_matrix.csv": table},
        draw=draw,
        size=(side + 1.2, side),
    )


def roc_and_pr(trained: Any) -> list[Plot]:
    """One-vs-rest ROC and precision-recall curves: the positive class for binary problems,
    every class present in the holdout (with both positives and negatives) otherwise."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    classes = [str(c) for c in trained.classes]
    proba = probability_matrix(trained)
    y = np.asarray(trained.holdout_target, dtype=np.int64)
    wanted = [1] if len(classes) == 2 else list(range(len(classes)))
    names = table_names(classes)
    roc_tables: dict[str, pd.DataFrame] = {}
    pr_tables: dict[str, pd.DataFrame] = {}
    roc_labels: dict[str, str] = {}
    pr_labels: dict[str, str] = {}
    for c in wanted:
        positive = y == c
        if positive.all() or not positive.any():
            continue  # undefined without both positives and negatives
        fpr, tpr, thresholds = roc_curve(positive, proba[:, c])
        table = f"roc_{names[c]}.csv"
        roc_tables[table] = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})
        roc_labels[table] = f"{classes[c]} (AUC {auc(fpr, tpr):.3f})"
        precision, recall, thresholds = precision_recall_curve(positive, proba[:, c])
        table = f"pr_{names[c]}.csv"
        pr_tables[table] = pd.DataFrame(
            {"recall": recall, "precision": precision,
             "threshold": np.append(thresholds, np.nan)}  # the last point has no threshold
        )
        pr_labels[table] = f"{classes[c]} (AP {average_precision_score(positive, proba[:, c]):.3f})"
    suffix = "" if len(classes) == 2 else ", one-vs-rest"

    def draw_roc(figure: Any) -> None:
        ax = figure.add_subplot()
        for table, frame in roc_tables.items():
            ax.plot(frame["fpr"], frame["tpr"], label=roc_labels[table])
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set(title=f"ROC (holdout{suffix})", xlabel="false positive rate",
               ylabel="true positive rate", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
        ax.grid(alpha=0.3)
        if roc_tables:
            ax.legend(loc="lower right")

    def draw_pr(figure: Any) -> None:
        ax = figure.add_subplot()
        for table, frame in pr_tables.items():
            ax.plot(frame["recall"], frame["precision"], label=pr_labels[table], drawstyle="steps-post")
        ax.set(title=f"Precision-recall (holdout{suffix})", xlabel="recall", ylabel="precision",
               xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
        ax.grid(alpha=0.3)
        if pr_tables:
            ax.legend(loc="lower left")

    return [
        Plot(
            name="roc",
            title=f"ROC (holdout{suffix})",
            template="simple",
            x="fpr",
            y=dict.fromkeys(roc_tables, "tpr"),
            x_label="false positive rate",
            y_label="true positive rate",
            tables=roc_tables,
            draw=draw_roc,
        ),
        Plot(
            name="precision_recall",
            title=f"Precision-recall (holdout{suffix})",
            template="simple",
            x="recall",
            y=dict.fromkeys(pr_tables, "precision"),
            x_label="recall",
            y_label="precision",
            tables=pr_tables,
            draw=draw_pr,
        ),
    ]


def regression_plots(trained: Any) -> list[Plot]:
    """Residuals against the prediction, and predicted against actual, on the holdout."""
    actual = np.asarray(trained.holdout_target, dtype=np.float64)
    predicted = np.asarray(trained.served.predictions, dtype=np.float64)
    table = pd.DataFrame({"actual": actual, "predicted": predicted, "residual": actual - predicted})

    def draw_residuals(figure: Any) -> None:
        ax = figure.add_subplot()
        ax.scatter(table["predicted"], table["residual"], s=14, alpha=0.7)
        ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set(title="Residuals (holdout)", xlabel="predicted", ylabel="actual - predicted")
        ax.grid(alpha=0.3)

    def draw_predicted(figure: Any) -> None:
        ax = figure.add_subplot()
        ax.scatter(table["actual"], table["predicted"], s=14, alpha=0.7)
        both = np.concatenate([actual, predicted])
        low, high = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        ax.set(title="Predicted vs actual (holdout)", xlabel="actual", ylabel="predicted")
        ax.grid(alpha=0.3)

    return [
        Plot(
            name="residuals",
            title="Residuals (holdout)",
            template="scatter",
            x="predicted",
            y={"residuals.csv": "residual"},
            x_label="predicted",
            y_label="actual - predicted",
            tables={"residuals.csv": table},
            draw=draw_residuals,
        ),
        Plot(
            name="predicted_vs_actual",
            title="Predicted vs actual (holdout)",
            template="scatter",
            x="actual",
            y={"predicted_vs_actual.csv": "predicted"},
            x_label="actual",
            y_label="predicted",
            tables={"predicted_vs_actual.csv": table[["actual", "predicted"]]},
            draw=draw_predicted,
        ),
    ]


def feature_importance(
    trained: Any, features: Sequence[Feature], image: ImageSpec | None = None
) -> Plot | None:
    """The model's own importances (random forest, CatBoost) as shares summing to 1, per input
    column; None for models without them (SVM, logistic regression)."""
    model = trained.pipeline.steps[-1][1]
    if hasattr(model, "get_feature_importance"):  # CatBoost
        raw = np.asarray(model.get_feature_importance(), dtype=np.float64)
    elif hasattr(model, "feature_importances_"):
        raw = np.asarray(model.feature_importances_, dtype=np.float64)
    else:
        return None
    total = raw.sum()
    shares = raw / total if total > 0 else raw
    if image is not None:
        names = pixel_columns(image)
    else:
        names = (input_columns(trained.pipeline, len(shares))
                 or transformed_names(trained.pipeline, len(shares)))
    per_feature: dict[str, float] = {}
    for name, share in zip(names, shares, strict=True):
        per_feature[name] = per_feature.get(name, 0.0) + float(share)
    table = pd.DataFrame({"feature": list(per_feature), "importance": list(per_feature.values())})
    table = table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    kind = "prediction values change" if hasattr(model, "get_feature_importance") else "impurity decrease"

    def draw(figure: Any) -> None:
        if image is not None:
            ax = figure.add_subplot()
            values = np.asarray([per_feature[n] for n in pixel_columns(image)])
            grid = values.reshape(image.height, image.width, image.channels).sum(axis=2)
            shown = ax.imshow(grid, cmap="viridis")
            figure.colorbar(shown, ax=ax, label="share of importance")
            ax.set(title=f"Pixel importance ({kind})")
            ax.set_xticks([])
            ax.set_yticks([])
            return
        top = table.head(TOP_FEATURES).iloc[::-1]
        ax = figure.add_subplot()
        ax.barh(top["feature"], top["importance"])
        ax.set(title=f"Feature importance ({kind})", xlabel="share of importance")
        ax.grid(alpha=0.3, axis="x")

    rows = min(len(table), TOP_FEATURES)
    return Plot(
        name="feature_importance",
        title=f"Feature importance ({kind})",
        template="bar_horizontal_sorted",
        x="importance",
        y={"feature_importance.csv": "feature"},
        x_label="share of importance",
        y_label="feature",
        tables={"feature_importance.csv": table},
        draw=draw,
        size=(6.4, 4.8) if image is not None else (7.0, max(3.0, 0.3 * rows + 1.2)),
    )


# -- helpers -------------------------------------------------------------------------------------


def probability_matrix(trained: Any) -> np.ndarray:
    """The served class probabilities as an (n, classes) array, rows normalised to sum to 1."""
    keys = [str(c) for c in trained.classes]
    proba = np.array([[row[k] for k in keys] for row in trained.served.probabilities or []],
                     dtype=np.float64).reshape(-1, len(keys))
    sums = proba.sum(axis=1, keepdims=True)
    return np.divide(proba, sums, out=np.zeros_like(proba), where=sums > 0)


def table_names(labels: Sequence[str]) -> list[str]:
    """File-name-safe, unique names for class labels."""
    out: list[str] = []
    for i, label in enumerate(labels):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._") or f"class{i}"
        out.append(name if name not in out else f"{name}_{i}")
    return out


def input_columns(pipeline: Any, width: int) -> list[str] | None:
    """For each column the final estimator sees, the input column it was made from (one-hot
    columns map to their categorical feature); None when the preprocessing is not ours."""
    from sklearn.compose import ColumnTransformer

    if len(pipeline.steps) < 2 or not isinstance(pipeline.steps[0][1], ColumnTransformer):
        return None
    transformer = pipeline.steps[0][1]
    sources: list[str | None] = [None] * width
    for name, step, columns in transformer.transformers_:
        if name == "remainder" or name not in transformer.output_indices_:
            continue
        where = transformer.output_indices_[name]
        widths = [len(c) for c in step.categories_] if hasattr(step, "categories_") else [1] * len(columns)
        expanded = [column for column, w in zip(columns, widths, strict=True) for _ in range(w)]
        if len(expanded) != where.stop - where.start or where.stop > width:
            return None
        sources[where] = expanded
    if any(s is None for s in sources):
        return None
    return [str(s) for s in sources]


def transformed_names(pipeline: Any, width: int) -> list[str]:
    """The preprocessing's output names, or positional names if it has none."""
    try:
        names = [str(n) for n in pipeline[:-1].get_feature_names_out()]
    except (AttributeError, ValueError, TypeError):
        names = []
    return names if len(names) == width else [f"x{i}" for i in range(width)]
