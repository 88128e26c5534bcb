"""The model catalog: classes, the tasks they support, their hyperparameters and tuning grids.

Pure data and validation: importing this module never imports a training library, so the
catalog can be listed and requests validated on the serving path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from common.domain import Task
from common.errors import BadRequest, HyperparameterError

ParamType = Literal["int", "float", "choice"]


@dataclass(frozen=True)
class HyperParameter:
    name: str
    type: ParamType
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    tasks: tuple[Task, ...] = (Task.classification, Task.regression)
    doc: str = ""

    def validate(self, value: Any) -> Any:
        """Return the value normalised to its type, or raise naming the parameter."""
        if value is None:
            if self.nullable:
                return None
            raise HyperparameterError(self.name, "must not be null")
        if self.type == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise HyperparameterError(
                    self.name, f"{value!r} is not one of {', '.join(self.choices)}"
                )
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise HyperparameterError(self.name, f"expected {self.type}, got {value!r}")
        if self.type == "int":
            if isinstance(value, float) and not value.is_integer():
                raise HyperparameterError(self.name, f"expected an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise HyperparameterError(self.name, "must be a finite number")
        if self.minimum is not None and value < self.minimum:
            raise HyperparameterError(self.name, f"{value} is below the minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise HyperparameterError(self.name, f"{value} is above the maximum {self.maximum}")
        return value

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "default": self.default}
        if self.type == "choice":
            out["choices"] = list(self.choices)
        else:
            out["minimum"], out["maximum"] = self.minimum, self.maximum
        out["nullable"] = self.nullable
        out["tasks"] = [t.value for t in self.tasks]
        if self.doc:
            out["doc"] = self.doc
        return out


@dataclass(frozen=True)
class ModelClass:
    name: str
    tasks: tuple[Task, ...]
    hyperparameters: tuple[HyperParameter, ...]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    description: str = ""

    def params_for(self, task: Task) -> dict[str, HyperParameter]:
        return {p.name: p for p in self.hyperparameters if task in p.tasks}

    def resolve(self, task: Task | str, given: dict[str, Any] | None) -> dict[str, Any]:
        """Validate ``given`` against this class and task; return it completed with defaults."""
        task = Task(task)
        if task not in self.tasks:
            supported = ", ".join(t.value for t in self.tasks)
            raise BadRequest(f"model class {self.name!r} supports {supported}, not {task.value}")
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise BadRequest("hyperparameters must be a JSON object")
        allowed = self.params_for(task)
        for name in given:
            if name not in allowed:
                raise HyperparameterError(
                    name,
                    f"unknown for {self.name} ({task.value}); "
                    f"known: {', '.join(sorted(allowed))}",
                )
        resolved = {n: p.validate(given[n]) if n in given else p.default for n, p in allowed.items()}
        check = _CROSS_CHECKS.get(self.name)
        if check:
            check(resolved)
        return resolved

    def grid_for(self, task: Task) -> dict[str, list[Any]]:
        allowed = self.params_for(task)
        return {k: v for k, v in self.grid.items() if k in allowed}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "tasks": [t.value for t in self.tasks],
            # A hyperparameter applies to the tasks of both the parameter and the class.
            "hyperparameters": [
                {**p.describe(), "tasks": [t.value for t in p.tasks if t in self.tasks]}
                for p in self.hyperparameters
            ],
            "grid": self.grid,
        }


BOTH = (Task.classification, Task.regression)


def _check_logreg(params: dict[str, Any]) -> None:
    if params["penalty"] == "l1" and params["solver"] not in ("liblinear", "saga"):
        raise HyperparameterError(
            "penalty", f"'l1' needs solver 'liblinear' or 'saga', not {params['solver']!r}"
        )
    if params["penalty"] == "none" and params["solver"] == "liblinear":
        raise HyperparameterError("penalty", "'none' is not supported by solver 'liblinear'")


_CROSS_CHECKS = {"logistic_regression": _check_logreg}

CATALOG: dict[str, ModelClass] = {
    c.name: c
    for c in (
        ModelClass(
            name="random_forest",
            description="scikit-learn RandomForest; categorical features one-hot encoded.",
            tasks=BOTH,
            hyperparameters=(
                HyperParameter("n_estimators", "int", 100, 1, 2000),
                HyperParameter("max_depth", "int", None, 1, 100, nullable=True,
                               doc="null grows trees until leaves are pure"),
                HyperParameter("min_samples_leaf", "int", 1, 1, 1000),
                HyperParameter("max_features", "choice", "sqrt", choices=("sqrt", "log2", "all")),
            ),
            grid={"n_estimators": [51, 151], "max_depth": [None, 8], "min_samples_leaf": [1, 3]},
        ),
        ModelClass(
            name="svm",
            description="scikit-learn SVC/SVR on standardised numeric and one-hot features.",
            tasks=BOTH,
            hyperparameters=(
                HyperParameter("C", "float", 1.0, 1e-4, 1e4),
                HyperParameter("kernel", "choice", "rbf", choices=("rbf", "linear", "poly", "sigmoid")),
                HyperParameter("gamma", "choice", "scale", choices=("scale", "auto")),
                HyperParameter("epsilon", "float", 0.1, 0.0, 1e3, tasks=(Task.regression,)),
            ),
            grid={"C": [0.3, 1.0, 3.0], "kernel": ["rbf", "linear"]},
        ),
        ModelClass(
            name="logistic_regression",
            description="Pipeline(OneHotEncoder for categorical + StandardScaler for numeric, "
            "LogisticRegression).",
            tasks=(Task.classification,),
            hyperparameters=(
                HyperParameter("C", "float", 1.0, 1e-4, 1e4),
                HyperParameter("penalty", "choice", "l2", choices=("l2", "l1", "none")),
                HyperParameter("solver", "choice", "lbfgs", choices=("lbfgs", "liblinear", "saga")),
                HyperParameter("max_iter", "int", 1000, 10, 100_000),
            ),
            grid={"C": [0.1, 1.0, 10.0]},
        ),
        ModelClass(
            name="catboost",
            description="CatBoost gradient boosting; categorical features one-hot encoded in the "
            "ONNX graph (CatBoost's own export refuses categorical features).",
            tasks=BOTH,
            hyperparameters=(
                HyperParameter("iterations", "int", 300, 1, 5000),
                HyperParameter("learning_rate", "float", 0.1, 1e-4, 1.0),
                HyperParameter("depth", "int", 6, 1, 10),
                HyperParameter("l2_leaf_reg", "float", 3.0, 0.0, 100.0),
            ),
            grid={"depth": [4, 6], "learning_rate": [0.05, 0.2]},
        ),
    )
}


def model_class(name: object) -> ModelClass:
    if not isinstance(name, str) or name not in CATALOG:
        raise BadRequest(f"unknown model_class {name!r}; choose one of {', '.join(CATALOG)}")
    return CATALOG[name]


# Fewer labelled rows than this cannot be split into training and holdout data meaningfully.
MIN_TRAINING_ROWS = 10

# The primary metric of each task, and whether larger is better, for every metric we report.
PRIMARY_METRIC = {Task.classification: "f1_macro", Task.regression: "mae"}
HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1_macro": True,
    "precision_macro": True,
    "recall_macro": True,
    "roc_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}
TASK_METRICS = {
    Task.classification: ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc",
                          "log_loss"),
    Task.regression: ("rmse", "mae", "r2"),
}
