"""common/tasks.py: a running task's progress is written often enough to follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import tasks
from common.backends import Backends
from common.settings import Settings
from common.storage.records import record_store


def test_progress_is_written_every_few_seconds_the_lease_only_when_due(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = record_store(Backends.from_settings(Settings(data_dir=tmp_path)).experiments)
    record = records.create("ingestion", "a" * 32, {"status": "running", "rows_read": 0})
    lease = tasks.Lease(records, record, lease_seconds=60, renew_seconds=20)
    clock = [1000.0]
    monkeypatch.setattr(tasks.time, "monotonic", lambda: clock[0])
    lease.write()
    clock[0] += tasks.PROGRESS_SECONDS / 2
    lease.renew(rows_read=10)  # too soon
    assert records.get("ingestion", "a" * 32).doc["rows_read"] == 0
    clock[0] += tasks.PROGRESS_SECONDS
    lease.renew(rows_read=20, phase="checking rows")
    assert records.get("ingestion", "a" * 32).doc["rows_read"] == 20
    before = records.get("ingestion", "a" * 32).revision
    clock[0] += tasks.PROGRESS_SECONDS * 2
    lease.renew()  # no progress: the lease waits for its heartbeat (20 s)
    assert records.get("ingestion", "a" * 32).revision == before
    clock[0] += 20
    lease.renew()
    assert records.get("ingestion", "a" * 32).revision != before
