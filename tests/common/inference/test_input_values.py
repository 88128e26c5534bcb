"""The value rules that /forward and add_data share (common.inference.inputs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from common.domain import Feature, FeatureKind
from common.errors import BadRequest
from common.inference.inputs import categorical_value, feeds_from_records, numeric_value

FEATURES = [Feature(name="n", kind=FeatureKind.numeric), Feature(name="c", kind=FeatureKind.categorical)]


def test_json_integers_are_categories_as_their_text() -> None:
    assert categorical_value("c", 7) == "7"
    assert categorical_value("c", -12) == "-12"
    assert categorical_value("c", 18446744073709551615) == "18446744073709551615"
    assert categorical_value("c", "7") == "7" and categorical_value("c", None) == ""


@pytest.mark.parametrize("value", [7.0, 1.5, True, False, [1], {"a": 1}])
def test_other_values_are_not_categories(value: Any) -> None:
    with pytest.raises(BadRequest) as info:
        categorical_value("c", value, 3)
    assert str(info.value) == f"feature 'c' (row 3): expected a string category, got {value!r}"


@pytest.mark.parametrize(("value", "message"), [
    (1e39, "1e+39 is outside the float32 range"),
    (-1.7e308, "-1.7e+308 is outside the float32 range"),
    (float("inf"), "inf is not a finite number"),
    ("55", "expected a number, got '55'"),
    (True, "expected a number, got True"),
])
def test_numbers_must_fit_float32(value: Any, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        numeric_value("n", value, 0)
    assert str(info.value) == f"feature 'n' (row 0): {message}"


def test_feeds_take_integer_categories_as_text() -> None:
    as_text = feeds_from_records(FEATURES, [{"n": 1, "c": "7"}, {"n": 2.5, "c": "8"}])
    as_ints = feeds_from_records(FEATURES, [{"n": 1, "c": 7}, {"n": 2.5, "c": "8"}])
    assert as_ints["c"].dtype == object and as_ints["c"].tolist() == as_text["c"].tolist() == [["7"], ["8"]]
    assert as_ints["n"].dtype == np.float32 and as_ints["n"].tolist() == [[1.0], [2.5]]
    with pytest.raises(BadRequest, match=r"^feature 'c' \(row 1\): expected a string category, got 8.0$"):
        feeds_from_records(FEATURES, [{"n": 1, "c": 7}, {"n": 2.5, "c": 8.0}])
    with pytest.raises(BadRequest, match=r"^feature 'n' \(row 1\): 1e\+39 is outside the float32 range$"):
        feeds_from_records(FEATURES, [{"n": 1, "c": 7}, {"n": 1e39, "c": "8"}])
