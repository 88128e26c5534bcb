"""The Grafana dashboard's SQL runs on the service's own PostgreSQL schema: each panel's query,
with Grafana's time macros expanded as its PostgreSQL data source expands them, against tables
the service created and wrote (inference log, experiments, drift counts)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from common.monitoring import InferenceEvent
from common.storage.drift import SqlDrift
from common.storage.postgres_store import PostgresExperimentStore

DASHBOARD = Path(__file__).resolve().parents[2] / "infra/grafana/dashboards/mlfn.json"


def expand(sql: str) -> str:
    """$__timeGroupAlias(col, '5m') and $__timeFilter(col), over the last day."""
    def group(match: re.Match[str]) -> str:
        column, interval = match.group(1), match.group(2)
        seconds = int(interval[:-1]) * {"s": 1, "m": 60, "h": 3600}[interval[-1]]
        return (f"to_timestamp(floor(extract(epoch from {column})/{seconds})*{seconds}) AS time")

    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),\s*'([0-9]+[smh])'\)", group, sql)
    return re.sub(r"\$__timeFilter\(([^)]+?\)?[^)]*)\)",
                  r"\1 BETWEEN now() - interval '1 day' AND now() + interval '1 minute'", sql)


def test_every_panel_query_runs_and_the_drift_panel_plots_max_psi(pg_dsn: str) -> None:
    store = PostgresExperimentStore(pg_dsn)
    now = datetime.now(UTC)
    store.log_inference([InferenceEvent(route="forward", model="churn", experiment_id=1, rows=1,
                                        latency_ms=1.5, prediction_summary={"yes": 1},
                                        request_id="r1")])
    drift = SqlDrift(store, timedelta(days=7))
    drift.add("churn", 1, now - timedelta(minutes=2), "w1", 300, {"tenure": [1, 2]}, 0.4)
    drift.add("churn", 1, now - timedelta(minutes=2), "w2", 10, {"tenure": [1, 2]}, None)
    panels = json.loads(DASHBOARD.read_text())["panels"]
    results = {}
    with psycopg.connect(pg_dsn) as conn:
        for panel in panels:
            for target in panel["targets"]:
                results[panel["title"]] = conn.execute(expand(target["rawSql"])).fetchall()
    assert results["Requests per minute"], results
    rows = results["Drift: largest feature PSI"]
    assert [(metric, value) for _, metric, value in rows] == [("churn #1", 0.4)]
