"""A worker killed in the middle of training leaves the experiment retried or failed, never stuck."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common import context
from common.domain import ExperimentStatus, utcnow
from common.lifecycle import MAX_ATTEMPTS
from functions.train_worker import handler as worker
from infra.local.worker import sqs_event
from tests.lifecycle_data import churn_rows

ROOT = Path(__file__).resolve().parents[2]


def start_slow_training(data_dir: Path) -> tuple[subprocess.Popen, int]:
    life = context.lifecycle()
    life.create_model({"name": "churn", "task": "classification", "target": "churned"})
    import pandas as pd

    life.add_frame("churn", pd.DataFrame(churn_rows(3000)))
    life.jobs = None  # queue only; the crashing worker below runs it
    exp = life.retrain("churn", {"model_class": "catboost",
                                 "hyperparameters": {"iterations": 5000, "depth": 8}})
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from common import context\n"
              f"context.lifecycle().run_experiment({exp.id})\n")
    env = {**os.environ, "MLFN_DATA_DIR": str(data_dir), "MLFN_DEMO_MODELS": "false"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 60
    while life.store.get_experiment(exp.id).status is not ExperimentStatus.running:
        assert proc.poll() is None, "the worker ended before it started training"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # well inside fit()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return proc, exp.id


@pytest.fixture
def short_lease(embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "1")
    context.reset()
    return embedded


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
        exp_id, {"hyperparameters": {"iterations": 30}, "started_at": utcnow()})
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
    store.update_experiment(exp_id, {"started_at": utcnow()})
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
