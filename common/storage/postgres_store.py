"""ExperimentStore on PostgreSQL (psycopg 3); the schema is created idempotently."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from common.storage.sql_store import SqlExperimentStore

_DDL_LOCK = 872301  # advisory lock id: concurrent start-ups create the schema one at a time


class PostgresExperimentStore(SqlExperimentStore):
    serial = "BIGSERIAL PRIMARY KEY"
    lock_suffix = " FOR UPDATE"
    share_lock_suffix = " FOR SHARE"
    timestamp_type = "TIMESTAMPTZ"
    json_type = "JSONB"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn
        self.create_schema()

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _before_ddl(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))

    def _columns(self, cur: Any, table: str) -> set[str]:
        self._exec(cur, "SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = ?", (table,))
        return {row[0] for row in cur.fetchall()}

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        conn = self._conn()
        if conn.closed:
            conn = self._local.conn = self._connect()
        with conn.transaction(), conn.cursor() as cur:
            yield cur
