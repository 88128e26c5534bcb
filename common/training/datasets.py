"""Labelled data on the training side: parse uploads, check them against the schema, and keep
them as immutable Parquet parts in the object store.

Every feature value is checked by the functions /forward uses (``common.inference.inputs``), so
a value that is stored can also be trained on and served: a part, once stored, stays in every
dataset version that contains it (removing it makes a new version without it), and one value the
model cannot take would fail every training on those versions.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from common.domain import Feature, FeatureKind, ModelRecord, Task
from common.errors import BadRequest, NotFound
from common.inference.inputs import FLOAT32_MAX, categorical_value, numeric_value, parse_csv_cell
from common.names import CONTROL_CHARACTERS, check_text, dataset_part_key
from common.storage.ports import ExperimentStore, ObjectStore
from common.training.frames import infer_features


def frame_from_records(records: Any) -> pd.DataFrame:
    """JSON records as a frame of the values as sent (``dtype=object``: an integer stays an
    integer even next to a null, which a typed column would turn into a float)."""
    if not isinstance(records, list) or not records:
        raise BadRequest("'records' must be a non-empty JSON array of objects")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise BadRequest(f"record (row {i}): expected a JSON object")
        for key, value in rec.items():
            if value is not None and not isinstance(value, str | int | float | bool):
                raise BadRequest(f"column {key!r} (row {i}): expected a scalar, got {value!r}")
    frame = pd.DataFrame(records, dtype=object)
    frame.attrs["source"] = "json"  # JSON says what is text: the schema checks each value's type
    for name in frame.columns:
        if CONTROL_CHARACTERS.search(name):
            row = next(i for i, rec in enumerate(records) if name in rec)
            check_text(f"column {name!r} (row {row}): the name", name, "column names")
    columns = set(frame.columns)
    for i, rec in enumerate(records):
        if set(rec) != columns:
            missing = sorted(columns - set(rec))
            extra = sorted(set(rec) - columns)
            name = (missing or extra)[0]
            raise BadRequest(f"column {name!r} (row {i}): present in some records but not others")
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
    for name in header:
        check_text(f"column {name!r} of the CSV header", name, "column names")
    frame = pd.DataFrame(
        [[cell if cell != "" else None for cell in row] for row in rows], columns=header, dtype=object
    )
    frame.attrs["source"] = "csv"  # CSV cells are text: numbers are recognised, not typed
    return frame


def _check_json_types(frame: pd.DataFrame) -> None:
    """Refuse a JSON column that mixes numbers and strings (JSON is explicit about types: that is
    a caller error), before a first upload's schema is inferred from it."""
    for name in frame.columns:
        values = frame[name].tolist()
        is_text = [isinstance(v, str) for v in values if v is not None]
        texts = sum(is_text)
        if 0 < texts < len(is_text):
            # Blame the first row of the minority type: that is usually the typo.
            odd_is_text = texts <= len(is_text) - texts
            row = next(i for i, v in enumerate(values) if v is not None and isinstance(v, str) == odd_is_text)
            raise BadRequest(
                f"column {name!r} (row {row}): {values[row]!r} mixes "
                f"{'text' if odd_is_text else 'a number'} into a column of "
                f"{'numbers' if odd_is_text else 'text'}"
            )


def _is_missing(value: Any) -> bool:
    """A missing value in a JSON or DataFrame column (JSON has no NaN: a NaN is pandas' null)."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _numbers(feature: Feature, values: list[Any], csv: bool) -> np.ndarray:
    """A numeric column as float64 (NaN = missing), every value checked as /forward checks it:
    CSV cells by ``parse_csv_cell``, then each value by ``numeric_value`` (finite, in float32
    range, a number and not a boolean or a string)."""
    name = feature.name
    plain = False
    if csv:
        try:  # every cell a number: what parse_csv_cell reads, in one C loop
            values, plain = list(map(float, values)), True
        except (TypeError, ValueError):  # a missing or empty cell, or text: cell by cell
            values = [None if v is None else parse_csv_cell(feature, v, i)
                      for i, v in enumerate(values)]
    if plain or all(type(v) is float or type(v) is int or v is None for v in values):
        try:
            numbers = np.array(values, dtype=np.float64)  # None -> NaN
        except OverflowError:  # an int too large for a float: named below
            numbers = None
        if numbers is not None:
            missing = np.isnan(numbers)
            # a CSV cell reading "nan" is not missing (only an empty cell is), as in /forward
            if (np.abs(numbers[~missing]) <= FLOAT32_MAX).all() and (
                not csv or int(missing.sum()) == values.count(None)
            ):
                return numbers
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        out[i] = numeric_value(name, None if not csv and _is_missing(value) else value, i)
    return out


def _categories(name: str, values: list[Any], json: bool) -> list[str | None]:
    """A categorical column as strings (None = missing).

    JSON values are checked as /forward checks them (``categorical_value``: strings, and integers
    as their decimal text); CSV cells are text already and a DataFrame's values become their text.
    A NUL is refused, as binary data rather than a category (and text that C strings would cut
    short); other control characters such as a tab or a line break can be legitimate free text and
    are kept. /forward does not refuse a NUL: there it is only an unknown category, and the parity
    check at training feeds stored rows through the same function.
    """
    if all(type(v) is str for v in values):
        out: list[str | None] = list(values)
    elif json:
        out = [None if _is_missing(v) else categorical_value(name, v, i) for i, v in enumerate(values)]
    else:
        out = [None if _is_missing(v) else str(v) for v in values]
    if "\0" in "".join(v for v in out if v is not None):
        row = next(i for i, v in enumerate(out) if v is not None and "\0" in v)
        raise BadRequest(f"feature {name!r} (row {row}): {out[row]!r} contains a NUL character (U+0000)")
    return out


def _check_labels(target: str, labels: Sequence[Any]) -> None:
    """Class labels must be printable: they become the model's classes and every prediction."""
    texts = [v for v in labels if isinstance(v, str)]
    if not CONTROL_CHARACTERS.search("".join(texts)):
        return
    row, label = next((i, v) for i, v in enumerate(labels)
                      if isinstance(v, str) and CONTROL_CHARACTERS.search(v))
    check_text(f"target {target!r} (row {row}): the label {label!r}", label, "labels")


def conform(frame: pd.DataFrame, model: ModelRecord, features: list[Feature]) -> pd.DataFrame:
    """``frame`` checked against ``features`` and the target, typed for storage."""
    expected = [f.name for f in features] + [model.target]
    for name in frame.columns:
        if name not in expected:
            raise BadRequest(f"unexpected column {name!r}; expected {expected}")
    for name in expected:
        if name not in frame.columns:
            raise BadRequest(f"missing column {name!r}")
    source = frame.attrs.get("source")
    out: dict[str, Any] = {}
    for f in features:
        values = frame[f.name].tolist()
        if f.kind is FeatureKind.numeric:
            out[f.name] = pd.Series(_numbers(f, values, source == "csv"), index=frame.index)
        else:
            out[f.name] = pd.Series(_categories(f.name, values, source == "json"), index=frame.index,
                                    dtype=object)
    target = frame[model.target]
    if source == "json":
        target = target.infer_objects()  # typed as pandas types a JSON column
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
        y = numbers.to_numpy(np.float64)
        bad = ~np.isfinite(y)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise BadRequest(
                f"target {model.target!r} (row {row}): {target.iloc[row]!r} is not a finite number"
            )
        # The ONNX graph predicts float32: a larger target becomes an infinite leaf or bias, and
        # the model then fails its check at every training.
        bad = np.abs(y) > FLOAT32_MAX
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise BadRequest(
                f"target {model.target!r} (row {row}): {y[row]} is outside the float32 range"
            )
        out[model.target] = numbers.astype(np.float64)
    else:
        kinds = {"text" if isinstance(v, str) else "boolean" if isinstance(v, bool | np.bool_) else "number"
                 for v in target}
        if len(kinds) > 1:
            raise BadRequest(
                f"target {model.target!r} mixes {' and '.join(sorted(kinds))} labels; use one type"
            )
        _check_labels(model.target, target.tolist())
        out[model.target] = target
    return pd.DataFrame(out)


def schema_for(frame: pd.DataFrame, model: ModelRecord) -> list[Feature]:
    """The stored schema, or the one inferred from this (first) upload."""
    if model.features is not None:
        return model.features
    if frame.attrs.get("source") == "json":
        _check_json_types(frame)
        frame = frame.infer_objects()  # JSON numbers typed as numbers, texts as text
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
    """The parts of dataset version ``version`` (those added up to it and not removed by it)
    concatenated in upload order."""
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
