"""The job state machine on its own: leases, heartbeats, fencing (SQLite; the stores' share of it
is in tests/common/storage)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from common.domain import Experiment, ExperimentStatus, ModelRecord, Task, utcnow
from common.errors import Conflict
from common.jobstate import MAX_ATTEMPTS, UNRENEWED_LEASE_SECONDS, Heartbeat, JobState
from common.settings import Settings
from common.storage.sqlite_store import SqliteExperimentStore


@pytest.fixture
def store(tmp_path: Path) -> SqliteExperimentStore:
    store = SqliteExperimentStore(tmp_path / "e.sqlite3")
    store.create_model(ModelRecord(name="m", task=Task.classification, target="y"))
    return store


@pytest.fixture
def jobs(store: SqliteExperimentStore) -> JobState:
    return JobState(store, Settings(job_lease_seconds=1.0, job_heartbeat_seconds=0.2))


def queued(store: SqliteExperimentStore) -> int:
    return store.create_experiment({"model": "m", "model_class": "svm"}).id


def test_defaults_and_a_heartbeat_that_cannot_keep_up_is_refused() -> None:
    settings = Settings()
    assert (settings.job_lease_seconds, settings.job_heartbeat_seconds) == (60.0, 20.0)
    with pytest.raises(ValueError, match="must be shorter than"):
        Settings(job_lease_seconds=10, job_heartbeat_seconds=10)


def test_a_claim_leases_the_job_from_now(store: SqliteExperimentStore, jobs: JobState) -> None:
    exp_id = queued(store)
    before = utcnow()
    claimed = jobs.claim(exp_id)
    assert claimed is not None and claimed.status is ExperimentStatus.running
    assert claimed.attempts == 1 and claimed.lease_until is not None
    assert before + timedelta(seconds=1) <= claimed.lease_until <= utcnow() + timedelta(seconds=1)
    with pytest.raises(Conflict, match="running elsewhere"):
        jobs.claim(exp_id)
    assert jobs.claimable() == []


def test_the_heartbeat_keeps_a_long_job_and_stops_when_it_ends(
        store: SqliteExperimentStore, jobs: JobState) -> None:
    exp_id = queued(store)
    seen: list[list[int]] = []

    def work(exp: Experiment) -> Experiment:
        for _ in range(12):  # 2.4 s: more than two leases
            seen.append(jobs.claimable())
            time.sleep(0.2)
        return jobs.succeed(exp, {})

    done = jobs.run(exp_id, work)
    assert done.status is ExperimentStatus.succeeded and done.attempts == 1
    assert done.lease_until is None and all(ids == [] for ids in seen)
    time.sleep(0.5)  # a beat after the outcome is refused: nothing is leased again
    assert store.get_experiment(exp_id).lease_until is None


def test_a_lapsed_job_is_taken_over_and_its_old_attempt_fenced(
        store: SqliteExperimentStore, jobs: JobState) -> None:
    exp_id = queued(store)
    first = jobs.claim(exp_id)
    assert first is not None
    time.sleep(1.1)  # no heartbeat: the worker died
    assert jobs.claimable() == [exp_id]
    second = jobs.claim(exp_id)
    assert second is not None and second.attempts == 2
    assert not jobs.holds(first) and jobs.holds(second)
    with pytest.raises(Conflict, match="later attempt"):
        store.renew_lease(exp_id, first.attempts, utcnow() + timedelta(seconds=60))
    with pytest.raises(Conflict, match="later attempt"):
        jobs.succeed(first, {})
    assert jobs.fail(first, "too late").attempts == 2  # the later attempt's record stands
    assert store.get_experiment(exp_id).status is ExperimentStatus.running
    time.sleep(1.1)
    assert second.attempts >= MAX_ATTEMPTS and jobs.claim(exp_id) is None
    failed = store.get_experiment(exp_id)
    assert failed.status is ExperimentStatus.failed and "stopped 2 times" in (failed.error or "")


def test_a_taken_over_attempt_stops_renewing(store: SqliteExperimentStore, jobs: JobState) -> None:
    exp_id = queued(store)
    first = jobs.claim(exp_id)
    assert first is not None
    with jobs.heartbeat(first):
        store.update_experiment(exp_id, {"attempts": 2, "lease_until": utcnow() + timedelta(seconds=60)})
        taken = store.get_experiment(exp_id).lease_until
        time.sleep(0.6)
    assert store.get_experiment(exp_id).lease_until == taken


def test_a_claim_that_never_heartbeats_keeps_the_old_lease(
        store: SqliteExperimentStore, jobs: JobState) -> None:
    """Running without ``lease_until`` (the DVC pipeline's registration, a worker from before
    heartbeats): leased for ``UNRENEWED_LEASE_SECONDS`` from ``started_at``."""
    exp_id = queued(store)
    store.update_experiment(exp_id, {"status": ExperimentStatus.running, "attempts": 1,
                                     "started_at": utcnow() - timedelta(seconds=60)})
    assert jobs.claimable() == []
    with pytest.raises(Conflict):
        jobs.claim(exp_id)
    store.update_experiment(exp_id, {"started_at": utcnow() - timedelta(seconds=UNRENEWED_LEASE_SECONDS)})
    assert jobs.claimable() == [exp_id]


def test_a_failing_beat_is_retried(store: SqliteExperimentStore) -> None:
    calls: list[float] = []

    def beat() -> bool:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise OSError("the store is unreachable")
        return len(calls) < 5

    with Heartbeat(0.05, beat, "test"):
        time.sleep(0.6)
    assert len(calls) == 5  # two outages retried, then stopped by its own answer


@pytest.fixture
def embedded_short_lease(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         fresh_context: None) -> Iterator[Any]:
    from common import context

    for key, value in {"MLFN_DATA_DIR": str(tmp_path / "data"), "MLFN_DEMO_MODELS": "false",
                       "MLFN_JOB_LEASE_SECONDS": "1", "MLFN_JOB_HEARTBEAT_SECONDS": "0.2"}.items():
        monkeypatch.setenv(key, value)
    context.reset()
    yield context
    context.reset()


def test_train_now_heartbeats_like_a_queued_job(embedded_short_lease: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo path records its experiment already claimed: a 2.5 s training (two and a half
    leases) is never claimable by a worker meanwhile."""
    import pandas as pd

    import common.training.trainer as trainer
    from tests.lifecycle_data import churn_rows

    life = embedded_short_lease.lifecycle()
    life.jobs = None
    life.create_model({"name": "now", "task": "classification", "target": "churned"})
    life.add_frame("now", pd.DataFrame(churn_rows(60)))
    fit: Callable[..., Any] = trainer.train
    monkeypatch.setattr(trainer, "train", lambda *a, **k: (time.sleep(2.5), fit(*a, **k))[1])
    seen: list[list[int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(life.claimable())
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        done = life.train_now("now", {"model_class": "logistic_regression"})
    finally:
        stop.set()
        watcher.join()
    assert done.status is ExperimentStatus.succeeded and done.attempts == 1, done.error
    assert len(seen) > 20 and all(ids == [] for ids in seen)
