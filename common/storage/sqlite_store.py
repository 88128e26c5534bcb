"""The embedded ExperimentStore: SQLite in WAL mode, safe across threads and processes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common.storage.sql_store import SqlExperimentStore


class SqliteExperimentStore(SqlExperimentStore):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.create_schema()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _columns(self, cur: Any, table: str) -> set[str]:
        self._exec(cur, f"PRAGMA table_info({table})")
        return {row[1] for row in cur.fetchall()}

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        conn = self._conn()
        cur = conn.cursor()
        # IMMEDIATE takes the write lock up front, so read-check-write sequences cannot interleave.
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cur.close()
