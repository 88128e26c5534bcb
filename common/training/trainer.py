"""Train one experiment: split, (grid-search), fit, export through the parity gate, score."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from common.catalog import MIN_TRAINING_ROWS, PRIMARY_METRIC
from common.catalog import model_class as catalog_class
from common.domain import Feature, ImageSpec, Task
from common.drift import build_profile
from common.errors import BadRequest
from common.images import INPUT_NAME
from common.inference.inputs import feeds_from_records
from common.inference.onnx_model import OnnxModel
from common.training.estimators import build_image_pipeline, build_pipeline
from common.training.export import check_parity, provenance, to_onnx, with_metadata
from common.training.frames import encode_target, feature_frame, frame_records, pixel_columns
from common.training.scoring import score

HOLDOUT_FRACTION = 0.2
CV_FOLDS = 3


@dataclass
class TrainingSpec:
    model: str
    experiment_id: int
    model_class: str
    task: Task
    target: str
    features: list[Feature]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    tune: bool = False
    seed: int = 42
    threads: int = 1
    commit: str | None = None
    extra_metadata: dict[str, Any] = field(default_factory=dict)
    image: ImageSpec | None = None


@dataclass
class TrainedModel:
    onnx_bytes: bytes
    metrics: dict[str, float]
    hyperparameters: dict[str, Any]
    classes: list[Any]
    split: dict[str, Any]
    parity: dict[str, float]
    grid_scores: list[dict[str, Any]]
    rows: int
    pipeline: Any = None
    holdout: pd.DataFrame | None = None
    holdout_target: np.ndarray | None = None
    holdout_feeds: dict[str, np.ndarray] = field(default_factory=dict)
    served: Any = None  # the ONNX model's Predictions on the holdout
    learning_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def split_indices(y: np.ndarray, task: Task, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """A fixed train/holdout split: stratified when every class has at least two rows.

    A stratified holdout needs a row of every class: on tiny data (10 rows, 3 classes) it takes
    one row per class rather than the usual fraction, which would be too few rows to stratify.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    stratify = None
    test_size: float | int = HOLDOUT_FRACTION
    if task is Task.classification:
        counts = np.bincount(y.astype(np.int64))
        present = counts[counts > 0]
        if present.min() >= 2:
            stratify = y
            if math.ceil(HOLDOUT_FRACTION * len(y)) < len(present):
                test_size = len(present)
    train, hold = train_test_split(idx, test_size=test_size, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(hold), stratify is not None


def preload() -> None:
    """Import what training imports on first use (skl2onnx with mlfn's converters, CatBoost,
    cross-validation, the TensorBoard writer: ~0.5 s here), so that a worker process pays it
    when it starts rather than inside its first job."""
    import sklearn.model_selection  # noqa: F401
    import tensorboardX  # noqa: F401

    from common.training import export

    export.register_converters()


def cv_scoring(task: Task) -> str:
    """The scikit-learn scorer the grid search ranks candidates by (higher is better)."""
    return "f1_macro" if task is Task.classification else "neg_mean_absolute_error"


def cross_validate(spec: TrainingSpec, X: pd.DataFrame, y: np.ndarray, base: dict[str, Any],
                   values: dict[str, Any]) -> dict[str, Any]:
    """The cross-validated score of one grid candidate (``values`` over the hyperparameters
    ``base``) on the training rows ``X``, ``y``: the same folds for every candidate of a seed."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    cls = catalog_class(spec.model_class)
    scoring = cv_scoring(spec.task)
    if spec.task is Task.classification:
        folds = min(CV_FOLDS, int(np.bincount(y.astype(np.int64)).min()))
        cv: Any = StratifiedKFold(max(folds, 2), shuffle=True, random_state=spec.seed)
    else:
        cv = KFold(CV_FOLDS, shuffle=True, random_state=spec.seed)
    pipe = _pipeline(spec, cls.resolve(spec.task, {**base, **values}))
    scores = cross_val_score(pipe, X, y, cv=cv, scoring=scoring, error_score="raise")
    return {"params": dict(values), "scoring": scoring, "mean": float(scores.mean()),
            "std": float(scores.std())}


def best_candidate(spec: TrainingSpec, base: dict[str, Any],
                   results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The hyperparameters of the best-scoring candidate; on a tie the first in grid order
    (so a search split across workers picks what the sequential one picks)."""
    best = max(results, key=lambda r: float(r["mean"]))
    return catalog_class(spec.model_class).resolve(spec.task, {**base, **best["params"]})


def grid_search(
    spec: TrainingSpec, X: pd.DataFrame, y: np.ndarray, base: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Cross-validated search over the class's declared grid, one candidate after another;
    returns the best parameters. Hyperparameters the request sets (``base``) are kept as given
    and not searched. (A tuned experiment on a job queue scores its candidates as jobs of their
    own: ``common/tuning.py``.)"""
    from common.tuning import grid_candidates

    results = [cross_validate(spec, X, y, base, values)
               for values in grid_candidates(spec.model_class, spec.task, base)]
    return best_candidate(spec, base, results), results


@dataclass
class Split:
    """A training frame as features and encoded target, split into training and holdout rows."""

    X: pd.DataFrame
    y: np.ndarray
    classes: list[Any]
    train_idx: np.ndarray
    hold_idx: np.ndarray
    stratified: bool

    @property
    def X_train(self) -> pd.DataFrame:
        return self.X.iloc[self.train_idx]

    @property
    def y_train(self) -> np.ndarray:
        return self.y[self.train_idx]


def split_frame(frame: pd.DataFrame, spec: TrainingSpec) -> Split:
    """Check that ``frame`` can be trained on and split it the way every training does."""
    if len(frame) < MIN_TRAINING_ROWS:
        raise BadRequest(
            f"{len(frame)} rows is too few to train; at least {MIN_TRAINING_ROWS} are needed"
        )
    X = feature_frame(frame, spec.features) if spec.image is None else frame[pixel_columns(spec.image)]
    y, classes = encode_target(frame[spec.target], spec.task)
    train_idx, hold_idx, stratified = split_indices(y, spec.task, spec.seed)
    if spec.task is Task.classification and len(np.unique(y[train_idx])) < len(classes):
        raise BadRequest("every class needs at least two rows so that training sees all of them")
    return Split(X, y, classes, train_idx, hold_idx, stratified)


def score_candidate(frame: pd.DataFrame, spec: TrainingSpec, values: dict[str, Any]) -> dict[str, Any]:
    """One grid candidate's cross-validated score on ``frame``'s training split (the job of a
    tuning candidate): what :func:`grid_search` computes for it inside :func:`train`."""
    split = split_frame(frame, spec)
    return cross_validate(spec, split.X_train, split.y_train, spec.hyperparameters, values)


def train(frame: pd.DataFrame, spec: TrainingSpec,
          grid_scores: list[dict[str, Any]] | None = None) -> TrainedModel:
    """Train ``spec`` on ``frame`` and return the exported, parity-checked ONNX model. A tuned
    spec searches its grid here, unless ``grid_scores`` holds every candidate's score already
    (scored by jobs of their own): the best of them is refitted."""
    data = split_frame(frame, spec)
    params = catalog_class(spec.model_class).resolve(spec.task, spec.hyperparameters)
    classes, train_idx, hold_idx = data.classes, data.train_idx, data.hold_idx
    stratified = data.stratified
    X_train, y_train = data.X_train, data.y_train
    X_hold, y_hold = data.X.iloc[hold_idx], data.y[hold_idx]

    if spec.tune and grid_scores:
        params, grid_scores = best_candidate(spec, spec.hyperparameters, grid_scores), list(grid_scores)
    elif spec.tune:
        params, grid_scores = grid_search(spec, X_train, y_train, spec.hyperparameters)
    else:
        grid_scores = []
    pipeline = _pipeline(spec, params)
    curves = fit(pipeline, X_train, y_train, X_hold, y_hold)

    onnx_proto = to_onnx(pipeline, spec.features, spec.task, spec.image)
    unchecked = OnnxModel(
        with_metadata(onnx_proto, _metadata(spec, classes, params, {}, {})), intra_op_threads=1
    )
    sample = X_hold if len(X_hold) else X_train
    parity = check_parity(pipeline, unchecked, sample, feeds(spec, sample), spec.task)
    holdout_feeds = feeds(spec, X_hold)
    served = unchecked.predict_feeds(holdout_feeds)
    metrics = score(spec.task, y_hold, served, classes)
    split = {
        "method": "stratified" if stratified else "random",
        "holdout_fraction": HOLDOUT_FRACTION,
        "seed": spec.seed,
        "train_rows": int(len(train_idx)),
        "holdout_rows": int(len(hold_idx)),
    }
    extra: dict[str, Any] = {
        "split": split,
        "parity": parity,
        "primary_metric": spec.extra_metadata.get("primary_metric") or PRIMARY_METRIC[spec.task],
    }
    if spec.image is not None:
        extra["image"] = spec.image.model_dump()
        extra["preprocessing"] = IMAGE_PREPROCESSING
    else:  # what GET /drift compares the served rows with
        extra["profile"] = build_profile(
            {f.name: X_train[f.name].to_numpy() for f in spec.features},
            {f.name: f.kind.value for f in spec.features},
            served.predictions, spec.task is Task.regression, classes)
    onnx_bytes = with_metadata(onnx_proto, _metadata(spec, classes, params, metrics, extra))
    return TrainedModel(
        onnx_bytes=onnx_bytes,
        metrics=metrics,
        hyperparameters=params,
        classes=classes,
        split=split,
        parity=parity,
        grid_scores=grid_scores,
        rows=len(frame),
        pipeline=pipeline,
        holdout=frame.iloc[hold_idx],
        holdout_target=y_hold,
        holdout_feeds=holdout_feeds,
        served=served,
        learning_curves=curves,
    )


IMAGE_PREPROCESSING = (
    "common.images.preprocess: decode with Pillow, convert to the model's mode, resize to its "
    "size (area average when shrinking, bilinear when enlarging), scale to [0, 1], flatten "
    "row-major into the 'pixels' input"
)


def fit(pipeline: Any, X_train: pd.DataFrame, y_train: np.ndarray, X_hold: pd.DataFrame,
        y_hold: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """Fit ``pipeline``; for gradient boosting also record the per-iteration loss curves on the
    training rows ("learn") and the holdout ("validation"), which never steer the fit."""
    model = pipeline.steps[-1][1]
    if type(model).__module__.split(".")[0] != "catboost" or not len(X_hold):
        pipeline.fit(X_train, y_train)
        return {}
    Xt, Xh = X_train, X_hold
    if len(pipeline.steps) > 1:
        from sklearn.pipeline import Pipeline

        pre = Pipeline(pipeline.steps[:-1])
        Xt, Xh = pre.fit_transform(X_train, y_train), pre.transform(X_hold)
    model.fit(Xt, y_train, eval_set=(Xh, y_hold), use_best_model=False)
    return {
        split: {name: [float(v) for v in values] for name, values in metrics.items()}
        for split, metrics in model.get_evals_result().items()
    }


def _pipeline(spec: TrainingSpec, params: dict[str, Any]) -> Any:
    if spec.image is None:
        return build_pipeline(spec.model_class, spec.task, spec.features, params, spec.seed, spec.threads)
    return build_image_pipeline(spec.model_class, spec.task, params, spec.seed, spec.threads)


def feeds(spec: TrainingSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The ONNX feeds for rows of a training frame, built the way serving builds them."""
    if spec.image is not None:
        return {INPUT_NAME: frame.to_numpy(np.float32)}
    return feeds_from_records(spec.features, frame_records(frame, spec.features))


def _metadata(
    spec: TrainingSpec,
    classes: Sequence[Any],
    params: dict[str, Any],
    metrics: dict[str, float],
    extra: dict[str, Any],
) -> dict[str, str]:
    return provenance(
        model=spec.model,
        experiment_id=spec.experiment_id,
        model_class=spec.model_class,
        task=spec.task,
        target=spec.target,
        features=spec.features,
        classes=list(classes),
        hyperparameters=params,
        metrics=metrics,
        extra={**spec.extra_metadata, **extra},
        commit=spec.commit,
    )
