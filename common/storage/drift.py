"""The drift log: served-row counts per model, experiment and persisted window (about a minute
of one process's traffic), written by the monitoring writer (``common.drift.DriftAggregator``)
and summed by ``GET /drift``. Append-only: each process writes rows of its own (keyed by its
writer id), so concurrent writers never overwrite one another.

SQL stores (SQLite, PostgreSQL): a ``drift_counts`` table, pruned to the inference log's
retention as rows are written; Grafana plots its ``max_psi`` column. DynamoDB: items
``MODEL#<name>`` / ``DRIFT#<time>#<writer>#<experiment>`` in a table of their own
(``MLFN_DRIFT_TABLE``, default ``<table>-drift``: the serving functions may write there and
nowhere else), deleted by its TTL (``expiration``) after the same retention.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol

from common.drift import add_counts

Counts = dict[str, list[int]]


class DriftLog(Protocol):
    def add(self, model: str, experiment_id: int, at: datetime, writer: str, rows: int,
            counts: Counts, max_psi: float | None) -> None: ...

    def windows(self, model: str, experiment_id: int, start: datetime) -> Iterator[tuple[int, Counts]]: ...

    def delete(self, model: str) -> None: ...


def total(log: DriftLog, model: str, experiment_id: int, start: datetime) -> tuple[int, Counts]:
    """The rows and summed counts of ``experiment_id`` served since ``start``."""
    rows = 0
    counts: Counts = {}
    for window_rows, window in log.windows(model, experiment_id, start):
        rows += window_rows
        add_counts(counts, window)
    return rows, counts


class SqlDrift:
    def __init__(self, store: Any, retention: timedelta) -> None:
        self.store = store
        self.retention = retention
        if not getattr(store, "_drift_table", False):
            with store._transaction(write=True) as cur:
                store._before_ddl(cur)
                store._exec(cur, """CREATE TABLE IF NOT EXISTS drift_counts (
                    model TEXT NOT NULL, experiment_id BIGINT NOT NULL, time TEXT NOT NULL,
                    writer TEXT NOT NULL, rows BIGINT NOT NULL, counts TEXT NOT NULL,
                    max_psi DOUBLE PRECISION,
                    PRIMARY KEY (model, experiment_id, time, writer))""")
                store._exec(cur, "CREATE INDEX IF NOT EXISTS drift_counts_time ON drift_counts (time)")
            store._drift_table = True

    def add(self, model: str, experiment_id: int, at: datetime, writer: str, rows: int,
            counts: Counts, max_psi: float | None) -> None:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "INSERT INTO drift_counts (model, experiment_id, time, writer, "
                                  "rows, counts, max_psi) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (model, experiment_id, at.isoformat(), writer, rows,
                              json.dumps(counts), max_psi))
            self.store._exec(cur, "DELETE FROM drift_counts WHERE time < ?",
                             ((at - self.retention).isoformat(),))

    def windows(self, model: str, experiment_id: int, start: datetime) -> Iterator[tuple[int, Counts]]:
        with self.store._transaction(write=False) as cur:
            self.store._exec(cur, "SELECT rows, counts FROM drift_counts WHERE model = ? AND "
                                  "experiment_id = ? AND time >= ?",
                             (model, experiment_id, start.isoformat()))
            found = cur.fetchall()
        for rows, counts in found:
            yield int(rows), json.loads(counts)

    def delete(self, model: str) -> None:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "DELETE FROM drift_counts WHERE model = ?", (model,))


class DynamoDrift:
    def __init__(self, table: str, client: Any, retention: timedelta) -> None:
        self.table = table
        self.client = client
        self.retention = retention

    def ensure_table(self) -> None:
        """Create the table if missing (emulators and local runs; SAM creates it on AWS)."""
        try:
            self.client.describe_table(TableName=self.table)
            return
        except self.client.exceptions.ResourceNotFoundException:
            pass
        self.client.create_table(
            TableName=self.table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}])
        self.client.get_waiter("table_exists").wait(TableName=self.table)

    def add(self, model: str, experiment_id: int, at: datetime, writer: str, rows: int,
            counts: Counts, max_psi: float | None) -> None:
        item: dict[str, Any] = {
            "pk": {"S": f"MODEL#{model}"},
            "sk": {"S": f"DRIFT#{at.isoformat()}#{writer}#{experiment_id}"},
            "experiment": {"N": str(experiment_id)},
            "rows": {"N": str(rows)},
            # Compressed: mostly small numbers and zeros, and an item holds at most 400 KB.
            "counts": {"B": zlib.compress(json.dumps(counts).encode(), 6)},
            "expiration": {"N": str(int((at + self.retention).timestamp()))},
        }
        if max_psi is not None:
            item["max_psi"] = {"N": repr(float(max_psi))}
        self.client.put_item(TableName=self.table, Item=item)

    def _items(self, model: str, start: str, attributes: str) -> Iterator[dict[str, Any]]:
        names = {"ExpressionAttributeNames": {"#rows": "rows"}} if "#rows" in attributes else {}
        pages = self.client.get_paginator("query").paginate(
            TableName=self.table, ConsistentRead=True, ProjectionExpression=attributes,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :from AND :to", **names,
            ExpressionAttributeValues={":pk": {"S": f"MODEL#{model}"},
                                       ":from": {"S": f"DRIFT#{start}"},
                                       ":to": {"S": "DRIFT#\uffff"}})
        for page in pages:
            yield from page.get("Items", [])

    def windows(self, model: str, experiment_id: int, start: datetime) -> Iterator[tuple[int, Counts]]:
        for item in self._items(model, start.isoformat(), "experiment, #rows, counts"):
            if int(item["experiment"]["N"]) == experiment_id:
                yield int(item["rows"]["N"]), json.loads(zlib.decompress(item["counts"]["B"]))

    def delete(self, model: str) -> None:
        keys = [{"pk": item["pk"], "sk": item["sk"]} for item in self._items(model, "", "pk, sk")]
        for start in range(0, len(keys), 25):
            requests = [{"DeleteRequest": {"Key": key}} for key in keys[start:start + 25]]
            pending: dict[str, Any] = {self.table: requests}
            while pending:
                pending = self.client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def drift_table(settings: Any) -> str:
    return settings.drift_table or f"{settings.table_name}-drift"


def drift_log(experiments: Any, settings: Any) -> DriftLog:
    from common.storage.sql_store import SqlExperimentStore

    retention = timedelta(days=settings.inference_log_retention_days)
    if isinstance(experiments, SqlExperimentStore):
        return SqlDrift(experiments, retention)
    return DynamoDrift(drift_table(settings), experiments._db, retention)
