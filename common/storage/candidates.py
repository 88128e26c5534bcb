"""The grid candidates of tuned experiments (``common/tuning.py``): one record per candidate, on
the experiment store's database — a ``tuning_candidates`` table on SQL (SQLite, PostgreSQL), an
item ``TUNE#<experiment id>/CAND#<index>`` on DynamoDB (a partition of its own, so the scans
and queries of experiments never meet it).

One record per candidate, so two candidates finishing at once write two records and neither
write can be lost. Every write names the revision it read (a compare-and-set); what a write
expects of the record (status, attempt) is checked by the caller on the record it read, in one
place for both adapters (``common/tuning.py``).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field

from common.domain import LAZY, ExperimentStatus


class Candidate(BaseModel):
    """One grid candidate of a tuned experiment: its grid values and, once a worker scored it,
    its cross-validated score. ``status``, ``attempts`` and ``lease_until`` work as an
    experiment's do (``common/jobstate.py``)."""

    model_config = LAZY

    experiment_id: int
    index: int  # its place in the grid order, which breaks ties between equal scores
    params: dict[str, Any]
    status: ExperimentStatus = ExperimentStatus.queued
    attempts: int = 0
    lease_until: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    scoring: str | None = None
    mean: float | None = None
    std: float | None = None
    error: str | None = None
    revision: int = Field(default=0, exclude=True)  # the store's; bumped by every write

    def result(self) -> dict[str, Any]:
        """The score as the sequential grid search reports one candidate's."""
        return {"params": self.params, "scoring": self.scoring, "mean": self.mean, "std": self.std}


class StaleCandidate(Exception):
    """The candidate changed since it was read: read it again and redo the change."""


class CandidateStore(Protocol):
    def create(self, candidates: list[Candidate]) -> None:
        """Record the candidates that are not recorded yet (an existing one is left as it is:
        creating the same grid twice is harmless)."""

    def list(self, experiment_id: int) -> list[Candidate]:
        """The experiment's candidates in grid order, read consistently."""
        ...

    def put(self, candidate: Candidate) -> Candidate:
        """Write ``candidate`` if the stored one still has ``candidate.revision``; the written
        record (revision + 1), or StaleCandidate."""
        ...

    def delete(self, experiment_id: int) -> None: ...


def _doc(candidate: Candidate) -> str:
    return candidate.model_dump_json()


def _read(doc: str, revision: int) -> Candidate:
    return Candidate.model_validate_json(doc).model_copy(update={"revision": int(revision)})


class SqlCandidates:
    def __init__(self, store: Any) -> None:
        self.store = store
        if not getattr(store, "_candidates_table", False):
            with store._transaction(write=True) as cur:
                store._before_ddl(cur)
                store._exec(cur, "CREATE TABLE IF NOT EXISTS tuning_candidates (experiment_id BIGINT "
                                 "NOT NULL, idx INTEGER NOT NULL, doc TEXT NOT NULL, revision BIGINT "
                                 "NOT NULL, PRIMARY KEY (experiment_id, idx))")
            store._candidates_table = True

    def create(self, candidates: list[Candidate]) -> None:
        with self.store._transaction(write=True) as cur:
            for c in candidates:
                self.store._exec(cur, "INSERT INTO tuning_candidates (experiment_id, idx, doc, revision) "
                                      "VALUES (?, ?, ?, 1) ON CONFLICT (experiment_id, idx) DO NOTHING",
                                 (c.experiment_id, c.index, _doc(c)))

    def list(self, experiment_id: int) -> list[Candidate]:
        with self.store._transaction(write=False) as cur:
            self.store._exec(cur, "SELECT doc, revision FROM tuning_candidates WHERE experiment_id = ? "
                                  "ORDER BY idx", (experiment_id,))
            return [_read(doc, rev) for doc, rev in cur.fetchall()]

    def put(self, candidate: Candidate) -> Candidate:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "UPDATE tuning_candidates SET doc = ?, revision = ? WHERE "
                                  "experiment_id = ? AND idx = ? AND revision = ?",
                             (_doc(candidate), candidate.revision + 1, candidate.experiment_id,
                              candidate.index, candidate.revision))
            if cur.rowcount != 1:
                raise StaleCandidate(f"candidate {candidate.index} of experiment "
                                     f"{candidate.experiment_id}")
        return candidate.model_copy(update={"revision": candidate.revision + 1})

    def delete(self, experiment_id: int) -> None:
        with self.store._transaction(write=True) as cur:
            self.store._exec(cur, "DELETE FROM tuning_candidates WHERE experiment_id = ?",
                             (experiment_id,))


class DynamoCandidates:
    def __init__(self, store: Any) -> None:
        self.table = store.table
        self.client = getattr(store, "client", None) or store._db

    @staticmethod
    def _key(experiment_id: int, index: int) -> dict[str, Any]:
        return {"pk": {"S": f"TUNE#{int(experiment_id)}"}, "sk": {"S": f"CAND#{int(index):05d}"}}

    def _item(self, candidate: Candidate, revision: int) -> dict[str, Any]:
        return {**self._key(candidate.experiment_id, candidate.index),
                "doc": {"S": _doc(candidate)}, "revision": {"N": str(revision)}}

    def create(self, candidates: list[Candidate]) -> None:
        for c in candidates:
            with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
                self.client.put_item(TableName=self.table, Item=self._item(c, 1),  # if absent
                                     ConditionExpression="attribute_not_exists(pk)")

    def list(self, experiment_id: int) -> list[Candidate]:
        pages = self.client.get_paginator("query").paginate(
            TableName=self.table, KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"TUNE#{int(experiment_id)}"}},
            ConsistentRead=True)
        items = [i for page in pages for i in page.get("Items", [])]
        return sorted((_read(i["doc"]["S"], int(i["revision"]["N"])) for i in items),
                      key=lambda c: c.index)

    def put(self, candidate: Candidate) -> Candidate:
        try:
            self.client.put_item(
                TableName=self.table, Item=self._item(candidate, candidate.revision + 1),
                ConditionExpression="revision = :r",
                ExpressionAttributeValues={":r": {"N": str(candidate.revision)}})
        except self.client.exceptions.ConditionalCheckFailedException:
            raise StaleCandidate(f"candidate {candidate.index} of experiment "
                                 f"{candidate.experiment_id}") from None
        return candidate.model_copy(update={"revision": candidate.revision + 1})

    def delete(self, experiment_id: int) -> None:
        for c in self.list(experiment_id):
            self.client.delete_item(TableName=self.table, Key=self._key(experiment_id, c.index))


def candidate_store(experiments: Any) -> CandidateStore:
    from common.storage.sql_store import SqlExperimentStore

    if isinstance(experiments, SqlExperimentStore):
        return SqlCandidates(experiments)
    return DynamoCandidates(experiments)
