"""Monitoring: EMF documents and JSON logs on stdout, inference_log rows in SQLite and Postgres."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from common import context
from common.domain import utcnow
from common.monitoring import InferenceEvent
from functions.evaluate import handler as evaluate_app
from functions.forward import handler as forward_app
from functions.forward_batch import handler as batch_app
from functions.inference_log import handler as log_app
from tests.apigw import call, invoke, v1_event

IRIS = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def stdout_documents(text: str) -> list[dict]:
    docs = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            docs.append(json.loads(line))
    return docs


def emf(docs: list[dict], metric: str) -> list[dict]:
    return [d for d in docs if "_aws" in d and any(
        m["Name"] == metric for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"])]


def test_emf_metrics_and_structured_logs(demo_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = v1_event("POST", "/forward", {"model": "iris"}, json.dumps(IRIS),
                     {"Content-Type": "application/json"})
    reply = call(forward_app.handler, event)
    assert reply.status == 200
    bad = invoke(forward_app.handler, "v2", "POST", "/forward", {"model": "iris"}, {"x": 1})
    assert bad.status == 400
    invoke(batch_app.handler, "v1", "POST", "/forward_batch", {"model": "iris"}, {"records": [IRIS] * 3})
    invoke(evaluate_app.handler, "v2", "POST", "/evaluate", {"model": "iris"},
           {"records": [{**IRIS, "species": "setosa"}]})
    docs = stdout_documents(capsys.readouterr().out)
    experiment = str(reply.json()["experiment_id"])

    latency = emf(docs, "Latency")
    assert len(latency) == 4
    first = latency[0]
    directive = first["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "mlfn"
    assert set(directive["Dimensions"][0]) == {"model", "experiment", "service"}
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "Latency": "Milliseconds", "Rows": "Count", "Errors": "Count", "ColdStart": "Count"}
    assert first["model"] == "iris" and first["experiment"] == experiment
    assert first["Rows"] == [1.0] and first["Errors"] == [0.0] and first["ColdStart"] == [1.0]
    assert latency[1]["Errors"] == [1.0] and latency[1]["ColdStart"] == [0.0]
    assert [d["route"] for d in latency] == ["forward", "forward", "forward_batch", "evaluate"]
    assert latency[2]["Rows"] == [3.0]
    loads = emf(docs, "ModelLoadTime")
    assert len(loads) == 1 and loads[0]["model"] == "iris" and loads[0]["ModelLoadTime"][0] > 0

    logs = [d for d in docs if d.get("message") == "inference"]
    assert logs == latency  # the EMF document is the structured log record of the call
    # Mangum hands the Lambda context's request id to the app; every line carries it.
    assert logs[0]["request_id"] and logs[0]["request_id"] != logs[1]["request_id"]
    assert logs[0]["level"] == "INFO" and logs[0]["service"] == "mlfn"
    assert logs[0]["prediction_summary"] == {"setosa": 1}
    assert logs[1]["status"] == 400


def run_some_traffic() -> None:
    for _ in range(3):
        assert invoke(forward_app.handler, "v1", "POST", "/forward", {"model": "iris"}, IRIS).status == 200
    assert invoke(batch_app.handler, "v2", "POST", "/forward_batch", {"model": "diabetes"},
                  {"records": [{"age": 50.0, "sex": "2", "bmi": 27.1, "bp": 95.0, "s1": 180.0, "s2": 110.0,
                                "s3": 45.0, "s4": 4.0, "s5": 4.6, "s6": 90.0}] * 2}).status == 200
    assert invoke(forward_app.handler, "v1", "POST", "/forward", {"model": "iris"}, {"bad": 1}).status == 400


def check_log_rows() -> None:
    reply = invoke(log_app.handler, "v1", "GET", "/inference_log", {"limit": "10"})
    assert reply.status == 200, reply.body
    rows = reply.json()
    assert [r["route"] for r in rows] == ["forward", "forward_batch", "forward", "forward", "forward"]
    assert [r["status"] for r in rows] == [400, 200, 200, 200, 200]
    assert rows[1]["model"] == "diabetes" and rows[1]["rows"] == 2
    assert set(rows[1]["prediction_summary"]) == {"mean", "min", "max"}
    assert rows[2]["prediction_summary"] == {"setosa": 1} and rows[2]["latency_ms"] > 0
    assert isinstance(rows[2]["experiment_id"], int)
    only_iris = invoke(log_app.handler, "v2", "GET", "/inference_log", {"model": "iris", "limit": "2"}).json()
    assert [r["model"] for r in only_iris] == ["iris", "iris"]


def test_inference_log_sqlite(demo_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_EMF", "false")
    context.reset()
    run_some_traffic()
    check_log_rows()


def test_inference_log_postgres(demo_env: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.storage.postgres_store import PostgresExperimentStore
    from common.storage.sqlite_store import SqliteExperimentStore

    # Move the demo models' records into Postgres; the ONNX files stay in the local object store.
    source = SqliteExperimentStore(demo_env / "experiments.sqlite3")
    target = PostgresExperimentStore(pg_dsn)
    models = source.list_models()
    for m in models:
        target.create_model(m.model_copy(update={"deployed_experiment_id": None}))
    for exp in sorted(source.list_experiments(), key=lambda e: e.id):
        assert target.create_experiment(exp.model_dump(exclude={"id"})).id == exp.id
    for m in models:
        target.deploy(m.name, m.deployed_experiment_id, None)
    monkeypatch.setenv("MLFN_EXPERIMENT_STORE", "postgres")
    monkeypatch.setenv("MLFN_POSTGRES_DSN", pg_dsn)
    context.reset()
    run_some_traffic()
    check_log_rows()
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT pg_typeof(time)::text, pg_typeof(prediction_summary)::text "
                           "FROM inference_log LIMIT 1").fetchone()
    assert row == ("timestamp with time zone", "jsonb")


def test_retention_prunes_old_and_excess_rows(tmp_path: Path) -> None:
    from common.storage.sqlite_store import SqliteExperimentStore

    store = SqliteExperimentStore(tmp_path / "e.sqlite3")
    old = utcnow() - timedelta(days=30)
    store.log_inference([InferenceEvent(route="forward", model="m", time=old)])
    store.log_inference([InferenceEvent(route="forward", model="m", rows=i) for i in range(10)])
    store.prune_inference(utcnow() - timedelta(days=7), keep_rows=4)
    rows = store.recent_inference("m", 100)
    assert [r["rows"] for r in rows] == [9, 8, 7, 6]


def test_inference_log_unavailable_on_dynamodb(aws: str, monkeypatch: pytest.MonkeyPatch,
                                               fresh_context: None) -> None:
    monkeypatch.setenv("MLFN_EXPERIMENT_STORE", "dynamodb")
    context.reset()
    context.backends().ensure_cloud_resources()
    reply = invoke(log_app.handler, "v1", "GET", "/inference_log")
    assert reply.status == 404 and "CloudWatch" in reply.json()["detail"]


class BlockedSink:
    """An inference_log sink whose writes wait until released (a database that stalls)."""

    def __init__(self) -> None:
        import threading

        self.entered = threading.Event()
        self.release = threading.Event()
        self.rows: list[InferenceEvent] = []

    def log_inference(self, events: list[InferenceEvent]) -> None:
        self.entered.set()
        assert self.release.wait(60)
        self.rows.extend(events)

    def prune_inference(self, older_than: object, keep_rows: int) -> None:
        pass

    def recent_inference(self, model: str | None, limit: int) -> list[dict]:
        return []


def test_a_full_queue_drops_and_counts_and_never_blocks(capsys: pytest.CaptureFixture[str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The writer is stuck in the database: recording goes on at once, events beyond the queue's
    capacity are dropped and counted, and the drop is reported (log line, metric) once the
    writer moves again; what was queued is written, in order."""
    import threading

    from common.monitoring import Monitor

    sink = BlockedSink()
    monitor = Monitor(emf=True, sink=sink, capacity=5, interval=0.01)
    monitor.record(InferenceEvent(route="forward", model="m", rows=-1))
    assert sink.entered.wait(10)  # the writer took that event and is now stuck writing it
    done = threading.Event()

    def flood() -> None:
        for i in range(50):
            monitor.record(InferenceEvent(route="forward", model="m", rows=i))
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(10), "record() blocked behind the stuck writer"
    assert monitor.dropped == 45
    capsys.readouterr()
    with caplog.at_level("WARNING", logger="mlfn.monitoring"):
        sink.release.set()
        monitor.close()
    assert [e.rows for e in sink.rows] == [-1, 0, 1, 2, 3, 4]
    assert "dropped 45 events" in caplog.text
    docs = stdout_documents(capsys.readouterr().out)
    dropped = emf(docs, "MonitoringDropped")
    assert len(dropped) == 1 and dropped[0]["MonitoringDropped"] == [45.0]
    assert len(emf(docs, "Latency")) == 5  # the queued events' EMF lines, written in one batch


def test_monitoring_events_are_written_off_the_request_path(demo_env: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A forward answers while the inference log's database is stuck (the server path: no
    flush per request)."""
    from common.serving import Serving

    monkeypatch.setenv("MLFN_EMF", "false")
    context.reset()
    sink = BlockedSink()
    serving = Serving(context.backends())
    serving.monitor.sink = sink
    for _ in range(3):
        assert serving.forward("iris", IRIS)["prediction"] == "setosa"
    assert sink.entered.wait(10) and not sink.rows
    sink.release.set()
    serving.monitor.close()
    assert [e.route for e in sink.rows] == ["forward"] * 3
