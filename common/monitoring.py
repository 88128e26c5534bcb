"""Monitoring of every forward, forward_batch and evaluate call.

Each call writes one JSON line to stdout: a CloudWatch Embedded Metric Format document (metadata
serialised by aws-lambda-powertools; metrics latency, rows, errors, cold start, and model load
time when a model is loaded; dimensions model and experiment) that is also the call's structured
log record, carrying the request id. Where the experiment store is SQL (SQLite embedded, PostgreSQL
in compose), the same events go to the ``inference_log`` table through a background writer, with
a retention limit; Grafana reads that table.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

from common.domain import utcnow
from common.errors import ServiceError

REQUEST_ID: ContextVar[str] = ContextVar("mlfn_request_id", default="-")
NAMESPACE = "mlfn"
SERVICE = "mlfn"

log = logging.getLogger("mlfn.monitoring")


@dataclass
class InferenceEvent:
    route: str
    model: str
    time: datetime = field(default_factory=utcnow)
    experiment_id: int | None = None
    rows: int = 0
    latency_ms: float = 0.0
    status: int = 200
    prediction_summary: dict[str, Any] = field(default_factory=dict)
    request_id: str = "-"


class InferenceLogSink(Protocol):
    def log_inference(self, events: list[InferenceEvent]) -> None: ...

    def prune_inference(self, older_than: datetime, keep_rows: int) -> None: ...

    def recent_inference(self, model: str | None, limit: int) -> list[dict[str, Any]]: ...


def summarize(predictions: list[Any], regression: bool) -> dict[str, Any]:
    """Counts per class, or the distribution of regression values."""
    if not predictions:
        return {}
    if regression:
        values = [float(v) for v in predictions]
        return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    return {str(k): v for k, v in Counter(str(p) for p in predictions).items()}


class _Writer:
    """Batches inference events into the sink off the request path."""

    def __init__(self, sink: InferenceLogSink, retention_days: float, keep_rows: int) -> None:
        self._sink = sink
        self._queue: queue.Queue[InferenceEvent] = queue.Queue(maxsize=100_000)
        self._retention = timedelta(days=retention_days)
        self._keep_rows = keep_rows
        self._written = 0
        self._thread = threading.Thread(target=self._loop, name="mlfn-inference-log", daemon=True)
        self._thread.start()

    def put(self, event: InferenceEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:  # never slow down or fail a prediction for the log
            log.warning("inference log queue full; dropping an event")

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._sink.log_inference(batch)
                self._written += len(batch)
                if self._written >= 1000:
                    self._written = 0
                    self._sink.prune_inference(utcnow() - self._retention, self._keep_rows)
            except Exception:
                log.exception("could not write %d inference events", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    def flush(self) -> None:
        self._queue.join()


class Observation:
    """What a use case tells the monitor about the call it is serving."""

    def __init__(self) -> None:
        self.experiment_id: int | None = None
        self.rows = 0
        self.summary: dict[str, Any] = {}


class Monitor:
    def __init__(self, emf: bool, sink: InferenceLogSink | None, retention_days: float = 7.0,
                 keep_rows: int = 1_000_000) -> None:
        self.emf = emf
        self.sink = sink
        self._writer = _Writer(sink, retention_days, keep_rows) if sink is not None else None
        self._cold_start = True
        self._lock = threading.Lock()
        self._directives: dict[tuple[str, str], dict[str, Any]] = {}

    @contextmanager
    def observe(self, route: str, model: str) -> Iterator[Observation]:
        obs = Observation()
        start = time.perf_counter()
        status = 200
        try:
            yield obs
        except ServiceError as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            event = InferenceEvent(
                route=route,
                model=model,
                experiment_id=obs.experiment_id,
                rows=obs.rows,
                latency_ms=(time.perf_counter() - start) * 1e3,
                status=status,
                prediction_summary=obs.summary,
                request_id=REQUEST_ID.get(),
            )
            self.record(event)

    def record(self, event: InferenceEvent) -> None:
        with self._lock:
            cold, self._cold_start = self._cold_start, False
        if self.emf:
            self._emit(event, cold)
        if self._writer is not None:
            self._writer.put(event)

    def model_loaded(self, model: str, experiment_id: int, seconds: float, size_bytes: int) -> None:
        if self.emf:
            from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

            metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            metrics.add_dimension(name="model", value=model)
            metrics.add_dimension(name="experiment", value=str(experiment_id))
            metrics.add_metric(name="ModelLoadTime", unit=MetricUnit.Milliseconds, value=seconds * 1e3)
            metrics.add_metric(name="ModelSize", unit=MetricUnit.Bytes, value=size_bytes)
            metrics.flush_metrics()

    def _directive(self, model: str, experiment: str) -> dict[str, Any]:
        """The EMF metadata for one (model, experiment), as Powertools serialises it; built once
        per key, because building a metric set per request costs more than the prediction."""
        key = (model, experiment)
        cached = self._directives.get(key)
        if cached is None:
            from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

            metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            metrics.add_dimension(name="model", value=model)
            metrics.add_dimension(name="experiment", value=experiment)
            for name, unit in (("Latency", MetricUnit.Milliseconds), ("Rows", MetricUnit.Count),
                               ("Errors", MetricUnit.Count), ("ColdStart", MetricUnit.Count)):
                metrics.add_metric(name=name, unit=unit, value=0)
            serialized: dict[str, Any] = dict(metrics.serialize_metric_set())
            if len(self._directives) < 1024:
                self._directives[key] = serialized
            return serialized
        return cached

    def _emit(self, event: InferenceEvent, cold: bool) -> None:
        """One line per call: an EMF document CloudWatch turns into metrics, which is also the
        structured log record of the call (request id, route, status, prediction summary)."""
        experiment = str(event.experiment_id or "none")
        doc = dict(self._directive(event.model, experiment))
        now = time.time()
        doc["_aws"] = {**doc["_aws"], "Timestamp": int(now * 1000)}
        doc.update(
            Latency=[event.latency_ms],
            Rows=[float(event.rows)],
            Errors=[float(event.status >= 400)],
            ColdStart=[float(cold)],
            level="INFO" if event.status < 500 else "ERROR",
            message="inference",
            timestamp=event.time.isoformat(timespec="milliseconds"),
            request_id=event.request_id,
            route=event.route,
            experiment_id=event.experiment_id,
            rows=event.rows,
            latency_ms=round(event.latency_ms, 3),
            status=event.status,
            cold_start=cold,
            prediction_summary=event.prediction_summary,
        )
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")

    def flush(self) -> None:
        """Wait until queued inference events are written (tests, shutdown)."""
        if self._writer is not None:
            self._writer.flush()
