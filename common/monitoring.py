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
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
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
MAX_LOGGED_PREDICTIONS = 1000  # per call, in the inference log
PRUNE_SECONDS = 60.0  # how often the writer applies the inference log's retention
METRICS = (("Latency", "Milliseconds"), ("Rows", "Count"), ("Errors", "Count"), ("ColdStart", "Count"))
METRIC_NAMES = frozenset(name for name, _ in METRICS)


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
    # Summarised by the writer, off the request path, into prediction_summary.
    predictions: list[Any] | None = None
    regression: bool = False
    role: str = "champion"  # the side of a rollout that answered: champion, canary or shadow
    # The call's validated inputs (ONNX feeds), counted for drift by the writer; never logged.
    feeds: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def logged(self) -> list[Any] | None:
        """The predictions kept in the inference log (feedback joins them by request id)."""
        return None if self.predictions is None else self.predictions[:MAX_LOGGED_PREDICTIONS]

    def summarized(self) -> InferenceEvent:
        if self.predictions is not None and not self.prediction_summary:
            self.prediction_summary = summarize(self.predictions, self.regression)
        return self


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
    if len(predictions) == 1:
        return {str(predictions[0]): 1}
    return {str(k): v for k, v in Counter(str(p) for p in predictions).items()}


class Observation:
    """What a use case tells the monitor about the call it is serving; a context manager that
    records the call, with its latency and status, when the block ends."""

    __slots__ = ("_monitor", "_route", "_model", "_start", "experiment_id", "rows", "summary",
                 "_predictions", "_regression", "role", "latency_ms", "feeds")

    def __init__(self, monitor: Monitor, route: str, model: str) -> None:
        self._monitor, self._route, self._model = monitor, route, model
        self.experiment_id: int | None = None
        self.rows = 0
        self.summary: dict[str, Any] = {}
        self._predictions: list[Any] | None = None
        self._regression = False
        self.role = "champion"
        self.latency_ms: float | None = None  # measured by the caller (a shadow batch), if set
        self.feeds: dict[str, Any] | None = None

    def predictions(self, predictions: list[Any], regression: bool) -> None:
        """The call's predictions, summarised later by the writer (counts per class, or the
        distribution of regression values)."""
        self._predictions, self._regression = predictions, regression

    def __enter__(self) -> Observation:
        self._start = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        if kind is None:
            status = 200
        elif isinstance(exc, ServiceError):
            status = exc.status
        else:
            status = 500
        self._monitor.record(InferenceEvent(
            route=self._route,
            model=self._model,
            experiment_id=self.experiment_id,
            rows=self.rows,
            latency_ms=(time.perf_counter() - self._start) * 1e3 if self.latency_ms is None
            else self.latency_ms,
            status=status,
            prediction_summary=self.summary,
            request_id=REQUEST_ID.get(),
            predictions=self._predictions,
            regression=self._regression,
            role=self.role,
            feeds=self.feeds,
        ))


class Monitor:
    """Records every call off the request path: ``record`` only appends to a bounded in-memory
    queue; a background thread (or ``flush``, which the Lambda adapter calls after each
    invocation, since Lambda freezes the process once the handler returns) writes the queued
    events in batches: one stdout write of their EMF lines, one SQL transaction of their
    inference_log rows. When the queue is full an event is dropped and counted, never waited
    for; the drops are reported by a log line and a ``MonitoringDropped`` metric.
    """

    def __init__(self, emf: bool, sink: InferenceLogSink | None, retention_days: float = 7.0,
                 keep_rows: int = 1_000_000, capacity: int = 10_000,
                 interval: float = 0.05) -> None:
        self.emf = emf
        self.sink = sink
        self.capacity = capacity
        self.dropped = 0  # events dropped since start (read by tests and the drop report)
        self._reported = 0
        self._events: deque[tuple[InferenceEvent, bool]] = deque()
        self._retention = timedelta(days=retention_days)
        self._keep_rows = keep_rows
        self._pruned = 0.0  # time.monotonic() of the last retention prune
        self._interval = interval
        self._cold_start = True
        self._lock = threading.Lock()  # the cold-start flag
        self._drain_lock = threading.Lock()  # one writer at a time, in queue order
        self._directives: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        # Called with each written batch, in the writer (the canary guard reads the log then).
        self.after_write: Callable[[list[InferenceEvent]], None] | None = None
        # Counts served inputs for drift (common.drift.DriftAggregator; set by Serving).
        self.drift: Any = None

    def observe(self, route: str, model: str) -> Observation:
        """``with monitor.observe(route, model) as obs:`` records the call when the block ends."""
        return Observation(self, route, model)

    def record(self, event: InferenceEvent) -> None:
        """Queue ``event``; never blocks (a full queue drops it and counts the drop)."""
        if not self.emf and self.sink is None:  # nothing to write: only drift counts, if on
            if self.drift is not None:
                self.drift.add((event,))
                if self._thread is None:
                    self._start()  # it persists them
            return
        with self._lock:
            cold, self._cold_start = self._cold_start, False
        if len(self._events) >= self.capacity:
            self.dropped += 1
            return
        self._events.append((event, cold))
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="mlfn-monitoring",
                                                daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                self.flush()
            except Exception:  # never let monitoring take the process down
                log.exception("monitoring writer failed")

    def flush(self) -> None:
        """Write every queued event now (the Lambda adapter, tests, /inference_log, shutdown)."""
        with self._drain_lock:
            while self._events:
                batch: list[tuple[InferenceEvent, bool]] = []
                while self._events and len(batch) < 1000:
                    batch.append(self._events.popleft())
                self._write(batch)
            self._report_drops()
            if self.drift is not None:
                try:
                    self.drift.persist()  # when due (drift_flush_seconds)
                except Exception:
                    log.exception("could not persist the drift counts")

    def _write(self, batch: list[tuple[InferenceEvent, bool]]) -> None:
        for event, _ in batch:
            event.summarized()
        if self.emf:
            sys.stdout.write("".join(self._emf_line(event, cold) for event, cold in batch))
            sys.stdout.flush()
        if self.sink is not None:
            try:
                self.sink.log_inference([event for event, _ in batch])
                now = time.monotonic()
                if now - self._pruned >= PRUNE_SECONDS:
                    self._pruned = now
                    self.sink.prune_inference(utcnow() - self._retention, self._keep_rows)
            except Exception:
                log.exception("could not write %d inference events", len(batch))
        if self.drift is not None:
            try:
                self.drift.add([event for event, _ in batch])
            except Exception:
                log.exception("could not count %d inference events for drift", len(batch))
        if self.after_write is not None:
            try:
                self.after_write([event for event, _ in batch])
            except Exception:
                log.exception("the monitoring hook failed")

    def _report_drops(self) -> None:
        dropped = self.dropped
        if dropped == self._reported:
            return
        new, self._reported = dropped - self._reported, dropped
        log.warning("monitoring queue full (%d events): dropped %d events (%d since start)",
                    self.capacity, new, dropped)
        if self.emf:
            from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

            metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            metrics.add_metric(name="MonitoringDropped", unit=MetricUnit.Count, value=new)
            metrics.flush_metrics()

    def flush_drift(self) -> None:
        """Write what is queued and persist the drift counts now (GET /drift, shutdown)."""
        self.flush()
        if self.drift is not None:
            self.drift.persist(force=True)

    def close(self) -> None:
        """Stop the background writer after writing what is queued."""
        self._closed.set()
        self.flush_drift()

    def model_loaded(self, model: str, experiment_id: int, seconds: float, size_bytes: int) -> None:
        if self.emf:
            from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

            metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            metrics.add_dimension(name="model", value=model)
            metrics.add_dimension(name="experiment", value=str(experiment_id))
            metrics.add_metric(name="ModelLoadTime", unit=MetricUnit.Milliseconds, value=seconds * 1e3)
            metrics.add_metric(name="ModelSize", unit=MetricUnit.Bytes, value=size_bytes)
            metrics.flush_metrics()

    def drift_metric(self, model: str, experiment_id: int, value: float) -> None:
        """``DriftMaxPSI``: the largest feature PSI of a persisted drift window, per model and
        experiment, and once more under the service alone (what the CloudWatch alarm watches)."""
        if not self.emf:
            return
        from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

        for dimensions in ({"model": model, "experiment": str(experiment_id)}, {}):
            metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            for name, dimension in dimensions.items():
                metrics.add_dimension(name=name, value=dimension)
            metrics.add_metric(name="DriftMaxPSI", unit=MetricUnit.NoUnit, value=value)
            metrics.flush_metrics()

    def _directive(self, model: str, experiment: str) -> tuple[str, dict[str, Any]]:
        """The EMF metadata for one (model, experiment), as Powertools serialises it: the
        metric directive as JSON text and the dimension fields; built once per key, because
        building a metric set per request costs more than the prediction."""
        key = (model, experiment)
        cached = self._directives.get(key)
        if cached is None:
            from aws_lambda_powertools.metrics import EphemeralMetrics

            metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            metrics.add_dimension(name="model", value=model)
            metrics.add_dimension(name="experiment", value=experiment)
            for name, unit in METRICS:
                metrics.add_metric(name=name, unit=unit, value=0)
            serialized: dict[str, Any] = dict(metrics.serialize_metric_set())
            directive = orjson.dumps(serialized.pop("_aws")["CloudWatchMetrics"]).decode()
            fields = {k: v for k, v in serialized.items() if k not in METRIC_NAMES}
            cached = (directive, fields)
            if len(self._directives) < 1024:
                self._directives[key] = cached
        return cached

    def _emf_line(self, event: InferenceEvent, cold: bool) -> str:
        """One line per call: an EMF document CloudWatch turns into metrics, which is also the
        structured log record of the call (request id, route, status, prediction summary)."""
        directive, fields = self._directive(event.model, str(event.experiment_id or "none"))
        record = orjson.dumps({
            **fields,
            "Latency": [event.latency_ms],
            "Rows": [float(event.rows)],
            "Errors": [float(event.status >= 400)],
            "ColdStart": [float(cold)],
            "level": "INFO" if event.status < 500 else "ERROR",
            "message": "inference",
            "timestamp": event.time.isoformat(timespec="milliseconds"),
            "request_id": event.request_id,
            "route": event.route,
            "role": event.role,
            "experiment_id": event.experiment_id,
            "rows": event.rows,
            "latency_ms": round(event.latency_ms, 3),
            "status": event.status,
            "cold_start": cold,
            "prediction_summary": event.prediction_summary,
        }).decode()
        timestamp = int(event.time.timestamp() * 1000)
        return f'{{"_aws":{{"Timestamp":{timestamp},"CloudWatchMetrics":{directive}}},{record[1:]}\n'
