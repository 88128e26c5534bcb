"""The API client's error messages and the pages' pure helpers, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import requests

from ui import drift, hyperparameters, rollouts, traffic
from ui.client import ApiError, ClientConfig, MlfnClient, _error_from


def response(status: int, body: bytes) -> requests.Response:
    reply = requests.Response()
    reply.status_code = status
    reply._content = body
    reply.reason = "Forbidden"
    return reply


def test_error_bodies_become_readable_messages():
    api = _error_from(response(409, b'{"error": "conflict", "detail": "model \'iris\' exists"}'))
    assert (api.status, api.error, api.message) == (409, "conflict", "conflict: model 'iris' exists (HTTP 409)")
    gateway = _error_from(response(403, b'{"message": "Forbidden"}'))
    assert gateway.message.startswith("Forbidden (HTTP 403;")
    html = _error_from(response(502, b"<html><body>Bad gateway</body></html>"))
    assert html.status == 502 and "Bad gateway" in html.detail
    assert isinstance(api, ApiError)


def test_config_from_the_environment(monkeypatch):
    monkeypatch.setenv("MLFN_UI_API_URL", "https://example.test/prod/")
    monkeypatch.setenv("MLFN_UI_API_KEY", "k")
    config = ClientConfig.from_env()
    assert (config.base_url, config.api_key) == ("https://example.test/prod", "k")
    assert MlfnClient(config).session.headers["x-api-key"] == "k"
    monkeypatch.delenv("MLFN_UI_API_URL")
    monkeypatch.delenv("MLFN_UI_API_KEY")
    assert ClientConfig.from_env() == ClientConfig("http://127.0.0.1:3000", None)


def test_only_changed_hyperparameters_are_sent():
    specs = [
        {"name": "n_estimators", "type": "int", "default": 100, "nullable": False, "tasks": []},
        {"name": "max_depth", "type": "int", "default": None, "nullable": True, "tasks": []},
        {"name": "max_features", "type": "choice", "default": "sqrt", "nullable": False, "tasks": []},
    ]
    values = {"n_estimators": 100, "max_depth": 8, "max_features": "sqrt"}
    assert hyperparameters.changed(specs, values) == {"max_depth": 8}
    assert hyperparameters.changed(specs, {"n_estimators": None, "max_depth": None}) == {}


def test_inference_log_summaries():
    assert traffic.label_counts({"a": 2, "b": 1}, 3) == {"a": 2.0, "b": 1.0}
    assert traffic.label_counts({"metrics": {"accuracy": 0.9}}, 10) == {}  # an evaluate call
    assert traffic.label_counts("a", 1) == {"a": 1.0}
    assert traffic.value_of({"mean": 2.5, "min": 1, "max": 4}) == 2.5
    assert traffic.value_of({"metrics": {"rmse": 1.0}}) is None
    log = traffic.frame_of([
        {"time": "2026-01-01T00:00:00+00:00", "model": "m", "experiment_id": 1, "route": "forward",
         "rows": 1, "latency_ms": 2.0, "status": 200, "prediction_summary": {"a": 1}},
        {"time": "2026-01-01T00:10:00+00:00", "model": "m", "experiment_id": 1, "route": "forward",
         "rows": 0, "latency_ms": 4.0, "status": 400, "prediction_summary": {}},
    ])
    numbers = traffic.summary(log)
    assert (numbers["requests"], numbers["errors"], numbers["error_rate"], numbers["p50"]) == (2, 1, 0.5, 3.0)
    assert traffic.bin_width(log) == "30s"
    counts = traffic.predictions(log, "classification")
    assert counts.to_dict("records") == [{"time": pd.Timestamp("2026-01-01T00:00:00Z"), "label": "a", "count": 1.0}]


def test_deploy_history_with_rollout_events():
    history = [
        {"event": "shadow sample changed", "experiment_id": 4, "at": "2026-01-03T00:00:00+00:00",
         "sample": 10.0, "previous_sample": 100.0},
        {"event": "canary ended", "experiment_id": 3, "at": "2026-01-02T00:00:00+00:00", "share": 5.0,
         "guard": True, "since": "2026-01-01T12:00:00+00:00", "reason": "auto-rollback: errors", "new": 1},
        {"event": "deploy", "model": "m", "seq": 2, "experiment_id": 2, "previous": 1,
         "deployed_at": "2026-01-01T00:00:00Z"},
        {"model": "m", "seq": 1, "experiment_id": 1, "previous": None, "deployed_at": "2025-12-31T00:00:00Z"},
    ]
    assert [d["experiment_id"] for d in rollouts.deploys(history)] == [2, 1]  # no "event": a deploy
    frame = rollouts.history_frame(history)
    assert list(frame["detail"]) == ["sample 10% · was 100%",
                                     "5% of requests · guard on · auto-rollback: errors · new=1", "", ""]
    assert list(frame["time"]) == ["2026-01-03 00:00:00 UTC", "2026-01-02 00:00:00 UTC",
                                   "2026-01-01 00:00:00 UTC", "2025-12-31 00:00:00 UTC"]
    assert list(rollouts.history_frame(history, ["canary", "shadow"])["experiment_id"]) == [4, 3]
    assert rollouts.history_frame(history, []).empty


def test_live_metrics_windows_and_table():
    now = datetime(2026, 1, 2, tzinfo=UTC)
    state = {"model": "m", "deployed": 1, "history": [],
             "canary": {"experiment_id": 2, "share": 10.0, "guard": False, "since": "2026-01-01T10:00:00+00:00"},
             "shadow": {"experiment_id": 3, "since": "2026-01-01T09:00:00+00:00"}}
    assert rollouts.window_start("since the rollout started", state, now) == "2026-01-01T09:00:00+00:00"
    assert rollouts.window_start("last hour", state, now) == "2026-01-01T23:00:00+00:00"
    assert rollouts.window_start("everything logged", state, now) is None
    live = {"agreement": None, "experiments": [
        {"experiment_id": 3, "role": "shadow", "requests": 4, "with_outcome": 0, "metrics": {},
         "p99_latency_ms": 2.0},
        {"experiment_id": 1, "role": "champion", "requests": 4, "with_outcome": 2,
         "metrics": {"accuracy": 0.5}, "p99_latency_ms": 1.0},
    ]}
    table = rollouts.live_frame(live)
    assert list(table.columns) == ["#1 champion", "#3 shadow"]
    assert table.loc["accuracy", "#1 champion"] == 0.5 and pd.isna(table.loc["accuracy", "#3 shadow"])


def test_drift_table_and_windows():
    found = {"model": "m", "experiment_id": 1, "since": None, "rows": 50, "threshold": 0.25, "min_rows": 100,
             "features": [{"name": "a", "kind": "numeric", "psi": 0.4, "missing_train": 0.0,
                           "missing_served": 0.1, "drifted": True},
                          {"name": "b", "kind": "categorical", "psi": None, "missing_train": 0.0,
                           "missing_served": None, "drifted": False}],
             "prediction": {"psi": None, "drifted": False}, "max_psi": 0.4, "drifted": ["a"]}
    table = drift.frame_of(found)
    assert list(table["feature"]) == ["a", "b"] and list(table["drifted"]) == [True, False]
    assert table["psi"].iloc[0] == 0.4 and pd.isna(table["psi"].iloc[1])
    assert not drift.enough_rows(found) and drift.enough_rows({**found, "rows": 100})
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert drift.since_of("last 24 hours", now) is None  # the API's default window
    assert drift.since_of("last hour", now) == "2026-01-01T23:00:00+00:00"
