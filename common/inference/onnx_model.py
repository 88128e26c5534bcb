"""The ONNX inference runtime: one small class every handler uses."""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from common.domain import Feature, ImageSpec, Task
from common.drift import DriftCounter
from common.errors import BadRequest, InferenceError
from common.inference.inputs import feeds_from_records

# Metadata keys whose values are JSON documents.
JSON_METADATA = (
    "features", "classes", "hyperparameters", "metrics", "split", "parity", "tune",
    "dataset_version", "image", "profile",
)


@dataclass(frozen=True)
class Predictions:
    """Labels (classification) or values (regression) in input order, with class probabilities."""

    predictions: list[Any]
    probabilities: list[dict[str, float]] | None
    # The validated inputs, as the graph was fed them (the monitoring writer counts them for
    # drift); not part of the answer.
    feeds: dict[str, np.ndarray] | None = field(default=None, compare=False, repr=False)


def parse_metadata(raw: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(raw)
    for key in JSON_METADATA:
        if key in out:
            out[key] = json.loads(out[key])
    if "experiment_id" in out:
        out["experiment_id"] = int(out["experiment_id"])
    return out


@dataclass
class Scores:
    """What the graph answered: regression ``values``, or class ``probabilities`` (rows in the
    model's class order) with the most probable class of each row as its label."""

    values: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    labels: list[Any] | None = None


class OnnxModel:
    """An ONNX model with provenance, loaded from bytes.

    Parameters
    ----------
    data:
        The serialised ONNX model as produced by ``common.training.export``.
    intra_op_threads:
        onnxruntime's intra-op thread count; one is fastest for single rows on Lambda.
    """

    def __init__(self, data: bytes, intra_op_threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.metadata = parse_metadata(self._session.get_modelmeta().custom_metadata_map)
        self.features = [Feature.model_validate(f) for f in self.metadata["features"]]
        image = self.metadata.get("image")
        self.image = None if image is None else ImageSpec.model_validate(image)
        self.task = Task(self.metadata["task"])
        self.classes: list[Any] = self.metadata.get("classes") or []
        self._class_keys = [str(c) for c in self.classes]
        self._outputs = [o.name for o in self._session.get_outputs()]
        # The binding under InferenceSession.run: run() re-validates the input names on every
        # call (~10 us), which feeds built from the model's own schema never need.
        self._run = getattr(self._session, "_sess", self._session).run
        self.size_bytes = len(data)

    @property
    def experiment_id(self) -> int:
        return int(self.metadata["experiment_id"])

    @functools.cached_property
    def drift_counter(self) -> DriftCounter | None:
        """Counts served rows into the training profile's bins (None: no profile, as for image
        models and experiments trained before profiles existed)."""
        profile = self.metadata.get("profile")
        return DriftCounter(profile) if isinstance(profile, dict) else None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._run(self._outputs, feeds, None)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(f"{type(exc).__name__}: {exc}") from exc

    def scores(self, feeds: dict[str, np.ndarray]) -> Scores:
        """The model's answer as arrays: regression values, or probabilities and labels."""
        out = self.run(feeds)
        if self.task is Task.regression:
            values = np.asarray(out[0], dtype=np.float64).reshape(-1)
            if not np.isfinite(values).all():
                raise InferenceError("the model produced a non-finite prediction")
            return Scores(values=values)
        probs = np.asarray(out[1], dtype=np.float64)
        if not np.isfinite(probs).all():
            raise InferenceError("the model produced non-finite probabilities")
        # The served label is the most probable class of the probabilities served (the first on
        # an exact tie), whatever the graph's label output says: tree ensembles break ties their
        # own way, and a model like SVC(probability=True) labels by its decision function.
        classes = self.classes
        labels = np.empty(len(classes), dtype=object)  # the classes themselves, picked by index
        for i, name in enumerate(classes):
            labels[i] = name
        return Scores(probabilities=probs, labels=labels[probs.argmax(axis=1)].tolist())

    def predict_feeds(self, feeds: dict[str, np.ndarray], keep_feeds: bool = False) -> Predictions:
        scores = self.scores(feeds)
        kept = feeds if keep_feeds else None
        if scores.values is not None:
            return Predictions(scores.values.tolist(), None, kept)
        assert scores.probabilities is not None and scores.labels is not None
        keys = self._class_keys
        return Predictions(
            scores.labels,
            [dict(zip(keys, row, strict=True)) for row in scores.probabilities.tolist()],
            kept,
        )

    def predict(self, records: Sequence[Any], first_row: int = 0) -> Predictions:
        """Validate JSON records against the feature schema and predict them."""
        if self.image is not None:
            raise BadRequest(
                f"model {self.metadata.get('model')!r} takes images: send multipart/form-data with "
                "a field 'image' (or a zip archive for batches), not JSON"
            )
        target = self.metadata.get("target")
        feeds = feeds_from_records(self.features, records, first_row, target)
        return self.predict_feeds(feeds, keep_feeds=True)


def top_k(probabilities: dict[str, float], k: int | None) -> dict[str, float]:
    """The ``k`` most probable classes, most probable first (all of them when k is None)."""
    ranked = sorted(probabilities.items(), key=lambda kv: kv[1], reverse=True)
    return dict(ranked if k is None else ranked[:k])


class SessionCache:
    """Loaded models keyed by (model name, experiment id): a deployed version never goes stale.

    Concurrent first requests for one key wait for a single load instead of each building the
    same session (which can take a second and hundreds of MB for a big forest).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int], OnnxModel] = OrderedDict()
        self._loading: dict[tuple[str, int], Future[OnnxModel]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], load: Callable[[], OnnxModel]) -> OnnxModel:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
            pending = self._loading.get(key)
            owner = pending is None
            if pending is None:
                pending = self._loading[key] = Future()
        if not owner:
            return pending.result()
        try:
            model = load()
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            self._items[key] = model
            while len(self._items) > self._size:
                self._items.popitem(last=False)
            del self._loading[key]
        pending.set_result(model)
        return model

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._items
