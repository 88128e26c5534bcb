"""Labelled data on the training side: parse uploads, check them against the schema, and keep
them as immutable Parquet parts in the object store."""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
import pandas as pd

from common.domain import Feature, FeatureKind, ModelRecord, Task
from common.errors import BadRequest, NotFound
from common.names import dataset_part_key
from common.storage.ports import ExperimentStore, ObjectStore
from common.training.frames import infer_features


def frame_from_records(records: Any) -> pd.DataFrame:
    if not isinstance(records, list) or not records:
        raise BadRequest("'records' must be a non-empty JSON array of objects")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise BadRequest(f"record (row {i}): expected a JSON object")
        for key, value in rec.items():
            if value is not None and not isinstance(value, str | int | float | bool):
                raise BadRequest(f"column {key!r} (row {i}): expected a scalar, got {value!r}")
    frame = pd.DataFrame.from_records(records)
    frame.attrs["source"] = "json"  # JSON says what is text: categories must arrive as strings
    columns = set(frame.columns)
    for i, rec in enumerate(records):
        if set(rec) != columns:
            missing = sorted(columns - set(rec))
            extra = sorted(set(rec) - columns)
            name = (missing or extra)[0]
            raise BadRequest(f"column {name!r} (row {i}): present in some records but not others")
    for name in frame.columns:
        # JSON is explicit about types: a column mixing numbers and strings is a caller error.
        is_text = [isinstance(v, str) for v in frame[name] if v is not None and v == v]
        texts = sum(is_text)
        if 0 < texts < len(is_text):
            # Blame the first row of the minority type: that is usually the typo.
            odd_is_text = texts <= len(is_text) - texts
            row = next(i for i, rec in enumerate(records)
                       if rec.get(name) is not None and isinstance(rec[name], str) == odd_is_text)
            raise BadRequest(
                f"column {name!r} (row {row}): {records[row][name]!r} mixes "
                f"{'text' if odd_is_text else 'a number'} into a column of "
                f"{'numbers' if odd_is_text else 'text'}"
            )
    return frame


def frame_from_csv(body: bytes) -> pd.DataFrame:
    """A CSV upload as text cells (empty cell = missing), parsed by the same strict reader that
    serving uses; the stored schema (or, on a first upload, inference) decides the types."""
    from common.payloads import csv_rows

    header, rows = csv_rows(body)
    if not rows:
        raise BadRequest("the CSV has no data rows (a header row, then one row per example; "
                         "send files with curl --data-binary @file, which keeps the line breaks)")
    if any(not name.strip() for name in header):
        raise BadRequest("the CSV header has an empty column name")
    frame = pd.DataFrame(
        [[cell if cell != "" else None for cell in row] for row in rows], columns=header, dtype=object
    )
    frame.attrs["source"] = "csv"  # CSV cells are text: numbers are recognised, not typed
    return frame


def conform(frame: pd.DataFrame, model: ModelRecord, features: list[Feature]) -> pd.DataFrame:
    """``frame`` checked against ``features`` and the target, typed for storage."""
    expected = [f.name for f in features] + [model.target]
    for name in frame.columns:
        if name not in expected:
            raise BadRequest(f"unexpected column {name!r}; expected {expected}")
    for name in expected:
        if name not in frame.columns:
            raise BadRequest(f"missing column {name!r}")
    out = {}
    for f in features:
        col = frame[f.name]
        if f.kind is FeatureKind.numeric:
            if pd.api.types.is_bool_dtype(col):
                raise BadRequest(f"column {f.name!r} (row 0): expected numbers, got booleans")
            numbers = pd.to_numeric(col, errors="coerce")
            bad = numbers.isna() & col.notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise BadRequest(
                    f"column {f.name!r} (row {row}): expected a number, got {col.iloc[row]!r}"
                )
            if not np.isfinite(numbers.dropna().to_numpy(np.float64)).all():
                row = int(np.flatnonzero(~np.isfinite(numbers.fillna(0).to_numpy(np.float64)))[0])
                raise BadRequest(f"column {f.name!r} (row {row}): not a finite number")
            out[f.name] = numbers.astype(np.float64)
        else:
            if frame.attrs.get("source") == "json":
                typed = [i for i, v in enumerate(col) if v is not None and v == v and not isinstance(v, str)]
                if typed:
                    row = typed[0]
                    raise BadRequest(
                        f"column {f.name!r} (row {row}): expected a string category, got "
                        f"{col.iloc[row]!r} (send categories as JSON strings, as /forward expects)"
                    )
            out[f.name] = col.astype(object).where(col.notna(), None).map(
                lambda v: v if v is None else str(v)
            )
    target = frame[model.target]
    if target.map(lambda v: isinstance(v, float) and v != v).any() or target.isna().any():
        row = int(np.flatnonzero(target.isna().to_numpy())[0])
        raise BadRequest(f"target {model.target!r} (row {row}) is missing")
    if model.task is Task.regression:
        numbers = pd.to_numeric(target, errors="coerce")
        if numbers.isna().any():
            row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
            raise BadRequest(
                f"target {model.target!r} (row {row}): expected a number for regression, "
                f"got {target.iloc[row]!r}"
            )
        bad = ~np.isfinite(numbers.to_numpy(np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise BadRequest(
                f"target {model.target!r} (row {row}): {target.iloc[row]!r} is not a finite number"
            )
        out[model.target] = numbers.astype(np.float64)
    else:
        kinds = {"text" if isinstance(v, str) else "boolean" if isinstance(v, bool | np.bool_) else "number"
                 for v in target}
        if len(kinds) > 1:
            raise BadRequest(
                f"target {model.target!r} mixes {' and '.join(sorted(kinds))} labels; use one type"
            )
        out[model.target] = target
    return pd.DataFrame(out)


def schema_for(frame: pd.DataFrame, model: ModelRecord) -> list[Feature]:
    """The stored schema, or the one inferred from this (first) upload."""
    if model.features is not None:
        return model.features
    return infer_features(frame, model.target)


def part_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buf, index=False)
    return buf.getvalue()


def new_part_key(model: str) -> str:
    return dataset_part_key(model, uuid.uuid4().hex)


def load_dataset(
    objects: ObjectStore, experiments: ExperimentStore, model: ModelRecord, version: int
) -> pd.DataFrame:
    """All parts up to ``version`` concatenated in upload order."""
    parts = experiments.dataset_parts(model.name, version)
    if not parts:
        raise NotFound(f"model {model.name!r} has no data; upload some with add_data")
    frames = [pd.read_parquet(io.BytesIO(objects.get(p.key))) for p in parts]
    return pd.concat(frames, ignore_index=True)


def image_frame(
    pixels: list[np.ndarray], labels: list[str | None], names: list[str], model: ModelRecord
) -> pd.DataFrame:
    """Preprocessed images as a dataset part: one column per pixel, then the target."""
    assert model.image is not None
    from common.training.frames import pixel_columns

    targets: list[Any] = []
    for name, label in zip(names, labels, strict=True):
        if label is None:
            raise BadRequest(f"archive entry {name!r} has no label")
        if model.task is Task.regression:
            try:
                targets.append(float(label))
                if not np.isfinite(targets[-1]):
                    raise ValueError(label)
            except ValueError:
                raise BadRequest(
                    f"archive entry {name!r}: label {label!r} is not a number (regression model)"
                ) from None
        else:
            targets.append(str(label))
    frame = pd.DataFrame(np.stack(pixels), columns=pixel_columns(model.image))
    frame[model.target] = targets
    return frame
