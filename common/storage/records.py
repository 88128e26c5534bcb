"""Small JSON records with a revision: uploads and ingestions (``common/uploads.py``,
``common/ingestion.py``).

Every change is a compare-and-set on the revision the writer read (``update`` raises
:class:`StaleRecord` when another writer got there first), so the state machines built on them
(``common/tasks.py``: claim, lease, fence, finish) are written once, above the adapters, and the
adapters only get, create, update, list and delete. Kept on the experiment store's database,
apart from its own tables (like the idempotency records and the rollouts): a ``records`` table
on SQL (SQLite, PostgreSQL), items ``REC#<kind>#<id>`` / ``META`` on DynamoDB with the table's
TTL attribute ``expiration`` where a record expires.

A record's expiry is the ``expires`` given to ``create``, then the ``record_expires`` of each
document written (DynamoDB rewrites the whole item, so a document without it loses its TTL; SQL
keeps the one it had). ``delete_expired`` removes the records past it: ``mlfn gc`` calls it, as
SQL has no TTL of its own (on DynamoDB the TTL deletes them too, within a few days).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.errors import Conflict, NotFound


class StaleRecord(Exception):
    """The record changed (or went) since it was read: read it again and decide again."""


@dataclass(frozen=True)
class Record:
    kind: str
    id: str
    doc: dict[str, Any] = field(default_factory=dict)
    revision: int = 1

    @property
    def status(self) -> str:
        return str(self.doc.get("status", ""))


class RecordStore(Protocol):
    def get(self, kind: str, record_id: str) -> Record:
        """NotFound for an unknown record."""
        ...

    def create(self, kind: str, record_id: str, doc: dict[str, Any],
               expires: int | None = None) -> Record:
        """Conflict if it exists. ``expires``: epoch seconds after which it may be deleted."""
        ...

    def update(self, record: Record, doc: dict[str, Any]) -> Record:
        """Write ``doc`` if the stored record still has ``record.revision``; StaleRecord if not
        (also when it was deleted)."""
        ...

    def with_status(self, kind: str, statuses: tuple[str, ...]) -> list[Record]:
        """The records of ``kind`` in one of ``statuses``, by id: what the embedded workers
        poll and the collector sweeps (a scan on DynamoDB, where SQS carries the work)."""
        ...

    def delete(self, kind: str, record_id: str) -> None: ...

    def delete_expired(self, kinds: tuple[str, ...], now: float,
                       dry_run: bool = False) -> list[tuple[str, str]]:
        """Delete (with ``dry_run`` only find) the records of ``kinds`` whose expiry is at or
        before ``now`` (epoch seconds); their (kind, id)."""
        ...


def _expires(doc: dict[str, Any]) -> int | None:
    expires = doc.get("record_expires")
    return None if expires is None else int(expires)


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str)


class SqlRecords:
    """The ``records`` table of a SQL experiment store (created on first use per store)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        if not getattr(store, "_records_table", False):
            with store._transaction(write=True) as cur:
                store._before_ddl(cur)
                store._exec(cur, """CREATE TABLE IF NOT EXISTS records (
                    kind TEXT NOT NULL, id TEXT NOT NULL, status TEXT NOT NULL,
                    doc TEXT NOT NULL, revision BIGINT NOT NULL, expires BIGINT,
                    PRIMARY KEY (kind, id))""")
                store._exec(cur, "CREATE INDEX IF NOT EXISTS records_status ON records (kind, status)")
            store._records_table = True

    _COLUMNS = "kind, id, doc, revision"

    @staticmethod
    def _record(row: Any) -> Record:
        kind, record_id, doc, revision = row
        return Record(kind, record_id, json.loads(doc), int(revision))

    def get(self, kind: str, record_id: str) -> Record:
        with self.store._transaction(write=False) as cur:
            self.store._exec(cur, f"SELECT {self._COLUMNS} FROM records WHERE kind = ? AND id = ?",
                             (kind, record_id))
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"{kind} {record_id!r} does not exist")
        return self._record(row)

    def create(self, kind: str, record_id: str, doc: dict[str, Any],
               expires: int | None = None) -> Record:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "INSERT INTO records (kind, id, status, doc, revision, expires) "
                                  "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (kind, id) DO NOTHING",
                             (kind, record_id, str(doc.get("status", "")), _dumps(doc), expires))
            if cur.rowcount != 1:
                raise Conflict(f"{kind} {record_id!r} exists already")
        return Record(kind, record_id, doc, 1)

    def update(self, record: Record, doc: dict[str, Any]) -> Record:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "UPDATE records SET doc = ?, status = ?, revision = ?, "
                                  "expires = COALESCE(?, expires) "
                                  "WHERE kind = ? AND id = ? AND revision = ?",
                             (_dumps(doc), str(doc.get("status", "")), record.revision + 1,
                              _expires(doc), record.kind, record.id, record.revision))
            if cur.rowcount != 1:
                raise StaleRecord(f"{record.kind} {record.id}")
        return Record(record.kind, record.id, doc, record.revision + 1)

    def with_status(self, kind: str, statuses: tuple[str, ...]) -> list[Record]:
        marks = ", ".join("?" for _ in statuses)
        with self.store._transaction(write=False) as cur:
            self.store._exec(cur, f"SELECT {self._COLUMNS} FROM records WHERE kind = ? AND "
                                  f"status IN ({marks}) ORDER BY id", (kind, *statuses))
            return [self._record(r) for r in cur.fetchall()]

    def delete(self, kind: str, record_id: str) -> None:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id))

    def delete_expired(self, kinds: tuple[str, ...], now: float,
                       dry_run: bool = False) -> list[tuple[str, str]]:
        # One statement: a record whose expiry moved on since it was found is not deleted.
        verb = "SELECT kind, id FROM" if dry_run else "DELETE FROM"
        returning = "" if dry_run else " RETURNING kind, id"
        marks = ", ".join("?" for _ in kinds)
        with self.store._transaction(write=not dry_run) as cur:
            self.store._exec(cur, f"{verb} records WHERE kind IN ({marks}) AND expires IS NOT NULL "
                                  f"AND expires <= ?{returning}", (*kinds, int(now)))
            return sorted((str(kind), str(record_id)) for kind, record_id in cur.fetchall())


class DynamoRecords:
    """Items ``REC#<kind>#<id>`` / ``META`` in the experiment store's table."""

    def __init__(self, store: Any) -> None:
        self.table = store.table
        self.client = store._db

    @staticmethod
    def _key(kind: str, record_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"REC#{kind}#{record_id}"}, "sk": {"S": "META"}}

    @staticmethod
    def _record(item: dict[str, Any]) -> Record:
        return Record(item["kind"]["S"], item["rid"]["S"], json.loads(item["doc"]["S"]),
                      int(item["revision"]["N"]))

    def _item(self, kind: str, record_id: str, doc: dict[str, Any], revision: int,
              expires: int | None) -> dict[str, Any]:
        item = {**self._key(kind, record_id), "kind": {"S": kind}, "rid": {"S": record_id},
                "doc": {"S": _dumps(doc)}, "status": {"S": str(doc.get("status", ""))},
                "revision": {"N": str(revision)}}
        if expires is not None:
            item["expiration"] = {"N": str(int(expires))}
        return item

    def get(self, kind: str, record_id: str) -> Record:
        item = self.client.get_item(TableName=self.table, Key=self._key(kind, record_id),
                                    ConsistentRead=True).get("Item")
        if item is None:
            raise NotFound(f"{kind} {record_id!r} does not exist")
        return self._record(item)

    def create(self, kind: str, record_id: str, doc: dict[str, Any],
               expires: int | None = None) -> Record:
        try:
            self.client.put_item(TableName=self.table,
                                 Item=self._item(kind, record_id, doc, 1, expires),
                                 ConditionExpression="attribute_not_exists(pk)")
        except self.client.exceptions.ConditionalCheckFailedException:
            raise Conflict(f"{kind} {record_id!r} exists already") from None
        return Record(kind, record_id, doc, 1)

    def update(self, record: Record, doc: dict[str, Any]) -> Record:
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._item(record.kind, record.id, doc, record.revision + 1, _expires(doc)),
                ConditionExpression="revision = :r",
                ExpressionAttributeValues={":r": {"N": str(record.revision)}})
        except self.client.exceptions.ConditionalCheckFailedException:
            raise StaleRecord(f"{record.kind} {record.id}") from None
        return Record(record.kind, record.id, doc, record.revision + 1)

    def with_status(self, kind: str, statuses: tuple[str, ...]) -> list[Record]:
        values = {f":s{i}": {"S": s} for i, s in enumerate(statuses)}
        pages = self.client.get_paginator("scan").paginate(
            TableName=self.table, ConsistentRead=True,
            FilterExpression=f"#k = :kind AND #st IN ({', '.join(values)})",
            ExpressionAttributeNames={"#k": "kind", "#st": "status"},
            ExpressionAttributeValues={":kind": {"S": kind}, **values})
        found = [self._record(item) for page in pages for item in page.get("Items", [])]
        return sorted(found, key=lambda r: r.id)

    def delete(self, kind: str, record_id: str) -> None:
        self.client.delete_item(TableName=self.table, Key=self._key(kind, record_id))

    def delete_expired(self, kinds: tuple[str, ...], now: float,
                       dry_run: bool = False) -> list[tuple[str, str]]:
        # The TTL deletes them as well, but only within days: a scan, and a conditional delete
        # that spares a record whose expiry moved on since the scan.
        limit = {":now": {"N": str(int(now))}}
        values = {f":k{i}": {"S": k} for i, k in enumerate(kinds)}
        pages = self.client.get_paginator("scan").paginate(
            TableName=self.table, ConsistentRead=True, ProjectionExpression="#k, rid",
            FilterExpression=f"#k IN ({', '.join(values)}) AND expiration <= :now",
            ExpressionAttributeNames={"#k": "kind"},
            ExpressionAttributeValues={**values, **limit})
        gone = []
        for item in (item for page in pages for item in page.get("Items", [])):
            kind, record_id = item["kind"]["S"], item["rid"]["S"]
            if not dry_run:
                try:
                    self.client.delete_item(TableName=self.table, Key=self._key(kind, record_id),
                                            ConditionExpression="expiration <= :now",
                                            ExpressionAttributeValues=limit)
                except self.client.exceptions.ConditionalCheckFailedException:
                    continue
            gone.append((kind, record_id))
        return sorted(gone)


def record_store(experiments: Any) -> RecordStore:
    """The record store on the experiment store's database."""
    from common.storage.sql_store import SqlExperimentStore

    if isinstance(experiments, SqlExperimentStore):
        return SqlRecords(experiments)
    return DynamoRecords(experiments)
