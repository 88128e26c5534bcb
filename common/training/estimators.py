"""One scikit-learn Pipeline per catalog class: preprocessing and model, exported as one graph."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from common.domain import Feature, FeatureKind, Task

# At most this many folds produce the out-of-fold decision values the SVM's Platt scaling is fit on.
CALIBRATION_FOLDS = 3


class Trainer(Protocol):
    """What differs between model classes: the final estimator and whether inputs are scaled."""

    name: str
    scale_numeric: bool

    def estimator(self, task: Task, params: dict[str, Any], seed: int, threads: int) -> Any: ...


class RandomForest:
    name = "random_forest"
    scale_numeric = False

    def estimator(self, task: Task, params: dict[str, Any], seed: int, threads: int) -> Any:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cls = RandomForestClassifier if task is Task.classification else RandomForestRegressor
        max_features = None if params["max_features"] == "all" else params["max_features"]
        return cls(
            n_estimators=params["n_estimators"],
            max_depth=params["max_depth"],
            min_samples_leaf=params["min_samples_leaf"],
            max_features=max_features,
            random_state=seed,
            n_jobs=threads,
        )


class SVM:
    """SVC with sigmoid (Platt) calibration of its decision function, or SVR.

    ``CalibratedClassifierCV(..., ensemble=False)`` predicts the most probable class of the
    probabilities it returns, and skl2onnx converts it with an SVC inside; ``SVC(probability=True)``
    (deprecated in scikit-learn 1.9) predicts from the decision function instead, so its label and
    its probabilities could disagree.
    """

    name = "svm"
    scale_numeric = True

    def estimator(self, task: Task, params: dict[str, Any], seed: int, threads: int) -> Any:
        from sklearn.svm import SVC, SVR

        common = {"C": params["C"], "kernel": params["kernel"], "gamma": params["gamma"]}
        if task is Task.regression:
            return SVR(epsilon=params["epsilon"], **common)
        from sklearn.calibration import CalibratedClassifierCV

        return CalibratedClassifierCV(
            SVC(**common), method="sigmoid", ensemble=False, cv=CalibrationFolds(CALIBRATION_FOLDS, seed)
        )


class CalibrationFolds:
    """Stratified, shuffled folds: as many as the smallest class allows, up to ``max_splits``.

    Decided when splitting, so the same estimator suits the full training set and the smaller
    folds of a grid search. When a class has a single row no split can keep every class on the
    training side, and the calibration is fit on the in-sample decision values instead: one
    "split" whose training and test rows are all the rows (``cross_val_predict`` only needs the
    test rows to cover every row once).
    """

    def __init__(self, max_splits: int, seed: int) -> None:
        self.max_splits = max_splits  # not ``n_splits``: CalibratedClassifierCV would check it
        self.seed = seed

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        if y is None:
            return self.max_splits
        smallest = int(np.unique(np.asarray(y), return_counts=True)[1].min())
        return 1 if smallest < 2 else min(self.max_splits, smallest)

    def split(
        self, X: Any, y: Any, groups: Any = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from sklearn.model_selection import StratifiedKFold

        n = self.get_n_splits(X, y)
        if n == 1:
            rows = np.arange(len(y))
            yield rows, rows
            return
        yield from StratifiedKFold(n, shuffle=True, random_state=self.seed).split(X, y)

    def __repr__(self) -> str:
        return f"CalibrationFolds(max_splits={self.max_splits}, seed={self.seed})"


class LogisticRegression:
    name = "logistic_regression"
    scale_numeric = True

    def estimator(self, task: Task, params: dict[str, Any], seed: int, threads: int) -> Any:
        from sklearn.linear_model import LogisticRegression as LR

        penalty = params["penalty"]
        return LR(
            C=np.inf if penalty == "none" else params["C"],
            l1_ratio=1.0 if penalty == "l1" else 0.0,
            solver=params["solver"],
            max_iter=params["max_iter"],
            random_state=seed,
        )


class CatBoost:
    name = "catboost"
    scale_numeric = False

    def estimator(self, task: Task, params: dict[str, Any], seed: int, threads: int) -> Any:
        from catboost import CatBoostClassifier, CatBoostRegressor

        cls = CatBoostClassifier if task is Task.classification else CatBoostRegressor
        return cls(
            iterations=params["iterations"],
            learning_rate=params["learning_rate"],
            depth=params["depth"],
            l2_leaf_reg=params["l2_leaf_reg"],
            random_seed=seed,
            thread_count=threads,
            verbose=0,
            allow_writing_files=False,
        )


TRAINERS: dict[str, Trainer] = {t.name: t for t in (RandomForest(), SVM(), LogisticRegression(), CatBoost())}


def preprocessor(features: Sequence[Feature], scale_numeric: bool) -> ColumnTransformer:
    """Median imputation (+ scaling) for numbers, one-hot encoding for categories."""
    numeric = [f.name for f in features if f.kind is FeatureKind.numeric]
    categorical = [f.name for f in features if f.kind is FeatureKind.categorical]
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True))
        ]
        if scale_numeric:
            steps.append(("scale", StandardScaler()))
        parts.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        parts.append(
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)
        )
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def build_pipeline(
    model_class: str,
    task: Task,
    features: Sequence[Feature],
    params: dict[str, Any],
    seed: int,
    threads: int = 1,
) -> Pipeline:
    trainer = TRAINERS[model_class]
    return Pipeline(
        [
            ("preprocess", preprocessor(features, trainer.scale_numeric)),
            ("model", trainer.estimator(task, params, seed, threads)),
        ]
    )


def build_image_pipeline(
    model_class: str, task: Task, params: dict[str, Any], seed: int, threads: int = 1
) -> Pipeline:
    """Flattened pixels in [0, 1]: standardised for the classes that need it, nothing to impute."""
    trainer = TRAINERS[model_class]
    steps: list[tuple[str, Any]] = []
    if trainer.scale_numeric:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", trainer.estimator(task, params, seed, threads)))
    return Pipeline(steps)
