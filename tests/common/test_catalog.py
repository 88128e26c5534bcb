"""The model catalog validates hyperparameters by name, type and range."""

from __future__ import annotations

import pytest

from common.catalog import CATALOG, model_class
from common.domain import Task
from common.errors import BadRequest, HyperparameterError


def test_catalog_declares_the_four_classes_and_tasks() -> None:
    assert set(CATALOG) == {"random_forest", "svm", "logistic_regression", "catboost"}
    assert CATALOG["logistic_regression"].tasks == (Task.classification,)
    for name in ("random_forest", "svm", "catboost"):
        assert set(CATALOG[name].tasks) == {Task.classification, Task.regression}
    expected = {
        "random_forest": {"n_estimators", "max_depth", "min_samples_leaf", "max_features"},
        "svm": {"C", "kernel", "gamma", "epsilon"},
        "logistic_regression": {"C", "penalty", "solver", "max_iter"},
        "catboost": {"iterations", "learning_rate", "depth", "l2_leaf_reg"},
    }
    for name, params in expected.items():
        assert {p.name for p in CATALOG[name].hyperparameters} == params
        assert CATALOG[name].grid, f"{name} declares a tuning grid"


def test_defaults_fill_in() -> None:
    params = model_class("random_forest").resolve(Task.classification, {"n_estimators": 10})
    assert params == {"n_estimators": 10, "max_depth": None, "min_samples_leaf": 1,
                      "max_features": "sqrt"}


@pytest.mark.parametrize(
    ("cls", "task", "given", "named"),
    [
        ("random_forest", "classification", {"n_estimators": 0}, "n_estimators"),
        ("random_forest", "classification", {"n_trees": 5}, "n_trees"),
        ("random_forest", "regression", {"max_features": "half"}, "max_features"),
        ("svm", "classification", {"epsilon": 0.2}, "epsilon"),  # regression only
        ("svm", "regression", {"C": "big"}, "C"),
        ("logistic_regression", "classification", {"penalty": "l1"}, "penalty"),  # needs saga
        ("logistic_regression", "classification", {"max_iter": 2.5}, "max_iter"),
        ("catboost", "regression", {"learning_rate": 2.0}, "learning_rate"),
        ("catboost", "classification", {"depth": True}, "depth"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(cls: str, task: str, given: dict, named: str) -> None:
    with pytest.raises(HyperparameterError) as info:
        model_class(cls).resolve(task, given)
    assert info.value.parameter == named
    assert named in info.value.detail


def test_task_and_class_are_checked() -> None:
    with pytest.raises(BadRequest, match="classification"):
        model_class("logistic_regression").resolve("regression", {})
    with pytest.raises(BadRequest, match="unknown model_class"):
        model_class("xgboost")


def test_grid_values_are_valid_hyperparameters() -> None:
    for cls in CATALOG.values():
        for task in cls.tasks:
            grid = cls.grid_for(task)
            for name, values in grid.items():
                for value in values:
                    cls.resolve(task, {name: value})


def test_described_hyperparameters_name_only_the_class_tasks() -> None:
    from common.catalog import CATALOG

    for cls in CATALOG.values():
        doc = cls.describe()
        for param in doc["hyperparameters"]:
            assert set(param["tasks"]) <= set(doc["tasks"]), (cls.name, param)
    logreg = CATALOG["logistic_regression"].describe()
    assert all(p["tasks"] == ["classification"] for p in logreg["hyperparameters"])
