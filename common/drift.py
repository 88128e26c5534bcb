"""Drift: how far the rows a model serves have moved from the rows it was trained on.

At training, each tabular experiment stores a **profile** of its training rows in its ONNX
metadata (``profile``): for a numeric feature the deciles of its values as bin edges and the
share of rows in each bin, for a categorical one the shares of its most frequent categories and
of the rest, for both the share of missing values; the same for the model's predictions on the
holdout (class shares, or deciles of the predicted values).

The monitoring writer counts the served rows into the same bins (``DriftCounter``: one NumPy call
per feature for a whole batch of calls) and persists the counts about once a minute per process
(``drift_flush_seconds``) to the drift log of the store (``common/storage/drift.py``).
``GET /drift`` sums them over a window and reports the population stability index per feature::

    PSI = sum over bins of (served share - training share) * ln(served share / training share)

(shares floored at ``EPSILON``, the usual convention); below 0.1 is read as stable, above 0.25 as
a significant shift. This module is pure NumPy: it runs on the serving path.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from common.domain import utcnow

log = logging.getLogger("mlfn.drift")

PROFILE_VERSION = 1
QUANTILES = tuple(q / 10 for q in range(1, 10))  # deciles: ten bins where values are spread
MAX_CATEGORIES = 30  # the most frequent categories get a bin each; the rest share one
EPSILON = 1e-4
BUFFER_EVENTS = 256  # served calls taken before they are counted together
# The key of the predictions' counts beside the features': a control character, which no
# column name may contain (common.names.check_text), so no feature can take it.
PREDICTION = "\x00prediction"
MISSING_CATEGORY = ""  # what a missing category is in the served feeds (common/inference/inputs)


# -- the training profile ------------------------------------------------------------------
def _numeric_profile(values: np.ndarray) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64).ravel()
    missing = np.isnan(values)
    present = values[~missing]
    edges = np.unique(np.quantile(present, QUANTILES)) if present.size else np.empty(0)
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
    return {"kind": "numeric", "edges": edges.tolist(),
            "expected": _shares([*counts.tolist(), int(missing.sum())])}


def _categorical_profile(values: Sequence[Any], categories: Sequence[str] | None = None) -> dict[str, Any]:
    texts = [str(v) for v in np.asarray(values, dtype=object).ravel()]
    counts: dict[str, int] = {}
    for text in texts:
        counts[text] = counts.get(text, 0) + 1
    missing = counts.pop(MISSING_CATEGORY, 0)
    if categories is None:
        categories = sorted(counts, key=lambda c: (-counts[c], c))[:MAX_CATEGORIES]
    kept = [counts.get(c, 0) for c in categories]
    other = sum(counts.values()) - sum(kept)
    return {"kind": "categorical", "categories": list(categories),
            "expected": _shares([*kept, other, missing])}


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def build_profile(columns: Mapping[str, Any], kinds: Mapping[str, str], predictions: Sequence[Any],
                  regression: bool, classes: Sequence[Any] = ()) -> dict[str, Any]:
    """The profile of training rows: ``columns`` maps each feature to its values as the model is
    fed them (numbers with NaN for missing, category strings with "" for missing), ``kinds`` to
    "numeric" or "categorical"; ``predictions`` are the model's on the holdout."""
    features = {}
    for name, values in columns.items():
        features[name] = (_numeric_profile(values) if kinds[name] == "numeric"
                          else _categorical_profile(values))
    if regression:
        prediction = _numeric_profile(np.asarray(predictions, dtype=np.float64))
    else:
        prediction = _categorical_profile(list(predictions), [str(c) for c in classes] or None)
    rows = len(next(iter(columns.values()))) if columns else 0
    return {"version": PROFILE_VERSION, "rows": rows, "features": features,
            "prediction": prediction}


# -- counting served rows ------------------------------------------------------------------
class DriftCounter:
    """Counts served feature values and predictions into a profile's bins."""

    def __init__(self, profile: Mapping[str, Any]) -> None:
        self.profile = profile
        self._bins: dict[str, tuple[str, Any]] = {}
        specs = {**profile["features"], PREDICTION: profile["prediction"]}
        for name, spec in specs.items():
            if spec["kind"] == "numeric":
                self._bins[name] = ("numeric", np.asarray(spec["edges"], dtype=np.float64))
            else:
                self._bins[name] = ("categorical", {c: i for i, c in enumerate(spec["categories"])})

    def sizes(self) -> dict[str, int]:
        """The number of bins of each key (features and ``PREDICTION``): values, other, missing."""
        return {name: len(spec) + (1 if kind == "numeric" else 2)
                for name, (kind, spec) in self._bins.items()}

    def count(self, name: str, values: Any) -> np.ndarray | None:
        """The bin counts of ``values`` (one feed column, or a list of predictions)."""
        binning = self._bins.get(name)
        if binning is None:
            return None
        kind, spec = binning
        if kind == "numeric":
            arr = np.asarray(values, dtype=np.float64).ravel()
            missing = np.isnan(arr)
            bins = np.searchsorted(spec, arr[~missing], side="right")
            out = np.bincount(bins, minlength=len(spec) + 2)
            out[len(spec) + 1] = int(missing.sum())
            return out
        other, missing_bin = len(spec), len(spec) + 1
        index = [missing_bin if (text := str(v)) == MISSING_CATEGORY else spec.get(text, other)
                 for v in np.asarray(values, dtype=object).ravel()]
        return np.bincount(np.asarray(index, dtype=np.int64), minlength=len(spec) + 2)


def psi(expected: Sequence[float], counts: Sequence[int]) -> float | None:
    """The population stability index of served ``counts`` against training shares; None when
    nothing was served."""
    total = float(sum(counts))
    if total <= 0 or len(expected) != len(counts):
        return None
    value = 0.0
    for e, c in zip(expected, counts, strict=True):
        a, e = max(c / total, EPSILON), max(float(e), EPSILON)
        value += (a - e) * math.log(a / e)
    return value


def report(model: str, experiment_id: int, profile: Mapping[str, Any], rows: int,
           counts: Mapping[str, Sequence[int]], since: datetime, threshold: float,
           min_rows: int) -> dict[str, Any]:
    """``GET /drift``: PSI per feature and for the predictions, largest first."""
    enough = rows >= min_rows
    features = []
    for name, spec in profile["features"].items():
        served = counts.get(name)
        value = psi(spec["expected"], served) if served is not None else None
        total = sum(served) if served is not None else 0
        features.append({
            "name": name, "kind": spec["kind"],
            "psi": None if value is None else round(value, 6),
            "missing_train": round(spec["expected"][-1], 6),
            "missing_served": round(served[-1] / total, 6) if served is not None and total else None,
            "drifted": bool(enough and value is not None and value > threshold),
        })
    features.sort(key=lambda f: -1.0 if f["psi"] is None else -f["psi"])
    predicted = counts.get(PREDICTION)
    prediction_psi = psi(profile["prediction"]["expected"], predicted) if predicted else None
    values = [f["psi"] for f in features if f["psi"] is not None]
    return {
        "model": model, "experiment_id": experiment_id,
        "since": since.isoformat(timespec="seconds"), "rows": rows,
        "threshold": threshold, "min_rows": min_rows,
        "features": features,
        "prediction": {"psi": None if prediction_psi is None else round(prediction_psi, 6),
                       "drifted": bool(enough and prediction_psi is not None
                                       and prediction_psi > threshold)},
        "max_psi": max(values) if values else None,
        "drifted": [f["name"] for f in features if f["drifted"]],
    }


def max_psi(profile: Mapping[str, Any], counts: Mapping[str, Sequence[int]]) -> float | None:
    values = [psi(spec["expected"], counts[name]) for name, spec in profile["features"].items()
              if name in counts]
    found = [v for v in values if v is not None]
    return max(found) if found else None


def add_counts(total: dict[str, list[int]], counts: Mapping[str, Sequence[int]]) -> None:
    """Sum ``counts`` into ``total`` (bins added in a later profile version are padded)."""
    for name, values in counts.items():
        into = total.setdefault(name, [0] * len(values))
        if len(into) < len(values):
            into.extend([0] * (len(values) - len(into)))
        for i, v in enumerate(values):
            into[i] += int(v)


# -- aggregation in the monitoring writer ----------------------------------------------------
class DriftAggregator:
    """Served-row counts per (model, experiment), accumulated by the monitoring writer and
    persisted at most every ``flush_seconds`` (or when forced: ``GET /drift``, shutdown).

    ``counter_of(model, experiment_id)`` gives the experiment's ``DriftCounter`` (None for a
    model without a profile: images, or trained before profiles); ``store_of()`` the drift log
    (``common.storage.drift``), opened on first use.
    On persist each window with at least ``min_rows`` rows also emits its largest feature PSI
    through ``emit(model, experiment_id, value)`` (an EMF metric)."""

    def __init__(self, store_of: Callable[[], Any], counter_of: Callable[[str, int], DriftCounter | None],
                 flush_seconds: float, min_rows: int,
                 emit: Callable[[str, int, float], None] | None = None) -> None:
        self.store_of = store_of
        self.counter_of = counter_of
        self.flush_seconds = flush_seconds
        self.min_rows = min_rows
        self.emit = emit
        self.writer = uuid.uuid4().hex[:12]  # this process: its rows never collide with others'
        self._pending: dict[tuple[str, int], tuple[int, dict[str, np.ndarray]]] = {}
        self._buffer: list[Any] = []  # events taken but not counted yet
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def add(self, events: Sequence[Any]) -> None:
        """Take the feeds and predictions of ``events`` (InferenceEvent with ``feeds``) to be
        counted: they are counted BUFFER_EVENTS at a time (one NumPy call per feature for all
        of them; on Lambda the writer runs once per invocation, for one event) or on persist."""
        with self._lock:
            self._buffer.extend(
                e for e in events
                if e.feeds is not None and e.status < 400 and e.role != "shadow"
                and e.experiment_id is not None)
            if len(self._buffer) < BUFFER_EVENTS:
                return
            buffered, self._buffer = self._buffer, []
        self._count(buffered)

    def _count(self, events: Sequence[Any]) -> None:
        groups: dict[tuple[str, int], list[Any]] = {}
        for event in events:
            groups.setdefault((event.model, event.experiment_id), []).append(event)
        for (model, experiment_id), group in groups.items():
            try:
                counter = self.counter_of(model, experiment_id)
            except Exception as exc:  # the experiment went away: nothing to compare with
                log.debug("no drift profile for %s/%s: %s", model, experiment_id, exc)
                continue
            if counter is None:
                continue
            names = group[0].feeds.keys()
            counts: dict[str, np.ndarray] = {}
            rows = 0
            for name in names:
                columns = [e.feeds[name] for e in group if name in e.feeds]
                column = columns[0] if len(columns) == 1 else np.concatenate(columns)
                found = counter.count(name, column)
                if found is not None:
                    counts[name] = found
                    rows = max(rows, len(column))
            predictions = [p for e in group if e.predictions is not None for p in e.predictions]
            found = counter.count(PREDICTION, predictions) if predictions else None
            if found is not None:
                counts[PREDICTION] = found
            self._merge((model, experiment_id), rows, counts)

    def _merge(self, key: tuple[str, int], rows: int, counts: dict[str, np.ndarray]) -> None:
        """Add counts to the pending ones of ``key`` (bins of another profile replace them)."""
        with self._lock:
            pending_rows, pending = self._pending.get(key, (0, {}))
            for name, values in counts.items():
                if name in pending and len(pending[name]) == len(values):
                    values = pending[name] + values
                pending[name] = values
            self._pending[key] = (pending_rows + rows, pending)

    def persist(self, force: bool = False) -> None:
        """Write the pending counts, one row per (model, experiment), if due or ``force``."""
        now = time.monotonic()
        if not force and now - self._started < self.flush_seconds:
            return
        with self._lock:
            buffered, self._buffer = self._buffer, []
        self._count(buffered)
        with self._lock:
            pending, self._pending = self._pending, {}
            self._started = now
        at = utcnow()
        for (model, experiment_id), (rows, counts) in pending.items():
            plain = {name: values.tolist() for name, values in counts.items()}
            value = None
            if rows >= self.min_rows:
                try:
                    counter = self.counter_of(model, experiment_id)
                    value = max_psi(counter.profile, plain) if counter is not None else None
                except Exception:
                    value = None
            try:
                self.store_of().add(model, experiment_id, at, self.writer, rows, plain, value)
            except Exception:  # kept for the next persist, merged with what comes meanwhile
                log.exception("could not write the drift counts of %s/%s", model, experiment_id)
                self._merge((model, experiment_id), rows, counts)
                continue
            if value is not None and self.emit is not None:
                self.emit(model, experiment_id, value)
