"""One scikit-learn Pipeline per catalog class: preprocessing and model, exported as one graph."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from common.domain import Feature, FeatureKind, Task

# SVC(probability=True) is deprecated in scikit-learn 1.9 and removed in 1.11 (pinned below that in
# pyproject.toml); its Platt-scaled probabilities are what skl2onnx converts today.
warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
warnings.filterwarnings("ignore", message="Attribute `prob[AB]_`", category=FutureWarning)


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
    name = "svm"
    scale_numeric = True

    def estimator(self, task: Task, params: dict[str, Any], seed: int, threads: int) -> Any:
        from sklearn.svm import SVC, SVR

        common = {"C": params["C"], "kernel": params["kernel"], "gamma": params["gamma"]}
        if task is Task.classification:
            return SVC(probability=True, random_state=seed, **common)
        return SVR(epsilon=params["epsilon"], **common)


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
