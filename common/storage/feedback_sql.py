"""True outcomes sent back for served predictions (``POST /feedback``), in a ``feedback`` table
of the SQL experiment store, keyed by model, request id and row (the row of a batch request;
0 for a single forward). A later outcome for the same key replaces the earlier one."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from common.domain import utcnow


class SqlFeedback:
    def __init__(self, store: Any) -> None:
        self.store = store
        if not getattr(store, "_feedback_table", False):
            with store._transaction(write=True) as cur:
                store._before_ddl(cur)
                store._exec(cur, """CREATE TABLE IF NOT EXISTS feedback (
                    model TEXT NOT NULL, request_id TEXT NOT NULL, row_index BIGINT NOT NULL,
                    label TEXT NOT NULL, time TEXT NOT NULL, PRIMARY KEY (model, request_id, row_index))""")
            store._feedback_table = True

    def add(self, model: str, rows: list[tuple[str, int, Any]]) -> None:
        now = utcnow().isoformat()
        with self.store._transaction(write=True) as cur:
            cur.executemany(self.store._sql(
                "INSERT INTO feedback (model, request_id, row_index, label, time) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (model, request_id, row_index) DO UPDATE SET label = excluded.label, "
                "time = excluded.time"),
                [(model, request_id, row, json.dumps(label), now) for request_id, row, label in rows])

    def delete(self, model: str) -> None:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "DELETE FROM feedback WHERE model = ?", (model,))

    def since(self, model: str, start: datetime) -> dict[tuple[str, int], Any]:
        """The outcomes of requests (request id, row) received since ``start``: an outcome comes
        after its call, so these cover every call served since then (the join keeps the window)."""
        with self.store._transaction(write=False) as cur:
            self.store._exec(cur, "SELECT request_id, row_index, label FROM feedback WHERE model = ? "
                                  "AND time >= ?", (model, start.isoformat()))
            return {(r[0], int(r[1])): json.loads(r[2]) for r in cur.fetchall()}
