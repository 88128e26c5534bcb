"""ExperimentStore on SQL: one implementation, two dialects (SQLite embedded, PostgreSQL).

Experiments are kept as a JSON document beside the indexed columns; every racing change runs in
a transaction that locks the rows it reads (``BEGIN IMMEDIATE`` in SQLite, ``FOR UPDATE`` in
PostgreSQL), so a conditional write either applies or raises :class:`Conflict`. The writes that
depend on a model (a new experiment, part, removal or deployment, and deleting the model) lock
its row first, so a model deleted meanwhile is seen as gone, never written under.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from common.domain import (
    DatasetPart,
    Deployment,
    Experiment,
    ExperimentStatus,
    Feature,
    ModelRecord,
    PartSource,
    utcnow,
)
from common.errors import Conflict, NotFound, SchemaConflict
from common.storage.expectations import (
    UNFINISHED,
    ConditionalExperimentWrites,
    check_deletable,
    check_removable,
)

# The flat table dashboards and existing users query: one row per metric of an experiment.
FLAT_METRICS_COLUMNS = "id, model_id, problem, model_name, h_tune, metric, metric_value"
PART_COLUMNS = "model, version, key, rows, created_at, source, filename, removed_in, removed_at"
# Columns added to tables of earlier releases (created without them): name -> declaration.
ADDED_COLUMNS = {
    # Which side of a rollout answered (champion, canary, shadow) and what it predicted (at
    # most MAX_LOGGED_PREDICTIONS rows), for live metrics against feedback.
    "inference_log": {
        "role": "TEXT NOT NULL DEFAULT 'champion'",
        "predictions": "TEXT",
    },
    "dataset_parts": {
        "source": "TEXT NOT NULL DEFAULT 'unknown'",
        "filename": "TEXT",
        "removed_in": "BIGINT",
        "removed_at": "TEXT",
    },
}


class SqlExperimentStore(ConditionalExperimentWrites):
    """Dialect-neutral logic; subclasses provide connections, placeholders and DDL."""

    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
    lock_suffix = ""
    # A lock that keeps a row from being changed or deleted but lets other readers share it.
    share_lock_suffix = ""
    timestamp_type = "TEXT"
    json_type = "TEXT"

    def __init__(self) -> None:
        self._local = threading.local()

    # -- dialect hooks ---------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Any]:
        raise NotImplementedError
        yield

    def _sql(self, sql: str) -> str:
        return sql

    def _before_ddl(self, cur: Any) -> None:
        """Hook: serialise concurrent schema creation where the database needs it."""

    def _columns(self, cur: Any, table: str) -> set[str]:
        """The columns ``table`` has now."""
        raise NotImplementedError

    # -- plumbing --------------------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _exec(self, cur: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
        cur.execute(self._sql(sql), params)
        return cur

    def create_schema(self) -> None:
        statements = [
            """CREATE TABLE IF NOT EXISTS models (
                name TEXT PRIMARY KEY, task TEXT NOT NULL, target TEXT NOT NULL,
                input TEXT NOT NULL, image TEXT, features TEXT, deployed_experiment_id BIGINT,
                deploy_seq BIGINT NOT NULL DEFAULT 0, dataset_version BIGINT NOT NULL DEFAULT 0,
                created_at TEXT NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS experiments (
                id {self.serial}, model TEXT NOT NULL, status TEXT NOT NULL,
                created_at TEXT NOT NULL, doc TEXT NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS experiments_model ON experiments (model, id)",
            """CREATE TABLE IF NOT EXISTS deployments (
                model TEXT NOT NULL, seq BIGINT NOT NULL, experiment_id BIGINT NOT NULL,
                previous BIGINT, deployed_at TEXT NOT NULL, PRIMARY KEY (model, seq))""",
            """CREATE TABLE IF NOT EXISTS dataset_parts (
                model TEXT NOT NULL, version BIGINT NOT NULL, key TEXT NOT NULL,
                rows BIGINT NOT NULL, created_at TEXT NOT NULL,
                source TEXT NOT NULL DEFAULT 'unknown', filename TEXT, removed_in BIGINT,
                removed_at TEXT, PRIMARY KEY (model, version))""",
            """CREATE TABLE IF NOT EXISTS experiment_metrics (
                id BIGINT NOT NULL, model_id TEXT NOT NULL, problem TEXT NOT NULL,
                model_name TEXT NOT NULL, h_tune BOOLEAN NOT NULL, metric TEXT NOT NULL,
                metric_value DOUBLE PRECISION NOT NULL, PRIMARY KEY (id, metric))""",
            f"""CREATE TABLE IF NOT EXISTS inference_log (
                id {self.serial}, time {self.timestamp_type} NOT NULL, model TEXT NOT NULL,
                experiment_id BIGINT, route TEXT NOT NULL, rows INTEGER NOT NULL,
                latency_ms DOUBLE PRECISION NOT NULL, status INTEGER NOT NULL,
                prediction_summary {self.json_type}, request_id TEXT)""",
            "CREATE INDEX IF NOT EXISTS inference_log_model_time ON inference_log (model, time)",
            # Retention deletes by time alone: without it every prune scans the whole log.
            "CREATE INDEX IF NOT EXISTS inference_log_time ON inference_log (time)",
            # Feedback tells which of its request ids were served (POST /feedback).
            "CREATE INDEX IF NOT EXISTS inference_log_request ON inference_log (model, request_id)",
        ]
        with self._transaction(write=True) as cur:
            self._before_ddl(cur)
            for statement in statements:
                self._exec(cur, statement)
            for table, columns in ADDED_COLUMNS.items():
                present = self._columns(cur, table)
                for name, declaration in columns.items():
                    if name not in present:
                        self._exec(cur, f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    # -- models ----------------------------------------------------------------------------
    @staticmethod
    def _model(row: Any) -> ModelRecord:
        name, task, target, input_kind, image, features, deployed, created_at, version = row
        return ModelRecord(
            name=name,
            task=task,
            target=target,
            input=input_kind,
            image=None if image is None else json.loads(image),
            features=None if features is None else json.loads(features),
            deployed_experiment_id=deployed,
            created_at=created_at,
            dataset_version=version,
        )

    _MODEL_COLUMNS = ("name, task, target, input, image, features, deployed_experiment_id, "
                      "created_at, dataset_version")
    _NEW_MODEL_COLUMNS = _MODEL_COLUMNS.removesuffix(", dataset_version")

    def create_model(self, model: ModelRecord) -> None:
        features = None
        if model.features is not None:
            features = json.dumps([f.model_dump(mode="json") for f in model.features])
        with self._transaction(write=True) as cur:
            # One statement: two concurrent creates cannot both pass a read-then-insert check.
            self._exec(
                cur,
                f"INSERT INTO models ({self._NEW_MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (model.name, model.task.value, model.target, model.input,
                 None if model.image is None else model.image.model_dump_json(), features,
                 model.deployed_experiment_id, model.created_at.isoformat()),
            )
            if cur.rowcount != 1:
                raise Conflict(f"model {model.name!r} already exists")

    def get_model(self, name: str) -> ModelRecord:
        with self._transaction(write=False) as cur:
            self._exec(cur, f"SELECT {self._MODEL_COLUMNS} FROM models WHERE name = ?", (name,))
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"model {name!r} does not exist")
        return self._model(row)

    def list_models(self) -> list[ModelRecord]:
        with self._transaction(write=False) as cur:
            self._exec(cur, f"SELECT {self._MODEL_COLUMNS} FROM models ORDER BY name")
            return [self._model(r) for r in cur.fetchall()]

    def deployed_experiment(self, name: str) -> int | None:
        with self._transaction(write=False) as cur:
            self._exec(cur, "SELECT deployed_experiment_id FROM models WHERE name = ?", (name,))
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"model {name!r} does not exist")
        return None if row[0] is None else int(row[0])

    def deploy(self, name: str, experiment_id: int, expected_previous: int | None) -> Deployment:
        with self._transaction(write=True) as cur:
            self._exec(
                cur,
                f"SELECT deployed_experiment_id, deploy_seq FROM models WHERE name = ?{self.lock_suffix}",
                (name,),
            )
            row = cur.fetchone()
            if row is None:
                raise NotFound(f"model {name!r} does not exist")
            if row[0] != expected_previous:
                raise Conflict(f"model {name!r} is now deployed at experiment {row[0]}")
            exp = self._get_experiment(cur, experiment_id)
            if exp.model != name:
                raise NotFound(f"experiment {experiment_id} does not belong to model {name!r}")
            if exp.status is not ExperimentStatus.succeeded:
                raise Conflict(f"experiment {experiment_id} has status {exp.status.value}")
            deployment = Deployment(
                model=name, seq=int(row[1]) + 1, experiment_id=experiment_id, previous=row[0]
            )
            self._exec(
                cur,
                "UPDATE models SET deployed_experiment_id = ?, deploy_seq = ? WHERE name = ?",
                (experiment_id, deployment.seq, name),
            )
            self._exec(
                cur,
                "INSERT INTO deployments (model, seq, experiment_id, previous, deployed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, deployment.seq, experiment_id, deployment.previous,
                 deployment.deployed_at.isoformat()),
            )
        return deployment

    def list_deployments(self, name: str) -> list[Deployment]:
        with self._transaction(write=False) as cur:
            self._exec(
                cur,
                "SELECT model, seq, experiment_id, previous, deployed_at FROM deployments "
                "WHERE model = ? ORDER BY seq DESC",
                (name,),
            )
            rows = cur.fetchall()
        return [
            Deployment(model=r[0], seq=r[1], experiment_id=r[2], previous=r[3], deployed_at=r[4])
            for r in rows
        ]

    # -- experiments -----------------------------------------------------------------------
    def _get_experiment(self, cur: Any, experiment_id: int) -> Experiment:
        self._exec(cur, f"SELECT doc FROM experiments WHERE id = ?{self.lock_suffix}", (experiment_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        return Experiment.model_validate_json(row[0])

    def create_experiment(self, fields: dict[str, Any]) -> Experiment:
        draft = Experiment(id=0, **fields)
        with self._transaction(write=True) as cur:
            # The model row, shared-locked: delete_model either sees this experiment or comes
            # first, and then this one finds the model gone.
            self._exec(cur, f"SELECT name FROM models WHERE name = ?{self.share_lock_suffix}",
                       (draft.model,))
            if cur.fetchone() is None:
                raise NotFound(f"model {draft.model!r} does not exist")
            self._exec(
                cur,
                "INSERT INTO experiments (model, status, created_at, doc) VALUES (?, ?, ?, ?) "
                "RETURNING id",
                (draft.model, draft.status.value, draft.created_at.isoformat(), "{}"),
            )
            new_id = int(cur.fetchone()[0])
            exp = draft.model_copy(update={"id": new_id})
            self._exec(cur, "UPDATE experiments SET doc = ? WHERE id = ?", (exp.model_dump_json(), new_id))
        return exp

    def get_experiment(self, experiment_id: int) -> Experiment:
        with self._transaction(write=False) as cur:
            return self._get_experiment(cur, experiment_id)

    def _change_experiment(
        self, experiment_id: int, change: Callable[[Experiment], Experiment]
    ) -> Experiment:
        with self._transaction(write=True) as cur:
            current = self._get_experiment(cur, experiment_id)  # locked until the commit
            updated = change(current)
            self._exec(
                cur,
                "UPDATE experiments SET status = ?, doc = ? WHERE id = ?",
                (updated.status.value, updated.model_dump_json(), experiment_id),
            )
            if updated.metrics != current.metrics:
                self._write_flat_metrics(cur, updated)
        return updated

    def _write_flat_metrics(self, cur: Any, exp: Experiment) -> None:
        self._exec(cur, "DELETE FROM experiment_metrics WHERE id = ?", (exp.id,))
        self._exec(cur, "SELECT task FROM models WHERE name = ?", (exp.model,))
        row = cur.fetchone()
        problem = row[0] if row else ""
        for metric, value in exp.metrics.items():
            self._exec(
                cur,
                f"INSERT INTO experiment_metrics ({FLAT_METRICS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (exp.id, exp.model, problem, exp.model_class, exp.tune, metric, float(value)),
            )

    def list_experiments(
        self, model: str | None = None, status: ExperimentStatus | None = None
    ) -> list[Experiment]:
        clauses, params = [], []
        if model is not None:
            clauses.append("model = ?")
            params.append(model)
        if status is not None:
            clauses.append("status = ?")
            params.append(status.value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._transaction(write=False) as cur:
            self._exec(cur, f"SELECT doc FROM experiments{where} ORDER BY id DESC", tuple(params))
            return [Experiment.model_validate_json(r[0]) for r in cur.fetchall()]

    def delete_experiment(self, experiment_id: int) -> None:
        with self._transaction(write=True) as cur:
            # Lock the model row before the experiment row, in the order deploy() takes them,
            # so a delete racing a deploy waits instead of deadlocking.
            self._exec(cur, "SELECT model FROM experiments WHERE id = ?", (experiment_id,))
            found = cur.fetchone()
            if found is None:
                raise NotFound(f"experiment {experiment_id} does not exist")
            self._exec(
                cur,
                f"SELECT deployed_experiment_id FROM models WHERE name = ?{self.lock_suffix}",
                (found[0],),
            )
            row = cur.fetchone()
            exp = self._get_experiment(cur, experiment_id)
            if row is not None and row[0] == experiment_id:
                raise Conflict(
                    f"experiment {experiment_id} is deployed for model {exp.model!r}; "
                    "deploy another experiment first"
                )
            self._exec(cur, "DELETE FROM experiments WHERE id = ?", (experiment_id,))
            self._exec(cur, "DELETE FROM experiment_metrics WHERE id = ?", (experiment_id,))

    def delete_model(self, name: str) -> None:
        with self._transaction(write=True) as cur:
            # The model row first, as every write that depends on the model locks it: an
            # experiment, part or deployment being written now either commits before this
            # (and is seen and deleted, or refuses the delete) or finds the model gone.
            self._exec(cur, f"SELECT name FROM models WHERE name = ?{self.lock_suffix}", (name,))
            if cur.fetchone() is None:
                raise NotFound(f"model {name!r} does not exist")
            self._exec(cur, "SELECT doc FROM experiments WHERE model = ? AND status IN (?, ?)",
                       (name, *(s.value for s in UNFINISHED)))
            check_deletable(name, [Experiment.model_validate_json(r[0]) for r in cur.fetchall()])
            self._exec(cur, "DELETE FROM experiment_metrics WHERE id IN "
                            "(SELECT id FROM experiments WHERE model = ?)", (name,))
            for table in ("experiments", "deployments", "dataset_parts"):
                self._exec(cur, f"DELETE FROM {table} WHERE model = ?", (name,))
            self._exec(cur, "DELETE FROM models WHERE name = ?", (name,))

    # -- datasets --------------------------------------------------------------------------
    @staticmethod
    def _part(row: Any) -> DatasetPart:
        model, version, key, rows, created_at, source, filename, removed_in, removed_at = row
        return DatasetPart(model=model, version=version, key=key, rows=rows, created_at=created_at,
                           source=source, filename=filename, removed_in=removed_in,
                           removed_at=removed_at)

    def add_dataset_part(
        self, model: str, key: str, rows: int, features: list[Feature] | None = None,
        source: PartSource = "unknown", filename: str | None = None,
    ) -> DatasetPart:
        with self._transaction(write=True) as cur:
            self._exec(
                cur,
                f"SELECT dataset_version, features FROM models WHERE name = ?{self.lock_suffix}",
                (model,),
            )
            row = cur.fetchone()
            if row is None:
                raise NotFound(f"model {model!r} does not exist")
            if features is not None:
                if row[1] is None:
                    doc = json.dumps([f.model_dump(mode="json") for f in features])
                    self._exec(cur, "UPDATE models SET features = ? WHERE name = ?", (doc, model))
                else:
                    stored = [Feature.model_validate(f) for f in json.loads(row[1])]
                    if stored != features:
                        raise SchemaConflict(model, stored)
            part = DatasetPart(model=model, version=int(row[0]) + 1, key=key, rows=rows,
                               created_at=utcnow(), source=source, filename=filename)
            self._exec(cur, "UPDATE models SET dataset_version = ? WHERE name = ?", (part.version, model))
            self._exec(
                cur,
                "INSERT INTO dataset_parts (model, version, key, rows, created_at, source, filename) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (model, part.version, key, rows, part.created_at.isoformat(), source, filename),
            )
        return part

    def remove_dataset_part(self, model: str, version: int) -> DatasetPart:
        with self._transaction(write=True) as cur:
            self._exec(cur, f"SELECT dataset_version FROM models WHERE name = ?{self.lock_suffix}",
                       (model,))
            row = cur.fetchone()
            if row is None:
                raise NotFound(f"model {model!r} does not exist")
            self._exec(cur, f"SELECT {PART_COLUMNS} FROM dataset_parts WHERE model = ? AND version = ?",
                       (model, version))
            found = cur.fetchone()
            part = check_removable(model, version, None if found is None else self._part(found))
            new_version, at = int(row[0]) + 1, utcnow()
            self._exec(cur, "UPDATE models SET dataset_version = ? WHERE name = ?",
                       (new_version, model))
            self._exec(cur, "UPDATE dataset_parts SET removed_in = ?, removed_at = ? "
                            "WHERE model = ? AND version = ?",
                       (new_version, at.isoformat(), model, version))
        return part.model_copy(update={"removed_in": new_version, "removed_at": at})

    def dataset_parts(self, model: str, up_to_version: int | None = None) -> list[DatasetPart]:
        with self._transaction(write=False) as cur:
            version = up_to_version
            if version is None:
                self._exec(cur, "SELECT dataset_version FROM models WHERE name = ?", (model,))
                row = cur.fetchone()
                if row is None:
                    return []
                version = int(row[0])
            # Read after the version: a part added or removed since has a later version, so
            # what is read here is exactly that version's set even without one snapshot.
            self._exec(
                cur,
                f"SELECT {PART_COLUMNS} FROM dataset_parts WHERE model = ? AND version <= ? "
                "AND (removed_in IS NULL OR removed_in > ?) ORDER BY version",
                (model, version, version),
            )
            rows = cur.fetchall()
        return [self._part(r).as_of(version) for r in rows]

    def all_dataset_parts(self, model: str) -> list[DatasetPart]:
        with self._transaction(write=False) as cur:
            self._exec(cur, f"SELECT {PART_COLUMNS} FROM dataset_parts WHERE model = ? "
                            "ORDER BY version", (model,))
            rows = cur.fetchall()
        return [self._part(r) for r in rows]

    # -- inference log (monitoring sink) ------------------------------------------------------
    _LOG_COLUMNS = ("time, model, experiment_id, route, rows, latency_ms, status, "
                    "prediction_summary")

    def log_inference(self, events: list[Any]) -> None:
        rows = [(e.time.isoformat(), e.model, e.experiment_id, e.route, e.rows, e.latency_ms,
                 e.status, orjson.dumps(e.prediction_summary).decode(), e.request_id, e.role,
                 None if e.logged is None else orjson.dumps(e.logged).decode())
                for e in events]
        with self._transaction(write=True) as cur:
            cur.executemany(self._sql(f"INSERT INTO inference_log ({self._LOG_COLUMNS}, request_id, "
                                      "role, predictions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                            rows)

    def calls_since(self, model: str, since: Any, limit: int = 100_000) -> list[dict[str, Any]]:
        """The model's monitored calls since ``since`` (the newest ``limit``), oldest first:
        request id, experiment, role, status, latency and the predictions kept (live metrics,
        canary guards)."""
        with self._transaction(write=False) as cur:
            self._exec(cur, "SELECT request_id, experiment_id, role, status, latency_ms, predictions "
                            "FROM inference_log WHERE model = ? AND time >= ? ORDER BY id DESC "
                            "LIMIT ?", (model, since.isoformat(), limit))
            rows = cur.fetchall()[::-1]
        return [{"request_id": r[0], "experiment_id": r[1], "role": r[2], "status": int(r[3]),
                 "latency_ms": float(r[4]), "predictions": None if r[5] is None else json.loads(r[5])}
                for r in rows]

    def delete_inference(self, model: str) -> None:
        """Forget the model's monitored calls (the model was deleted)."""
        with self._transaction(write=True) as cur:
            self._exec(cur, "DELETE FROM inference_log WHERE model = ?", (model,))

    def logged_requests(self, model: str, request_ids: list[str]) -> set[str]:
        """Which of ``request_ids`` the model's inference log has."""
        found: set[str] = set()
        unique = sorted(set(request_ids))
        with self._transaction(write=False) as cur:
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                self._exec(cur, f"SELECT DISTINCT request_id FROM inference_log WHERE model = ? "
                                f"AND request_id IN ({marks})", (model, *chunk))
                found.update(r[0] for r in cur.fetchall())
        return found

    def prune_inference(self, older_than: Any, keep_rows: int) -> None:
        with self._transaction(write=True) as cur:
            self._exec(cur, "DELETE FROM inference_log WHERE time < ?", (older_than.isoformat(),))
            self._exec(
                cur,
                "DELETE FROM inference_log WHERE id <= (SELECT MAX(id) FROM inference_log) - ?",
                (keep_rows,),
            )

    def recent_inference(self, model: str | None, limit: int) -> list[dict[str, Any]]:
        where, params = ("WHERE model = ? ", (model, limit)) if model else ("", (limit,))
        with self._transaction(write=False) as cur:
            self._exec(
                cur,
                f"SELECT {self._LOG_COLUMNS}, role FROM inference_log {where}ORDER BY id DESC LIMIT ?",
                params,
            )
            rows = cur.fetchall()
        keys = [c.strip() for c in self._LOG_COLUMNS.split(",")] + ["role"]
        out = []
        for row in rows:
            doc = dict(zip(keys, row, strict=True))
            if isinstance(doc["prediction_summary"], str):
                doc["prediction_summary"] = json.loads(doc["prediction_summary"])
            if not isinstance(doc["time"], str):
                doc["time"] = doc["time"].isoformat()
            out.append(doc)
        return out
