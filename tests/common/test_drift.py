"""common/drift.py: profiles, bins, PSI and the aggregation the monitoring writer runs."""

from __future__ import annotations

import math
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from common.drift import (
    EPSILON,
    PREDICTION,
    DriftAggregator,
    DriftCounter,
    add_counts,
    build_profile,
    psi,
    report,
)


def profile(values: Any, kind: str = "numeric", predictions: Any = ("a", "b"),
            regression: bool = False) -> dict[str, Any]:
    return build_profile({"x": np.asarray(values, dtype=np.float64 if kind == "numeric" else object)},
                         {"x": kind}, list(predictions), regression, ["a", "b"])


def test_psi_by_hand() -> None:
    assert psi([0.5, 0.5], [10, 10]) == 0.0
    # (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5)
    assert psi([0.5, 0.5], [8, 2]) == pytest.approx(0.3 * math.log(1.6) - 0.3 * math.log(0.4))
    # An empty training bin is floored at EPSILON, not a division by zero.
    assert psi([1.0, 0.0], [0, 5]) == pytest.approx(
        (EPSILON - 1.0) * math.log(EPSILON) + (1 - EPSILON) * math.log(1 / EPSILON))
    assert psi([0.5, 0.5], [0, 0]) is None
    assert psi([0.5, 0.5], [1, 1, 1]) is None  # bins of another profile


def test_numeric_bins_agree_between_training_and_serving() -> None:
    values = np.arange(1000, dtype=np.float64)
    values[::10] = np.nan  # 10 % missing
    prof = profile(values)
    spec = prof["features"]["x"]
    assert len(spec["edges"]) == 9 and len(spec["expected"]) == 11
    assert spec["expected"][-1] == pytest.approx(0.1)
    counter = DriftCounter(prof)
    # The same rows served: the same shares, PSI 0.
    counts = counter.count("x", values.astype(np.float32).reshape(-1, 1))
    assert counts is not None and counts.sum() == 1000
    assert psi(spec["expected"], counts.tolist()) == pytest.approx(0.0, abs=1e-9)
    # A value equal to an edge lands where training put it (right of the edge).
    edge = spec["edges"][3]
    one = counter.count("x", [edge])
    assert one is not None and int(np.argmax(one)) == 4
    # Beyond the range: the outer bins; NaN: the missing bin.
    assert counter.count("x", [-1e9, 1e9, np.nan]).tolist() == [1] + [0] * 8 + [1, 1]


def test_a_constant_feature_has_one_edge_and_still_compares() -> None:
    prof = profile([5.0] * 50)
    spec = prof["features"]["x"]
    assert spec["edges"] == [5.0] and spec["expected"] == [0.0, 1.0, 0.0]
    counts = DriftCounter(prof).count("x", [5.0, 5.0, 4.0])
    assert counts.tolist() == [1, 2, 0]
    assert psi(spec["expected"], counts.tolist()) > 0.25


def test_categories_other_and_missing() -> None:
    values = ["a"] * 60 + ["b"] * 30 + [""] * 10
    prof = profile(values, kind="categorical")
    spec = prof["features"]["x"]
    assert spec["categories"] == ["a", "b"] and spec["expected"] == [0.6, 0.3, 0.0, 0.1]
    counter = DriftCounter(prof)
    assert counter.count("x", np.array(["a", "zzz", "", "b"], dtype=object)).tolist() == [1, 1, 1, 1]
    assert counter.count("unknown feature", ["a"]) is None
    assert counter.sizes() == {"x": 4, PREDICTION: 4}


def test_many_categories_keep_the_most_frequent() -> None:
    values = [f"c{i}" for i in range(40) for _ in range(40 - i)]
    spec = profile(values, kind="categorical")["features"]["x"]
    assert spec["categories"][:3] == ["c0", "c1", "c2"] and len(spec["categories"]) == 30
    assert spec["expected"][30] > 0  # the ten rarest share the "other" bin


def test_regression_predictions_are_binned_by_their_deciles() -> None:
    prof = profile([1.0, 2.0, 3.0], predictions=np.linspace(0, 1, 101), regression=True)
    assert prof["prediction"]["kind"] == "numeric" and len(prof["prediction"]["edges"]) == 9
    counter = DriftCounter(prof)
    assert counter.count(PREDICTION, [2.0, 3.0]).tolist()[-2] == 2  # above the training range


def test_report_needs_enough_rows_to_call_drift() -> None:
    prof = profile(np.arange(100.0))
    counts = {"x": DriftCounter(prof).count("x", np.full(30, 1e6)).tolist()}
    few = report("m", 1, prof, 30, counts, datetime(2026, 1, 1), 0.25, 100)
    assert few["features"][0]["psi"] > 0.25 and few["drifted"] == []
    many = report("m", 1, prof, 300, counts, datetime(2026, 1, 1), 0.25, 100)
    assert many["drifted"] == ["x"] and many["features"][0]["drifted"]
    assert many["prediction"] == {"psi": None, "drifted": False}
    empty = report("m", 1, prof, 0, {}, datetime(2026, 1, 1), 0.25, 100)
    assert empty["features"][0]["psi"] is None and empty["max_psi"] is None


def test_add_counts_pads_longer_bins() -> None:
    into: dict[str, list[int]] = {"x": [1, 2]}
    add_counts(into, {"x": [1, 1, 1], "y": [4]})
    assert into == {"x": [2, 3, 1], "y": [4]}


class Log:
    """A drift log kept in a list (the DriftLog port); ``fail`` makes the next writes raise."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.fail = 0

    def add(self, *row: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("store down")
        self.rows.append(row)


def event(values: list[float], role: str = "champion", status: int = 200) -> Any:
    return SimpleNamespace(model="m", experiment_id=1, role=role, status=status,
                           feeds={"x": np.asarray(values, dtype=np.float32).reshape(-1, 1)},
                           predictions=["a"] * len(values))


def test_the_aggregator_counts_persists_and_keeps_counts_a_failed_write_lost() -> None:
    prof = profile(np.arange(100.0))
    counter = DriftCounter(prof)
    log = Log()
    emitted: list[tuple[str, int, float]] = []
    agg = DriftAggregator(lambda: log, lambda m, e: counter, 3600, 3,
                          lambda m, e, v: emitted.append((m, e, v)))
    agg.add([event([1.0, 2.0]), event([50.0]), event([7.0], role="shadow"),
             event([9.0], status=400)])
    agg.persist()  # not due: an hour
    assert log.rows == []
    log.fail = 1
    agg.persist(force=True)
    assert log.rows == []
    agg.add([event([99.0])])
    agg.persist(force=True)
    (model, experiment, _, writer, rows, counts, max_psi), = log.rows
    assert (model, experiment, rows) == ("m", 1, 4)  # 2 + 1 kept from the failed write, + 1
    assert sum(counts["x"]) == 4 and counts[PREDICTION][0] == 4
    assert emitted == [("m", 1, max_psi)] and max_psi is not None
    agg.persist(force=True)
    assert len(log.rows) == 1  # nothing pending: nothing written


def test_experiments_without_a_profile_are_skipped() -> None:
    log = Log()
    agg = DriftAggregator(lambda: log, lambda m, e: None, 0, 1)
    agg.add([event([1.0])])
    agg.persist(force=True)
    assert log.rows == []

    def gone(model: str, experiment_id: int) -> Any:
        raise LookupError("deleted")

    agg = DriftAggregator(lambda: log, gone, 0, 1)
    agg.add([event([1.0])])
    agg.persist(force=True)
    assert log.rows == []


def test_a_feature_named_like_the_predictions_key_keeps_its_own_counts() -> None:
    prof = build_profile({"__prediction__": np.arange(10.0), "prediction": np.arange(10.0)},
                         {"__prediction__": "numeric", "prediction": "numeric"}, ["a"] * 5,
                         False, ["a", "b"])
    counter = DriftCounter(prof)
    assert set(counter.sizes()) == {"__prediction__", "prediction", PREDICTION}
    assert counter.count("__prediction__", [100.0]).sum() == 1
    assert counter.count(PREDICTION, ["b", "b"]).tolist() == [0, 2, 0, 0]
