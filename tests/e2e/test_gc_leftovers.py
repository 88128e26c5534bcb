"""``mlfn gc`` on what uploads, ingestions and batch jobs leave: scratch files under
``<data dir>/tmp`` of a killed process (removed once unchanged for ``scratch_age``, fresh ones
kept) and records past their expiry on SQLite, PostgreSQL and DynamoDB (moto server), with the
batch outputs of the jobs whose record went."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from common import batch_jobs, context, ingestion
from common.domain import utcnow
from common.errors import NotFound
from common.gc import collect, scratch_age
from common.storage.records import RecordStore, record_store
from common.uploads import KIND as UPLOAD

HOUR = 3600.0


def aged(path: Path, seconds: float) -> Path:
    """Set ``path``'s modification time ``seconds`` in the past."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def written(path: Path, seconds: float) -> Path:
    """A file last written ``seconds`` ago."""
    path.write_bytes(b"a,b\n1,2\n")
    return aged(path, seconds)


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_context: None) -> Iterator[Path]:
    data = tmp_path / "data"
    for key, value in {"MLFN_DATA_DIR": str(data), "MLFN_DEMO_MODELS": "false",
                       "MLFN_EMF": "false"}.items():
        monkeypatch.setenv(key, value)
    context.reset()
    yield data
    context.reset()


def test_scratch_of_a_killed_process_goes_once_older_than_the_upload_expiry(
        local: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = context.settings()
    assert scratch_age(settings) == timedelta(days=1)  # MLFN_UPLOAD_EXPIRY_SECONDS' default
    assert scratch_age(settings, timedelta(days=3)) == timedelta(days=3)  # never below min_age
    tmp = local / "tmp"
    tmp.mkdir(parents=True)
    old_body = written(tmp / "body-abc123", 25 * HOUR)
    fresh_body = written(tmp / "body-def456", 2 * HOUR)  # past min_age, not the scratch age
    dead = tmp / "tmpdead0001"
    dead.mkdir()
    written(dead / "part.parquet", 30 * HOUR)
    aged(dead, 30 * HOUR)
    live = tmp / "tmplive0001"
    live.mkdir()
    written(live / "result.csv", 0)  # still being written to
    aged(live, 30 * HOUR)  # the directory itself is old
    not_ours = written(tmp / "notes.txt", 90 * HOUR)

    preview = collect(context.backends(), dry_run=True)
    assert sorted(preview.scratch) == ["tmp/body-abc123", "tmp/tmpdead0001"]
    assert old_body.exists() and dead.exists()
    found = collect(context.backends())
    assert sorted(found.scratch) == ["tmp/body-abc123", "tmp/tmpdead0001"]
    assert not old_body.exists() and not dead.exists()
    assert fresh_body.exists() and (live / "result.csv").exists() and not_ours.exists()

    # The age follows the upload expiry: with 90 minutes, the two-hour-old body goes too.
    monkeypatch.setenv("MLFN_UPLOAD_EXPIRY_SECONDS", str(1.5 * HOUR))
    context.reset()
    assert collect(context.backends()).scratch == ["tmp/body-def456"]
    assert not fresh_body.exists() and (live / "result.csv").exists()


@pytest.fixture
def records(any_store: str) -> RecordStore:
    """The record store on each experiment store (``any_store``: SQLite, PostgreSQL, DynamoDB)."""
    return record_store(context.backends().experiments)


KINDS = (ingestion.KIND, batch_jobs.KIND, batch_jobs.CHUNK)


def test_records_past_their_expiry_are_deleted_and_no_others(records: RecordStore) -> None:
    now = time.time()
    past, future = int(now - 10), int(now + HOUR)
    records.create(ingestion.KIND, "i-old", {"status": "succeeded"}, expires=past)
    records.create(ingestion.KIND, "i-new", {"status": "succeeded"}, expires=future)
    records.create(ingestion.KIND, "i-forever", {"status": "succeeded"})
    records.create(batch_jobs.CHUNK, "c-old", {"status": "succeeded"}, expires=past)
    records.create(UPLOAD, "u-old", {"status": "received"}, expires=past)  # not a kind asked for
    # An update's record_expires moves the expiry: later here, so it is kept.
    moved = records.create(batch_jobs.KIND, "j-moved", {"status": "queued"}, expires=past)
    records.update(moved, {"status": "running", "record_expires": future})
    # ... and one that keeps it past leaves it expired.
    kept = records.create(batch_jobs.KIND, "j-old", {"status": "queued"}, expires=past)
    records.update(kept, {"status": "running", "record_expires": past})

    assert records.delete_expired(KINDS, now, dry_run=True) == [
        (batch_jobs.CHUNK, "c-old"), (batch_jobs.KIND, "j-old"), (ingestion.KIND, "i-old")]
    records.get(ingestion.KIND, "i-old")
    assert records.delete_expired(KINDS, now) == [
        (batch_jobs.CHUNK, "c-old"), (batch_jobs.KIND, "j-old"), (ingestion.KIND, "i-old")]
    for kind, record_id in ((ingestion.KIND, "i-old"), (batch_jobs.CHUNK, "c-old"),
                            (batch_jobs.KIND, "j-old")):
        with pytest.raises(NotFound):
            records.get(kind, record_id)
    for kind, record_id in ((ingestion.KIND, "i-new"), (ingestion.KIND, "i-forever"),
                            (UPLOAD, "u-old"), (batch_jobs.KIND, "j-moved")):
        records.get(kind, record_id)
    assert records.delete_expired(KINDS, now) == []
    assert records.delete_expired(KINDS, now + 2 * HOUR) == [
        (batch_jobs.KIND, "j-moved"), (ingestion.KIND, "i-new")]


@pytest.mark.parametrize("any_store", ["sqlite", "postgres"], indirect=True)
def test_gc_deletes_expired_job_records_with_their_outputs(records: RecordStore) -> None:
    datasets = context.backends().datasets
    soon = int(time.time() + HOUR)
    gone_job, live_job = "a" * 32, "b" * 32
    for job_id, expires in ((gone_job, soon), (live_job, soon + 30 * 86_400)):
        records.create(batch_jobs.KIND, job_id, {"status": "succeeded", "record_expires": expires},
                       expires=expires)
        records.create(batch_jobs.CHUNK, batch_jobs.chunk_id(job_id, 0),
                       {"status": "succeeded", "record_expires": expires}, expires=expires)
        datasets.put(batch_jobs.result_key(job_id), b"row,prediction\n0,a\n")
    orphan = batch_jobs.chunk_key("c" * 32, 3)  # a job whose record is gone already
    datasets.put(orphan, b"0,a\n")
    records.create(ingestion.KIND, "d" * 32, {"status": "failed"}, expires=soon)

    assert collect(context.backends()).total == 0  # nothing has expired, every file is young
    later = utcnow() + timedelta(hours=2)
    preview = collect(context.backends(), dry_run=True, now=later)
    assert preview.records and datasets.exists(batch_jobs.result_key(gone_job))
    found = collect(context.backends(), now=later)
    assert sorted(found.records) == sorted([
        f"{batch_jobs.KIND}/{gone_job}", f"{batch_jobs.CHUNK}/{batch_jobs.chunk_id(gone_job, 0)}",
        f"{ingestion.KIND}/{'d' * 32}"]) == sorted(preview.records)
    assert sorted(found.batch_outputs) == sorted([batch_jobs.result_key(gone_job), orphan])
    assert not datasets.exists(batch_jobs.result_key(gone_job)) and not datasets.exists(orphan)
    assert datasets.exists(batch_jobs.result_key(live_job))
    records.get(batch_jobs.KIND, live_job)
    records.get(batch_jobs.CHUNK, batch_jobs.chunk_id(live_job, 0))
