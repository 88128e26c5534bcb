"""Tabular data on the training side: schema inference, schema checks and model-ready frames."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from common.domain import Feature, FeatureKind, ImageSpec, Task
from common.errors import BadRequest
from common.inference.inputs import MISSING_CATEGORY


def infer_features(frame: pd.DataFrame, target: str) -> list[Feature]:
    """Numeric columns become numeric features, everything else categorical (target excluded)."""
    if target not in frame.columns:
        from common.inference.inputs import unknown_column_hint

        columns = [str(c) for c in frame.columns]
        hint = next((h for h in (unknown_column_hint(c, None) for c in columns) if h), "")
        raise BadRequest(f"target column {target!r} is missing; columns: {columns[:20]}{hint}")
    features = []
    for name in frame.columns:
        if name == target:
            continue
        col = frame[name]
        if not isinstance(name, str) or not name:
            raise BadRequest(f"column names must be non-empty strings, got {name!r}")
        if col.isna().all():
            raise BadRequest(f"column {name!r} has no values; its type cannot be inferred")
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if not numeric and frame.attrs.get("source") == "csv":
            # CSV cells are text: a column whose every cell reads as a number is numeric.
            numeric = bool(pd.to_numeric(col.dropna(), errors="coerce").notna().all())
        features.append(Feature(name=name, kind=FeatureKind.numeric if numeric else FeatureKind.categorical))
    if not features:
        raise BadRequest("the data has no feature columns besides the target")
    return features


def feature_frame(frame: pd.DataFrame, features: Sequence[Feature]) -> pd.DataFrame:
    """The feature columns typed as the ONNX graph sees them.

    Numbers are rounded to float32 first so that the native model learns split thresholds on
    exactly the values ONNX Runtime will compare; categories become Python strings.
    """
    out = {}
    for f in features:
        col = frame[f.name]
        if f.kind is FeatureKind.numeric:
            out[f.name] = pd.to_numeric(col, errors="raise").astype(np.float32).astype(np.float64)
        else:
            values = col.astype(object).where(col.notna(), MISSING_CATEGORY)
            out[f.name] = values.map(str).astype(object)
    return pd.DataFrame(out, index=frame.index)


def frame_records(frame: pd.DataFrame, features: Sequence[Feature]) -> list[dict[str, Any]]:
    """Rows as the JSON records a client would send (missing numbers as None)."""
    cols = {}
    for f in features:
        values = frame[f.name].tolist()
        if f.kind is FeatureKind.numeric:
            values = [None if v != v else float(v) for v in values]
        cols[f.name] = values
    n = len(frame)
    return [{name: cols[name][i] for name in cols} for i in range(n)]


def encode_target(y: pd.Series, task: Task) -> tuple[np.ndarray, list[Any]]:
    """Class indices 0..K-1 and the class labels (JSON-friendly), or float targets."""
    if y.isna().any():
        row = int(np.flatnonzero(y.isna().to_numpy())[0])
        raise BadRequest(f"target {y.name!r} (row {row}) is missing")
    if task is Task.regression:
        try:
            return pd.to_numeric(y, errors="raise").to_numpy(np.float64), []
        except (ValueError, TypeError):
            raise BadRequest(f"target {y.name!r} must be numeric for regression") from None
    values = y.to_numpy()
    if len({type(v) for v in values}) > 1:  # e.g. labels from a CSV part and a JSON part
        values = np.array([str(json_label(v)) for v in values], dtype=object)
    classes_raw, idx = np.unique(values, return_inverse=True)
    if len(classes_raw) < 2:
        raise BadRequest(f"target {y.name!r} has a single class; classification needs two or more")
    return idx.astype(np.int64), [json_label(c) for c in classes_raw]


def json_label(value: Any) -> Any:
    """A class label as a JSON scalar: integral numbers become ints, everything else str."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    return str(value)


def pixel_columns(spec: ImageSpec) -> list[str]:
    """Column names of an image dataset's flattened pixels."""
    return [f"px_{i}" for i in range(spec.n_pixels)]
