"""The serving use cases: forward, forward_batch, metadata. No training library is imported."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from common.backends import Backends
from common.domain import Task, utcnow
from common.errors import BadRequest, NotFound
from common.inference.onnx_model import OnnxModel, Predictions, SessionCache, top_k
from common.monitoring import REQUEST_ID, Monitor
from common.names import model_key, model_name
from common.payloads import check_top_k
from common.storage.rollouts import Rollout, in_canary, in_shadow_sample

log = logging.getLogger("mlfn")


class Serving:
    """Answers predictions from the deployed experiment of each model.

    The deployed pointer is re-read at most every ``deploy_check_seconds`` per model, so warm
    instances pick up a new deployment without a restart; loaded sessions are cached by
    (model, experiment id), so a switch never serves a stale graph under a new id.
    """

    def __init__(self, backends: Backends, monitor: Monitor | None = None) -> None:
        self.backends = backends
        self.settings = settings = backends.settings
        self.monitor = monitor or Monitor(
            settings.emf,
            backends.inference_log,
            settings.inference_log_retention_days,
            settings.inference_log_max_rows,
            capacity=settings.monitor_queue,
        )
        self.sessions = SessionCache(self.settings.session_cache_size)
        self._pointers: dict[str, tuple[int | None, float]] = {}
        self._versions: dict[tuple[str, int], float] = {}  # load_version(): when last checked
        self._rollouts: dict[str, tuple[Rollout, float]] = {}
        self._rollout_store: Any = None
        self._shadows: Any = None
        # The canary guard (Rollouts.check_guard, set by the life cycle), run by the monitoring
        # writer after it logged canary calls, at most every guard_check_seconds per model.
        self.guard: Callable[[str], Any] | None = None
        self._guarded: dict[str, float] = {}
        self.monitor.after_write = self._after_write
        self._drift_log: Any = None  # common.storage.drift, opened by drift_log()
        if settings.drift == "on" and self.monitor.drift is None:
            from common.drift import DriftAggregator

            self.monitor.drift = DriftAggregator(
                self.drift_log, self._drift_counter, settings.drift_flush_seconds,
                settings.drift_min_rows, self.monitor.drift_metric)
        self._lock = threading.Lock()

    # -- deployed pointer ----------------------------------------------------------------------
    def deployed_id(self, model: str) -> int:
        now = time.monotonic()
        cached = self._pointers.get(model)
        if cached is not None and now - cached[1] < self.settings.deploy_check_seconds:
            experiment_id = cached[0]
        else:
            experiment_id = self.backends.experiments.deployed_experiment(model)
            with self._lock:
                self._pointers[model] = (experiment_id, now)
        if experiment_id is None:
            raise NotFound(f"model {model!r} has no deployed experiment; deploy one first")
        return experiment_id

    def forget_pointer(self, model: str) -> None:
        """Drop the cached pointer and rollout (this process just changed them)."""
        with self._lock:
            self._pointers.pop(model, None)
            self._rollouts.pop(model, None)

    # -- rollouts (canary, shadow) -------------------------------------------------------------
    def rollout(self, model: str) -> Rollout:
        """The model's canary and shadow, re-read at the pace of the deployed pointer."""
        now = time.monotonic()
        cached = self._rollouts.get(model)
        if cached is not None and now - cached[1] < self.settings.deploy_check_seconds:
            return cached[0]
        if self._rollout_store is None:
            from common.storage.rollouts import rollout_store

            self._rollout_store = rollout_store(self.backends.experiments)
        current = self._rollout_store.get(model)
        with self._lock:
            self._rollouts[model] = (current, now)
        return current

    def _after_write(self, events: list[Any]) -> None:
        if self.guard is None:
            return
        now = time.monotonic()
        for model in {e.model for e in events if e.role == "canary"}:
            if now - self._guarded.get(model, -1e9) >= self.settings.guard_check_seconds:
                self._guarded[model] = now
                try:
                    self.guard(model)
                except Exception:
                    log.exception("the canary guard of %s failed", model)

    # -- drift -------------------------------------------------------------------------------
    def drift_log(self) -> Any:
        """The store's drift log (common/storage/drift.py), opened on first use."""
        if self._drift_log is None:
            from common.storage.drift import drift_log

            self._drift_log = drift_log(self.backends.experiments, self.settings)
        return self._drift_log

    def _drift_counter(self, model: str, experiment_id: int) -> Any:
        return self._session(model, experiment_id).drift_counter

    def drift(self, model: str, experiment_id: int | None, since: datetime | None) -> dict[str, Any]:
        """``GET /drift``: PSI of the rows ``experiment_id`` (the deployed one by default) served
        since ``since`` (drift_window_hours ago by default) against its training profile."""
        from common.drift import report
        from common.errors import Conflict
        from common.storage.drift import total

        model = model_name(model)
        if self.settings.drift == "off":
            raise Conflict("drift is off on this server (MLFN_DRIFT=off): nothing is counted")
        onnx_model = self.load_version(model, None if experiment_id is None else str(experiment_id))
        if onnx_model.drift_counter is None:
            raise Conflict(
                f"experiment {onnx_model.experiment_id} of model {model!r} has no training profile "
                "to compare with (image models have none; tabular experiments trained before "
                "drift profiles existed need a retrain)")
        self.monitor.flush_drift()  # what this process counted so far
        start = since or utcnow() - timedelta(hours=self.settings.drift_window_hours)
        rows, counts = total(self.drift_log(), model, onnx_model.experiment_id, start)
        return report(model, onnx_model.experiment_id, onnx_model.drift_counter.profile, rows,
                      counts, start, self.settings.drift_psi_threshold, self.settings.drift_min_rows)

    def flush_shadow(self) -> None:
        if self._shadows is not None:
            self._shadows.flush()

    def route(self, model: str) -> tuple[OnnxModel, str, Rollout]:
        """The session that answers this request, and its role: the canary for its share of the
        requests (chosen by the request id, so a retried request lands on the same experiment),
        else the deployed champion."""
        model = model_name(model)
        rollout = self.rollout(model)
        if rollout.canary is not None and in_canary(REQUEST_ID.get(), model, rollout.share):
            try:
                return self._session(model, rollout.canary), "canary", rollout
            except NotFound:  # ended and deleted since this process read the rollout
                self.forget_pointer(model)
        return self.load(model), "champion", rollout

    def shadow(self, model: str, rollout: Rollout, route_name: str, feeds: Any) -> None:
        """Have the shadow score ``feeds`` after the answer (bounded; dropped when busy)."""
        if rollout.shadow is None or not in_shadow_sample(REQUEST_ID.get(), model,
                                                          rollout.shadow_share):
            return
        if self._shadows is None:
            from common.shadow import ShadowScorer

            with self._lock:
                if self._shadows is None:
                    self._shadows = ShadowScorer(self, self.settings.shadow_queue)
        self._shadows.submit(model, rollout.shadow, route_name, feeds, REQUEST_ID.get())

    def load(self, model: str, experiment_id: int | None = None) -> OnnxModel:
        """The session of ``experiment_id``, or of the deployed experiment when None."""
        model = model_name(model)
        if experiment_id is not None:
            return self._session(model, experiment_id)
        deployed = self.deployed_id(model)
        try:
            return self._session(model, deployed)
        except NotFound:
            # The pointer may be up to deploy_check_seconds old: another instance can have
            # deployed a new experiment and deleted this one since. Ask the store once more.
            self.forget_pointer(model)
            current = self.deployed_id(model)
            if current == deployed:
                raise
            return self._session(model, current)

    def _session(self, model: str, experiment_id: int) -> OnnxModel:
        def load() -> OnnxModel:
            # Only on a cache miss: the model file is the one its succeeded attempt recorded
            # (an experiment recorded without one, by hand, is read at its first attempt's key).
            key = (self.backends.experiments.get_experiment(experiment_id).artifact_key
                   or model_key(model, experiment_id))
            start = time.perf_counter()
            loaded = OnnxModel(self.backends.models.get(key), self.settings.ort_intra_op_threads)
            self.monitor.model_loaded(model, experiment_id, time.perf_counter() - start,
                                      loaded.size_bytes)
            return loaded

        return self.sessions.get((model, experiment_id), load)

    def load_version(self, model: str, version: str | None) -> OnnxModel:
        """The session of ``version`` (an experiment id, as the inference protocol names it) of
        ``model``, or of the deployed experiment when None; NotFound unless the version is a
        succeeded experiment of that model. The check is trusted for deploy_check_seconds."""
        model = model_name(model)
        if version is None or version == "":
            return self.load(model)
        if not version.isascii() or not version.isdigit() or len(version) > 19:
            raise NotFound(f"model {model!r} has no version {version[:40]!r}: its versions are "
                           "its succeeded experiments' ids")
        experiment_id = int(version)
        now = time.monotonic()
        checked = self._versions.get((model, experiment_id))
        if checked is None or now - checked >= self.settings.deploy_check_seconds:
            try:
                exp = self.backends.experiments.get_experiment(experiment_id)
            except NotFound:
                exp = None
            if exp is None or exp.model != model or exp.status.value != "succeeded":
                raise NotFound(f"model {model!r} has no version {version}: it is not a succeeded "
                               "experiment of the model")
            with self._lock:
                if len(self._versions) > 4096:
                    self._versions.clear()
                self._versions[(model, experiment_id)] = now
        return self._session(model, experiment_id)

    def versions(self, model: str) -> list[int]:
        """The ids of a model's succeeded experiments, oldest first."""
        from common.domain import ExperimentStatus

        found = self.backends.experiments.list_experiments(model_name(model), ExperimentStatus.succeeded)
        return sorted(e.id for e in found)

    def preload(self, spec: str) -> list[str]:
        """Load the deployed experiment of the models in ``spec`` now, so their first request
        does not pay for it; ``spec`` is comma-separated names or ``*`` (every model with a
        deployment, at most ``session_cache_size``). A model that cannot be loaded is logged and
        skipped: its first request loads it again and reports what is wrong. Returns the names
        loaded."""
        names = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
        if names == ["*"]:
            names = [m.name for m in self.backends.experiments.list_models()
                     if m.deployed_experiment_id is not None]
        loaded = []
        for name in names[: self.settings.session_cache_size]:
            try:
                self.load(name)
            except Exception as exc:  # a broken model must not stop the process from serving
                log.warning("preload of model %r failed: %s: %s", name, type(exc).__name__, exc)
            else:
                loaded.append(name)
        return loaded

    # -- use cases -------------------------------------------------------------------------
    def forward(self, model: str, record: Any, k: int | None = None) -> dict[str, Any]:
        """One record; ``k`` (X-Top-K): the most probable classes to return (all when None)."""
        with self.monitor.observe("forward", model) as obs:
            if not isinstance(record, dict):
                raise BadRequest("body must be one JSON object of feature -> value")
            onnx_model, obs.role, rollout = self.route(model)
            obs.experiment_id = onnx_model.experiment_id
            check_top_k(k, onnx_model.task, model)
            out = onnx_model.predict([record])
            obs.rows, obs.feeds = 1, out.feeds
            obs.predictions(out.predictions, onnx_model.task is Task.regression)
        self.shadow(model, rollout, "forward", [record])
        answer: dict[str, Any] = {
            "model": model,
            "experiment_id": onnx_model.experiment_id,
            "prediction": out.predictions[0],
        }
        if out.probabilities is not None:
            answer["probabilities"] = out.probabilities[0] if k is None else top_k(out.probabilities[0], k)
        return answer

    def check_batch(self, records: Any) -> Sequence[Any]:
        if not isinstance(records, list):
            raise BadRequest("'records' must be a JSON array of objects")
        if not records:
            raise BadRequest("the batch is empty")
        if len(records) > self.settings.max_batch_rows:
            from common.payloads import too_many_rows

            raise BadRequest(too_many_rows(len(records), self.settings.max_batch_rows))
        return records

    def forward_batch_upload(
        self, model: str, kind: str, data: bytes, k: int | None = None
    ) -> dict[str, Any]:
        """A forward_batch body as uploaded: JSON records, CSV or a zip of images."""
        from common.payloads import records_of

        if kind == "zip":
            return self.forward_batch_images(model, data, k)
        return self.forward_batch(
            model, lambda: self._csv_records(model, data) if kind == "csv" else records_of(data), k
        )

    def _csv_records(self, model: str, data: bytes) -> list[dict[str, Any]]:
        from common.payloads import csv_records

        tabular = self.tabular_model(model)
        return csv_records(data, tabular.features, target=tabular.metadata.get("target"),
                           max_rows=self.settings.max_batch_rows)

    def forward_batch(self, model: str, records: Any, k: int | None = None) -> dict[str, Any]:
        """``records`` may be a callable that parses them, so that a refused body is monitored;
        ``k`` (X-Top-K): the most probable classes to return per row (all when None)."""
        with self.monitor.observe("forward_batch", model) as obs:
            onnx_model, obs.role, rollout = self.route(model)
            rows = self.check_batch(records() if callable(records) else records)
            out = onnx_model.predict(rows)
            obs.experiment_id, obs.rows = onnx_model.experiment_id, len(out.predictions)
            check_top_k(k, onnx_model.task, model)
            obs.feeds = out.feeds
            obs.predictions(out.predictions, onnx_model.task is Task.regression)
        self.shadow(model, rollout, "forward_batch", rows)
        answer: dict[str, Any] = {
            "model": model,
            "experiment_id": onnx_model.experiment_id,
            "predictions": out.predictions,
        }
        if out.probabilities is not None:
            answer["probabilities"] = (out.probabilities if k is None
                                      else [top_k(p, k) for p in out.probabilities])
        return answer

    def evaluate_upload(self, model: str, kind: str, data: bytes) -> dict[str, Any]:
        """An evaluate body as uploaded: labelled JSON records, CSV or a labelled zip of images."""
        from common.payloads import csv_records, records_of

        if kind == "zip":
            return self.evaluate_images(model, data)

        def parse() -> Any:
            if kind != "csv":
                return records_of(data)
            tabular = self.tabular_model(model)
            return csv_records(data, tabular.features, extra=(tabular.metadata["target"],))

        return self.evaluate(model, parse)

    def evaluate(self, model: str, records: Any) -> dict[str, Any]:
        """Predict labelled records and score them against their target column; ``records`` may
        be a callable that parses them, so that a refused body is monitored."""
        with self.monitor.observe("evaluate", model) as obs:
            onnx_model = self.load(model)
            obs.experiment_id = onnx_model.experiment_id
            if callable(records):
                records = records()
            features, labels = split_target(self.check_batch(records), onnx_model.metadata["target"])
            answer = self._scored(model, onnx_model, onnx_model.predict(features), labels)
            obs.rows, obs.summary = answer["n"], {"metrics": answer["metrics"]}
        return answer

    def _scored(self, model: str, onnx_model: OnnxModel, out: Predictions, labels: list[Any],
                row_names: list[str] | None = None) -> dict[str, Any]:
        """Metrics of ``out`` against ``labels``, computed with NumPy (no scikit-learn here)."""
        import numpy as np

        from common.inference.inputs import FLOAT32_MAX
        from common.inference.metrics import MetricOverflow, classification_metrics, regression_metrics

        target = onnx_model.metadata["target"]

        def where(i: int) -> str:
            return f"(row {i})" if row_names is None else f"({row_names[i]!r})"

        if onnx_model.task is Task.regression:
            y = np.empty(len(labels))
            for i, value in enumerate(labels):
                if isinstance(value, str):  # CSV cells and archive labels arrive as text
                    with contextlib.suppress(ValueError):
                        value = float(value)
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise BadRequest(f"target {target!r} {where(i)}: expected a number, got {value!r}")
                if abs(value) > FLOAT32_MAX:  # as add_data refuses it: the model predicts float32
                    raise BadRequest(
                        f"target {target!r} {where(i)}: {value!r} is outside the float32 range "
                        f"(±{FLOAT32_MAX:.7g}) that the model predicts in; add_data refuses it too")
                y[i] = value
            predicted = np.asarray(out.predictions, dtype=np.float64)
            try:
                metrics = regression_metrics(y, predicted)
            except MetricOverflow as exc:
                raise BadRequest(
                    f"target {target!r} {where(exc.row)}: {labels[exc.row]!r} against the "
                    f"prediction {predicted[exc.row]:.7g} (the largest error) makes {exc.metric} "
                    "overflow float64; do the targets have the right scale?") from None
        else:
            index = {str(c): i for i, c in enumerate(onnx_model.classes)}
            y_idx = []
            for i, value in enumerate(labels):
                key = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
                if value is None or key not in index:
                    raise BadRequest(
                        f"target {target!r} {where(i)}: {value!r} is not one of the model's classes "
                        f"{onnx_model.classes}"
                    )
                y_idx.append(index[key])
            pred_idx = np.array([index[str(p)] for p in out.predictions])
            keys = [str(c) for c in onnx_model.classes]
            proba = np.array([[row[k] for k in keys] for row in out.probabilities or []])
            metrics = classification_metrics(np.array(y_idx), pred_idx, proba)
        answer = {
            "model": model,
            "experiment_id": onnx_model.experiment_id,
            "n": len(labels),
            "metrics": metrics,
            "predictions": out.predictions,
        }
        if row_names is not None:
            answer["files"] = row_names
        return answer

    def tabular_model(self, model: str) -> OnnxModel:
        """The deployed model, which must take tabular input (CSV parsing needs its schema)."""
        onnx_model = self.load(model)
        if onnx_model.image is not None:
            raise BadRequest(
                f"model {model!r} takes images: send a zip archive of images, not CSV or JSON"
            )
        return onnx_model

    # -- images ------------------------------------------------------------------------------
    def _image_model(self, model: str, obs: Any = None) -> OnnxModel:
        """The deployed image model; given the call's observation, the canary for its share of
        the requests (images are not shadow-scored)."""
        if obs is None:
            onnx_model = self.load(model)
        else:
            onnx_model, obs.role, _ = self.route(model)
        if onnx_model.image is None:
            raise BadRequest(
                f"model {model!r} is tabular: send JSON (or CSV for batches), not an image"
            )
        return onnx_model

    def forward_image(self, model: str, data: bytes, k: int | None = None) -> dict[str, Any]:
        """One image: the prediction and the input as the model saw it, annotated, as a PNG."""
        import base64

        from common.images import INPUT_NAME, annotate, preprocess

        with self.monitor.observe("forward", model) as obs:
            onnx_model = self._image_model(model, obs)
            check_top_k(k, onnx_model.task, model)
            obs.experiment_id = onnx_model.experiment_id
            spec = onnx_model.image
            assert spec is not None
            pixels = preprocess(data, spec)
            out = onnx_model.predict_feeds({INPUT_NAME: pixels[None, :]})
            obs.rows = 1
            obs.predictions(out.predictions, onnx_model.task is Task.regression)
        prediction = out.predictions[0]
        answer: dict[str, Any] = {"model": model, "experiment_id": onnx_model.experiment_id,
                                  "prediction": prediction}
        if out.probabilities is not None:
            probabilities = out.probabilities[0]
            answer["probabilities"] = top_k(probabilities, k)
            caption = f"{prediction} ({probabilities[str(prediction)]:.0%})"
        else:
            caption = f"{prediction:.4g}"
        answer["image"] = base64.b64encode(annotate(pixels, spec, caption)).decode()
        return answer

    def _archive_predictions(self, onnx_model: OnnxModel, archive: bytes,
                             labelled: bool) -> tuple[list[Any], Predictions]:
        import numpy as np

        from common.archives import read_images
        from common.images import INPUT_NAME, preprocess

        spec = onnx_model.image
        assert spec is not None
        # Each entry is decoded as it is read, so only its pixels stay in memory.
        images = read_images(archive, self.settings.archive_limits, labelled=labelled,
                             decode=lambda name, blob: preprocess(blob, spec, name=name))
        self.check_batch(images)
        matrix = np.stack([i.data for i in images])
        return images, onnx_model.predict_feeds({INPUT_NAME: matrix})

    def forward_batch_images(self, model: str, archive: bytes, k: int | None = None) -> dict[str, Any]:
        """A zip of images: predictions in archive order, each next to its file name."""
        with self.monitor.observe("forward_batch", model) as obs:
            onnx_model = self._image_model(model, obs)
            check_top_k(k, onnx_model.task, model)
            obs.experiment_id = onnx_model.experiment_id
            images, out = self._archive_predictions(onnx_model, archive, labelled=False)
            obs.rows = len(images)
            obs.predictions(out.predictions, onnx_model.task is Task.regression)
        answer: dict[str, Any] = {"model": model, "experiment_id": onnx_model.experiment_id,
                                  "files": [i.name for i in images], "predictions": out.predictions}
        if out.probabilities is not None:
            answer["probabilities"] = [top_k(p, k) for p in out.probabilities]
        return answer

    def evaluate_images(self, model: str, archive: bytes) -> dict[str, Any]:
        with self.monitor.observe("evaluate", model) as obs:
            onnx_model = self._image_model(model)
            obs.experiment_id = onnx_model.experiment_id
            images, out = self._archive_predictions(onnx_model, archive, labelled=True)
            answer = self._scored(model, onnx_model, out, [i.label for i in images],
                                  [i.name for i in images])
            obs.rows, obs.summary = answer["n"], {"metrics": answer["metrics"]}
        return answer

    def metadata(self, model: str) -> dict[str, Any]:
        return dict(self.load(model).metadata)

    def inference_log(self, model: str | None, limit: int) -> list[dict[str, Any]]:
        sink = self.monitor.sink
        if sink is None:
            raise NotFound(
                "this server keeps no inference log (it needs the sqlite or postgres experiment "
                "store); on AWS the same events are CloudWatch metrics and logs"
            )
        if model is not None:
            self.backends.experiments.get_model(model_name(model))
        if not 1 <= limit <= 10_000:
            raise BadRequest("limit must be between 1 and 10000")
        self.monitor.flush()
        return sink.recent_inference(model, limit)

    def list_models(self) -> list[dict[str, Any]]:
        store = self.backends.experiments
        out = []
        for m in store.list_models():
            parts = store.dataset_parts(m.name, m.dataset_version)
            out.append({
                "name": m.name,
                "task": m.task.value,
                "target": m.target,
                "input": m.input,
                "image": None if m.image is None else m.image.model_dump(),
                "features": [f.model_dump(mode="json") for f in m.features or []],
                "deployed_experiment_id": m.deployed_experiment_id,
                "dataset_version": m.dataset_version,
                "rows_total": sum(p.rows for p in parts),
            })
        return out


def split_target(records: Any, target: str) -> tuple[list[Any], list[Any]]:
    """Separate the target column from labelled records (evaluate)."""
    if not isinstance(records, list):
        raise BadRequest("'records' must be a JSON array of objects")
    features, labels = [], []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise BadRequest(f"record (row {i}): expected a JSON object")
        if target not in rec:
            raise BadRequest(f"missing target column {target!r} (row {i})")
        rest = dict(rec)
        labels.append(rest.pop(target))
        features.append(rest)
    return features, labels
