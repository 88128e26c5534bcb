"""JSON records and CSV rows to the typed ONNX inputs, one (n, 1) array per feature.

Used by serving and, for the parity gate, by training: the model is always fed the same way.
add_data checks every uploaded value with the same functions, so what is stored can be served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from common.domain import Feature, FeatureKind
from common.errors import BadRequest

FLOAT32_MAX = 3.4028234663852886e38
MISSING_CATEGORY = ""
"""A missing categorical value is this category (unknown to the encoder unless seen in training)."""


def _where(row: int | None) -> str:
    return "" if row is None else f" (row {row})"


def numeric_value(name: str, value: Any, row: int | None = None) -> float:
    """A finite float, or NaN for a missing value (imputed inside the ONNX graph)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"feature {name!r}{_where(row)}: expected a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:
        raise BadRequest(f"feature {name!r}{_where(row)}: {value} is outside the float32 range") from None
    if not math.isfinite(value):
        raise BadRequest(f"feature {name!r}{_where(row)}: {value} is not a finite number")
    if abs(value) > FLOAT32_MAX:
        raise BadRequest(f"feature {name!r}{_where(row)}: {value} is outside the float32 range")
    return value


def categorical_value(name: str, value: Any, row: int | None = None) -> str:
    """A category: a string, or a JSON integer as its decimal text (``7`` is ``"7"``, as a CSV
    cell reads it); a missing value is :data:`MISSING_CATEGORY`. Floats and booleans are refused:
    their text is ambiguous (``7.0``, ``True``)."""
    if value is None:
        return MISSING_CATEGORY
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRequest(f"feature {name!r}{_where(row)}: expected a string category, got {value!r}")


def unknown_column_hint(name: str, target: str | None) -> str:
    """What to do about an unexpected column, where there is something better to say."""
    if target is not None and name == target:
        return f" ({name!r} is the model's target: send labelled rows to /evaluate)"
    if ";" in name or "\t" in name:
        return " (is the CSV separated by something other than commas?)"
    try:
        float(name)
    except ValueError:
        return ""
    return " (is the header row missing? The first row of a CSV names the columns)"


def check_fields(
    features: Sequence[Feature], record: Any, row: int | None = None, target: str | None = None
) -> None:
    """Raise naming the first unknown or missing field of ``record``."""
    if not isinstance(record, Mapping):
        raise BadRequest(f"record{_where(row)}: expected a JSON object of feature -> value")
    if len(record) == len(features) and all(f.name in record for f in features):
        return
    names = {f.name for f in features}
    unknown = [k for k in record if k not in names]
    if unknown:
        raise BadRequest(
            f"unknown feature {unknown[0]!r}{_where(row)}; expected {sorted(names)}"
            + unknown_column_hint(unknown[0], target)
        )
    missing = [f.name for f in features if f.name not in record]
    listed = ", ".join(repr(m) for m in missing)
    raise BadRequest(f"missing feature{'s' if len(missing) > 1 else ''} {listed}{_where(row)}")


def feeds_from_records(
    features: Sequence[Feature], records: Sequence[Any], first_row: int = 0, target: str | None = None
) -> dict[str, np.ndarray]:
    """Validate ``records`` (JSON objects) and build the ONNX feeds.

    ``first_row`` offsets the row numbers in error messages (0-based, as in the request). Columns
    whose values are all plain numbers (or all strings) are converted in one NumPy call; any other
    column goes value by value, which is also what names the offending row.
    """
    n = len(records)
    single = n == 1
    names = {f.name for f in features}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or rec.keys() != names:
            check_fields(features, rec, None if single else first_row + i, target)
    feeds: dict[str, np.ndarray] = {}
    numeric = [f.name for f in features if f.kind is FeatureKind.numeric]
    matrix = None
    if len(numeric) > 1:
        row_of = itemgetter(*numeric)  # a tuple per record, in one C call
        matrix = _fast_numeric([row_of(rec) for rec in records])
    elif numeric:
        matrix = _fast_numeric([[rec[numeric[0]]] for rec in records])
    if matrix is not None:  # the common case: every number present and plain, one NumPy call
        # One (n, 1) view per column; for n > 1 on a transposed copy, so each is contiguous.
        columns = matrix if n == 1 else np.ascontiguousarray(matrix)
        feeds.update(zip(numeric, columns[:, :, np.newaxis], strict=True))
    for f in features:
        name = f.name
        if name in feeds:
            continue
        values = [rec[name] for rec in records]
        if f.kind is FeatureKind.numeric:
            col = _fast_numeric([[v] for v in values])
            if col is not None:
                col = col.reshape(n, 1)
            else:
                col = np.empty((n, 1), dtype=np.float32)
                for i, value in enumerate(values):
                    col[i, 0] = numeric_value(name, value, None if single else first_row + i)
        elif all(type(v) is str for v in values):
            col = np.array(values, dtype=object).reshape(n, 1)
        else:
            col = np.empty((n, 1), dtype=object)
            for i, value in enumerate(values):
                col[i, 0] = categorical_value(name, value, None if single else first_row + i)
        feeds[name] = col
    return feeds


_PLAIN = frozenset((float, int))


def _fast_numeric(rows: Sequence[Sequence[Any]]) -> np.ndarray | None:
    """Rows of numbers as a float32 matrix, transposed (one row per column), if every value is
    a finite int/float in float32 range, else None (the caller then checks value by value to
    name the culprit)."""
    if not {type(v) for row in rows for v in row} <= _PLAIN:  # no bool, None or str
        return None
    try:
        arr = np.array(rows, dtype=np.float64).T
    except OverflowError:  # an int too large for a float
        return None
    if not np.abs(arr).max() <= FLOAT32_MAX:  # also False for NaN and inf
        return None
    return arr.astype(np.float32)


def parse_csv_cell(feature: Feature, text: str, row: int) -> Any:
    """A CSV cell as the JSON value it stands for (empty cell = missing)."""
    if text == "":
        return None
    if feature.kind is FeatureKind.categorical:
        return text
    try:
        return float(text)
    except ValueError:
        raise BadRequest(
            f"feature {feature.name!r} (row {row}): expected a number, got {text!r}"
        ) from None
