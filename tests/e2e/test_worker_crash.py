"""A worker killed in the middle of training leaves the experiment retried or failed, never stuck;
a worker that lives keeps its job, however long it trains (its heartbeat renews the lease)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from common import context
from common.domain import Experiment, ExperimentStatus, utcnow
from common.jobstate import MAX_ATTEMPTS
from functions.train_worker import handler as worker
from infra.local.worker import sqs_event
from tests.lifecycle_data import churn_rows

ROOT = Path(__file__).resolve().parents[2]


def start_worker(data_dir: Path, hyperparameters: dict, stall: float = 0.0) -> tuple[subprocess.Popen, int]:
    """A worker process training a queued churn experiment, returned once it runs; with
    ``stall``, its training first takes that many seconds (a long fit, deterministically)."""
    life = context.lifecycle()
    life.create_model({"name": "churn", "task": "classification", "target": "churned"})
    import pandas as pd

    life.add_frame("churn", pd.DataFrame(churn_rows(3000)))
    queue, life.jobs = life.jobs, None  # queue only; the worker below runs it
    exp = life.retrain("churn", {"model_class": "catboost", "hyperparameters": hyperparameters})
    life.jobs = queue
    script = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
              "import common.training.trainer as trainer\n"
              "fit = trainer.train\n"
              f"trainer.train = lambda *a, **k: (time.sleep({stall}), fit(*a, **k))[1]\n"
              "from common import context\n"
              f"context.lifecycle().run_experiment({exp.id})\n")
    env = {**os.environ, "MLFN_DATA_DIR": str(data_dir), "MLFN_DEMO_MODELS": "false"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 60
    while life.store.get_experiment(exp.id).status is not ExperimentStatus.running:
        assert proc.poll() is None, "the worker ended before it started training"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc, exp.id


def start_slow_training(data_dir: Path) -> tuple[subprocess.Popen, int]:
    """A worker SIGKILLed inside fit()."""
    proc, exp_id = start_worker(data_dir, {"iterations": 5000, "depth": 8})
    time.sleep(0.5)  # well inside fit()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return proc, exp_id


def wait_for(experiment_id: int, done: Callable[[Experiment], bool], timeout: float) -> Experiment:
    deadline = time.monotonic() + timeout
    while True:
        exp = context.lifecycle().store.get_experiment(experiment_id)
        if done(exp):
            return exp
        assert time.monotonic() < deadline, f"still {exp.status.value} (attempt {exp.attempts})"
        time.sleep(0.05)


@pytest.fixture
def short_lease(embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "1")
    monkeypatch.setenv("MLFN_JOB_HEARTBEAT_SECONDS", "0.25")
    context.reset()
    return embedded


@pytest.fixture
def heartbeats(embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """A 2 s lease renewed every 0.5 s, and embedded workers that poll every 0.1 s."""
    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "2")
    monkeypatch.setenv("MLFN_JOB_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("MLFN_JOB_POLL_SECONDS", "0.1")
    context.reset()
    return embedded


LEASE = 2.0


def test_a_killed_training_is_retried_about_one_lease_after_its_last_heartbeat(
        heartbeats: Callable[[], None], tmp_path: Path) -> None:
    """Issue 13: a worker SIGKILLed mid-retrain left its experiment ``running`` (and
    undeletable) until the lease counted from ``started_at`` ran out. The lease now runs from the
    last heartbeat: while the worker lives, for several lease lengths, nothing may take the job;
    once it is killed, the restarted service retries it within about one lease."""
    proc, exp_id = start_worker(tmp_path / "data", {"iterations": 30}, stall=600)
    life = context.lifecycle()
    first = life.store.get_experiment(exp_id)
    time.sleep(3 * LEASE)  # the worker lives: its heartbeat keeps the lease ahead
    assert proc.poll() is None
    alive = life.store.get_experiment(exp_id)
    assert alive.status is ExperimentStatus.running and alive.attempts == 1
    assert alive.lease_until is not None and first.lease_until is not None
    assert alive.lease_until > first.lease_until and alive.lease_until > utcnow()
    assert life.claimable() == []

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed = time.monotonic()
    context.reset()  # the restart
    context.lifecycle().recover()  # nothing claimable yet; its poll loop retries the job
    retried = wait_for(exp_id, lambda e: e.attempts == 2, timeout=10 * LEASE)
    assert time.monotonic() - killed < 2 * LEASE + 1.0, "retried long after the lease lapsed"
    assert retried.status in (ExperimentStatus.running, ExperimentStatus.succeeded)
    heartbeats()
    done = context.lifecycle().store.get_experiment(exp_id)
    assert done.status is ExperimentStatus.succeeded and done.attempts == 2, done.error


def test_a_training_longer_than_the_lease_is_never_taken_over_while_its_worker_lives(
        heartbeats: Callable[[], None], tmp_path: Path) -> None:
    """A worker trains for four lease lengths while this process's embedded worker polls the
    same store every 0.1 s: the job stays the first worker's, which records its outcome."""
    started = time.monotonic()
    proc, exp_id = start_worker(tmp_path / "data", {"iterations": 30}, stall=4 * LEASE)
    assert context.lifecycle().recover() == []  # a second worker, polling meanwhile
    assert proc.wait(timeout=120) == 0
    assert time.monotonic() - started > 4 * LEASE
    heartbeats()
    done = context.lifecycle().store.get_experiment(exp_id)
    assert done.status is ExperimentStatus.succeeded, done.error
    assert done.attempts == 1  # never taken over


def test_crashed_job_is_retried_on_restart(short_lease: Callable[[], None], tmp_path: Path) -> None:
    proc, exp_id = start_slow_training(tmp_path / "data")
    assert proc.returncode == -signal.SIGKILL
    stuck = context.lifecycle().store.get_experiment(exp_id)
    assert stuck.status is ExperimentStatus.running and stuck.attempts == 1

    # Make the retry cheap, then restart: recovery hands the expired lease back to a worker.
    context.lifecycle().store.update_experiment(exp_id, {"hyperparameters": {"iterations": 30}})
    time.sleep(1.1)
    context.reset()
    assert context.lifecycle().recover() == [exp_id]
    short_lease()
    done = context.lifecycle().store.get_experiment(exp_id)
    assert done.status is ExperimentStatus.succeeded, done.error
    assert done.attempts == 2


def test_restart_inside_the_lease_retries_when_the_lease_runs_out(
        short_lease: Callable[[], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service restarts right after its worker died: the lease has not run out, so nothing
    is re-queued at start-up, but the job must not stay ``running`` for ever."""
    _, exp_id = start_slow_training(tmp_path / "data")
    context.lifecycle().store.update_experiment(
        exp_id, {"hyperparameters": {"iterations": 30}, "lease_until": utcnow() + timedelta(seconds=2)})
    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "2")
    context.reset()  # the new process, inside the lease
    assert context.lifecycle().recover() == []
    deadline = time.monotonic() + 60
    store = context.lifecycle().store
    while store.get_experiment(exp_id).status is ExperimentStatus.running:
        assert time.monotonic() < deadline, "still running long after the lease ran out"
        time.sleep(0.2)
    short_lease()
    done = store.get_experiment(exp_id)
    assert done.status is ExperimentStatus.succeeded, done.error
    assert done.attempts == 2


def test_redelivered_message_retries_then_gives_up(short_lease: Callable[[], None], tmp_path: Path) -> None:
    _, exp_id = start_slow_training(tmp_path / "data")
    store = context.lifecycle().store
    # While the lease is fresh, a redelivered message is handed back to SQS, not run twice.
    store.update_experiment(exp_id, {"lease_until": utcnow() + timedelta(seconds=1)})
    message = {"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": f'{{"experiment_id": {exp_id}}}'}
    result = worker.handler(sqs_event([message], "arn:aws:sqs:us-east-1:1:retrain"), None)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert store.get_experiment(exp_id).status is ExperimentStatus.running

    # The worker died MAX_ATTEMPTS times: the next delivery after the lease marks it failed.
    store.update_experiment(exp_id, {"attempts": MAX_ATTEMPTS})
    time.sleep(1.1)
    result = worker.handler(sqs_event([message], "arn:aws:sqs:us-east-1:1:retrain"), None)
    assert result == {"batchItemFailures": []}
    failed = store.get_experiment(exp_id)
    assert failed.status is ExperimentStatus.failed
    assert "stopped" in (failed.error or "") and failed.finished_at is not None
