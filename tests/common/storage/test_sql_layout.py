"""A SQL store of an earlier release (dataset parts without source, file name or removal) is
brought up to date when it is opened: its parts read as "unknown" and can be removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.storage.sql_store import SqlExperimentStore

OLD_PARTS = """CREATE TABLE dataset_parts (
    model TEXT NOT NULL, version BIGINT NOT NULL, key TEXT NOT NULL,
    rows BIGINT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (model, version))"""
OLD_MODEL = """CREATE TABLE models (
    name TEXT PRIMARY KEY, task TEXT NOT NULL, target TEXT NOT NULL,
    input TEXT NOT NULL, image TEXT, features TEXT, deployed_experiment_id BIGINT,
    deploy_seq BIGINT NOT NULL DEFAULT 0, dataset_version BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL)"""
ROWS = [
    "INSERT INTO models (name, task, target, input, dataset_version, created_at) "
    "VALUES ('old', 'regression', 'y', 'tabular', 2, '2025-01-01T00:00:00+00:00')",
    "INSERT INTO dataset_parts VALUES ('old', 1, 'old/parts/a.parquet', 10, '2025-01-01T00:00:00+00:00')",
    "INSERT INTO dataset_parts VALUES ('old', 2, 'old/parts/b.parquet', 5, '2025-01-02T00:00:00+00:00')",
]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_parts_of_an_earlier_release(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store: SqlExperimentStore
    if dialect == "sqlite":
        import sqlite3

        from common.storage.sqlite_store import SqliteExperimentStore

        path = tmp_path / "old.sqlite3"
        with sqlite3.connect(path) as conn:
            for statement in (OLD_MODEL, OLD_PARTS, *ROWS):
                conn.execute(statement)
        store = SqliteExperimentStore(path)
        SqliteExperimentStore(path)  # opening it again changes nothing
    else:
        import psycopg

        from common.storage.postgres_store import PostgresExperimentStore

        dsn = request.getfixturevalue("pg_dsn")
        with psycopg.connect(dsn, autocommit=True) as conn:
            for statement in (OLD_MODEL, OLD_PARTS, *ROWS):
                conn.execute(statement)
        store = PostgresExperimentStore(dsn)
        PostgresExperimentStore(dsn)
    parts = store.dataset_parts("old")
    assert [(p.version, p.rows, p.source, p.filename, p.removed_in) for p in parts] == [
        (1, 10, "unknown", None, None), (2, 5, "unknown", None, None)]
    assert store.get_model("old").dataset_version == 2
    assert store.remove_dataset_part("old", 1).removed_in == 3
    assert [p.version for p in store.dataset_parts("old")] == [2]
    assert store.add_dataset_part("old", "old/parts/c.parquet", 1, source="json").version == 4
