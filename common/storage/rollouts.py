"""A model's rollout beside its deployed pointer: the canary (an experiment and its share of the
traffic, guarded or not) and the shadow (an experiment that scores the same requests after the
answer is sent). One small record per model, on the experiment store's database: a
``rollouts`` table on SQL (SQLite, PostgreSQL), an item ``MODEL#<name>/ROLLOUT`` on DynamoDB.

Kept apart from the store adapters' own tables, like the idempotency records: a rollout is
optional state that the serving path reads at the pace it reads the deployed pointer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from common.domain import utcnow


@dataclass(frozen=True)
class Rollout:
    canary: int | None = None
    share: float = 0.0  # percent of the requests the canary answers
    guard: bool = False  # end the canary automatically when it does worse
    shadow: int | None = None
    shadow_share: float = 100.0  # percent of the requests the shadow scores
    canary_since: str | None = None  # ISO time the canary started (its live window)
    shadow_since: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # ended canaries, newest last
    revision: int = 0  # bumped by every write; a write names the revision it read

    @property
    def active(self) -> bool:
        return self.canary is not None or self.shadow is not None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> Rollout:
        if not text:
            return NONE
        doc = json.loads(text)
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})


NONE = Rollout()


def in_canary(request_id: str, model: str, share: float) -> bool:
    """Whether the request with ``request_id`` goes to the canary: a stable hash of the id, so
    the same request (a retry) always lands on the same side."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{model}\0{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 < share * 100


def in_shadow_sample(request_id: str, model: str, share: float) -> bool:
    """Whether the shadow scores the request with ``request_id``: a hash of its own, so the
    sample does not follow the canary split."""
    if share >= 100:
        return True
    digest = hashlib.blake2b(f"{model}\0{request_id}".encode(), digest_size=8,
                             person=b"mlfn-shadow").digest()
    return int.from_bytes(digest, "big") % 10_000 < share * 100


class StaleRollout(Exception):
    """The rollout changed since it was read: read it again and redo the change."""


MAX_HISTORY = 50  # ended canaries kept per model


class RolloutStore(Protocol):
    def get(self, model: str) -> Rollout: ...

    def put(self, model: str, rollout: Rollout) -> Rollout:
        """Write ``rollout`` if the stored one still has ``rollout.revision`` (0: none stored);
        the written record (revision + 1), or StaleRollout."""
        ...

    def delete(self, model: str) -> None: ...


def now_iso() -> str:
    return utcnow().isoformat()


def since(rollout_time: str | None) -> datetime | None:
    return None if rollout_time is None else datetime.fromisoformat(rollout_time)


class SqlRollouts:
    def __init__(self, store: Any) -> None:
        self.store = store
        if not getattr(store, "_rollouts_table", False):
            with store._transaction(write=True) as cur:
                store._before_ddl(cur)
                store._exec(cur, "CREATE TABLE IF NOT EXISTS rollouts (model TEXT PRIMARY KEY, "
                                 "doc TEXT NOT NULL, revision BIGINT NOT NULL)")
            store._rollouts_table = True

    def get(self, model: str) -> Rollout:
        with self.store._transaction(write=False) as cur:
            self.store._exec(cur, "SELECT doc FROM rollouts WHERE model = ?", (model,))
            row = cur.fetchone()
        return Rollout.from_json(row[0] if row else None)

    def put(self, model: str, rollout: Rollout) -> Rollout:
        new = _next(rollout)
        with self.store._transaction(write=True) as cur:
            if rollout.revision == 0:
                self.store._exec(cur, "INSERT INTO rollouts (model, doc, revision) VALUES (?, ?, 1) "
                                      "ON CONFLICT (model) DO NOTHING", (model, new.to_json()))
            else:
                self.store._exec(cur, "UPDATE rollouts SET doc = ?, revision = ? WHERE model = ? "
                                      "AND revision = ?",
                                 (new.to_json(), new.revision, model, rollout.revision))
            if cur.rowcount != 1:
                raise StaleRollout(model)
        return new

    def delete(self, model: str) -> None:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "DELETE FROM rollouts WHERE model = ?", (model,))


class DynamoRollouts:
    def __init__(self, store: Any) -> None:
        self.table = store.table
        self.client = getattr(store, "client", None) or store._db

    def _key(self, model: str) -> dict[str, Any]:
        return {"pk": {"S": f"MODEL#{model}"}, "sk": {"S": "ROLLOUT"}}

    def get(self, model: str) -> Rollout:
        item = self.client.get_item(TableName=self.table, Key=self._key(model),
                                    ConsistentRead=True).get("Item")
        return Rollout.from_json(item["doc"]["S"] if item else None)

    def put(self, model: str, rollout: Rollout) -> Rollout:
        new = _next(rollout)
        condition: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(pk)"} if rollout.revision == 0 else
            {"ConditionExpression": "revision = :r",
             "ExpressionAttributeValues": {":r": {"N": str(rollout.revision)}}})
        try:
            self.client.put_item(TableName=self.table, **condition, Item={
                **self._key(model), "doc": {"S": new.to_json()}, "revision": {"N": str(new.revision)}})
        except self.client.exceptions.ConditionalCheckFailedException:
            raise StaleRollout(model) from None
        return new

    def delete(self, model: str) -> None:
        self.client.delete_item(TableName=self.table, Key=self._key(model))


def _next(rollout: Rollout) -> Rollout:
    from dataclasses import replace

    return replace(rollout, revision=rollout.revision + 1, history=rollout.history[-MAX_HISTORY:])


def rollout_store(experiments: Any) -> RolloutStore:
    from common.storage.sql_store import SqlExperimentStore

    if isinstance(experiments, SqlExperimentStore):
        return SqlRollouts(experiments)
    return DynamoRollouts(experiments)
