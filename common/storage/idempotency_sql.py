"""Powertools' idempotency persistence layer on the SQL experiment store (SQLite, PostgreSQL):
the four operations of ``BasePersistenceLayer``, with the conditions its DynamoDB layer writes
(a record may be taken over only once it, or its in-progress lease, has expired), in one row
per key of an ``idempotency`` table."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import (
    STATUS_CONSTANTS,
    BasePersistenceLayer,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from common.storage.sql_store import SqlExperimentStore

COLUMNS = "key, status, expiry, in_progress_expiry, response, payload_hash"


class SqlPersistenceLayer(BasePersistenceLayer):
    def __init__(self, store: SqlExperimentStore) -> None:
        super().__init__()
        self.store = store
        if not getattr(store, "_idempotency_table", False):
            with store._transaction(write=True) as cur:
                store._before_ddl(cur)
                store._exec(cur, """CREATE TABLE IF NOT EXISTS idempotency (
                    key TEXT PRIMARY KEY, status TEXT NOT NULL, expiry BIGINT,
                    in_progress_expiry BIGINT, response TEXT, payload_hash TEXT)""")
            store._idempotency_table = True  # type: ignore[attr-defined]

    @staticmethod
    def _record(row: Any) -> DataRecord:
        key, status, expiry, in_progress, response, payload_hash = row
        return DataRecord(idempotency_key=key, status=status, expiry_timestamp=expiry,
                          in_progress_expiry_timestamp=in_progress, response_data=response or "",
                          payload_hash=payload_hash or "")

    def _get_record(self, idempotency_key: str) -> DataRecord:
        with self.store._transaction(write=False) as cur:
            self.store._exec(cur, f"SELECT {COLUMNS} FROM idempotency WHERE key = ?",
                             (idempotency_key,))
            row = cur.fetchone()
        if row is None:
            raise IdempotencyItemNotFoundError
        return self._record(row)

    def _put_record(self, data_record: DataRecord) -> None:
        now = dt.datetime.now()
        values = (data_record.idempotency_key, data_record.status, data_record.expiry_timestamp,
                  data_record.in_progress_expiry_timestamp, data_record.response_data or None,
                  data_record.payload_hash or None)
        store = self.store
        with store._transaction(write=True) as cur:
            # Expired keys go as new ones come (DynamoDB has its TTL for this).
            store._exec(cur, "DELETE FROM idempotency WHERE expiry < ?", (int(now.timestamp()) - 60,))
            store._exec(cur, f"INSERT INTO idempotency ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                             "ON CONFLICT (key) DO NOTHING", values)
            if cur.rowcount == 1:
                return
            store._exec(cur, f"SELECT {COLUMNS} FROM idempotency WHERE key = ?{store.lock_suffix}",
                        (data_record.idempotency_key,))
            old = self._record(cur.fetchone())
            expired = old.expiry_timestamp is not None and old.expiry_timestamp < now.timestamp()
            lease_over = (old.status == STATUS_CONSTANTS["INPROGRESS"]
                          and old.in_progress_expiry_timestamp is not None
                          and old.in_progress_expiry_timestamp < now.timestamp() * 1000)
            if not (expired or lease_over):
                # As the DynamoDB layer does with the item a failed condition returns.
                self._validate_payload(data_payload=data_record, stored_data_record=old)
                raise IdempotencyItemAlreadyExistsError(old_data_record=old)
            store._exec(cur, "UPDATE idempotency SET status = ?, expiry = ?, in_progress_expiry = ?, "
                             "response = ?, payload_hash = ? WHERE key = ?", (*values[1:], values[0]))

    def _update_record(self, data_record: DataRecord) -> None:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "UPDATE idempotency SET status = ?, expiry = ?, response = ? "
                                  "WHERE key = ?",
                             (data_record.status, data_record.expiry_timestamp,
                              data_record.response_data, data_record.idempotency_key))

    def _delete_record(self, data_record: DataRecord) -> None:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "DELETE FROM idempotency WHERE key = ?",
                             (data_record.idempotency_key,))
