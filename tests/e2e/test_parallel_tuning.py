"""Parallel tuning (issue 14): a tuned experiment's grid candidates are jobs of their own, then one
job refits the best. It picks what the sequential grid search picks, on the embedded queue and on
SQS with DynamoDB and S3 (moto server); a killed candidate is retried, the refit runs once, a
candidate that raises fails the experiment naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from common import context
from common.domain import Experiment, ExperimentStatus
from common.jobs import InProcessQueue
from common.training import trainer
from common.training.tensorboard import write_events
from functions.train_worker import handler as worker
from infra.local.worker import sqs_event
from tests.lifecycle_data import churn_rows

ROOT = Path(__file__).resolve().parents[2]
ARN = "arn:aws:sqs:us-east-1:123456789012:retrain"
# logistic_regression's grid is C in [0.1, 1.0, 10.0]: three candidates, each a fast fit.
TUNED = {"model_class": "logistic_regression", "tune": True}


def churn_model(rows: int = 90) -> None:
    life = context.lifecycle()
    life.create_model({"name": "churn", "task": "classification", "target": "churned"})
    life.add_frame("churn", pd.DataFrame(churn_rows(rows)))


def sequential(exp: Experiment, requested: dict) -> tuple[dict, list[dict]]:
    """What the one-job grid search picks on the experiment's data with the ``requested``
    hyperparameters: its best and its scores."""
    _, frame, spec = context.lifecycle()._training_data(exp.model_copy(update={"hyperparameters": requested}))
    split = trainer.split_frame(frame, spec)
    return trainer.grid_search(spec, split.X_train, split.y_train, spec.hyperparameters)


def check_same_as_sequential(exp: Experiment, requested: dict | None = None) -> dict:
    assert exp.status is ExperimentStatus.succeeded, exp.error
    assert exp.attempts == 1  # the refit ran once
    doc = context.lifecycle().metrics(exp.id)
    best, scores = sequential(exp, requested or {})
    assert exp.hyperparameters == best
    assert [c["params"] for c in doc["candidates"]] == [s["params"] for s in scores]
    assert [c["mean"] for c in doc["candidates"]] == pytest.approx([s["mean"] for s in scores], abs=1e-12)
    assert {c["status"] for c in doc["candidates"]} == {"succeeded"}
    # TensorBoard has every candidate's score
    assert any(a["name"].startswith("tensorboard/") for a in doc["artifacts"])
    return doc


def test_parallel_tuning_on_the_embedded_queue_picks_the_sequential_best(
        embedded: Callable[[], None]) -> None:
    churn_model()
    life = context.lifecycle()
    exp = life.retrain("churn", {**TUNED, "hyperparameters": {"max_iter": 300}})
    assert exp.grid_size == 3 and exp.status is ExperimentStatus.queued
    embedded()
    done = life.store.get_experiment(exp.id)
    doc = check_same_as_sequential(done, {"max_iter": 300})
    assert all(c["attempts"] == 1 for c in doc["candidates"])
    assert {c["params"]["C"] for c in doc["candidates"]} == {0.1, 1.0, 10.0}


def test_parallel_tuning_on_sqs_dynamodb_s3_picks_the_sequential_best(on_aws: Callable[[], None]) -> None:
    churn_model()
    life = context.lifecycle()
    exp = life.retrain("churn", TUNED)
    on_aws()  # candidates, then the refit the last candidate queued
    check_same_as_sequential(life.store.get_experiment(exp.id))


def test_one_candidate_grid(embedded: Callable[[], None]) -> None:
    """Every grid hyperparameter set by the request: one candidate (the request's), scored and
    refitted."""
    churn_model()
    life = context.lifecycle()
    exp = life.retrain("churn", {**TUNED, "hyperparameters": {"C": 3.0}})
    assert exp.grid_size == 1
    embedded()
    done = life.store.get_experiment(exp.id)
    assert done.status is ExperimentStatus.succeeded, done.error
    assert done.hyperparameters["C"] == 3.0
    assert [c["params"] for c in life.metrics(exp.id)["candidates"]] == [{}]


def test_a_candidate_that_raises_fails_the_experiment_naming_it(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    churn_model()
    score = trainer.score_candidate

    def flaky(frame: pd.DataFrame, spec: trainer.TrainingSpec, values: dict) -> dict:
        if values.get("C") == 1.0:
            raise ValueError("solver blew up")
        return score(frame, spec, values)

    monkeypatch.setattr(trainer, "score_candidate", flaky)
    life = context.lifecycle()
    exp = life.retrain("churn", TUNED)
    embedded()
    failed = life.store.get_experiment(exp.id)
    assert failed.status is ExperimentStatus.failed
    assert failed.error == 'tuning candidate 2 of 3 ({"C": 1.0}) failed: ValueError: solver blew up'
    assert failed.attempts == 0 and failed.artifact_key is None  # no refit ran
    candidates = life.metrics(exp.id)["candidates"]
    # One worker scores them in grid order: the first, then the one that raises; the last is
    # never scored, and says so instead of staying "queued" for ever.
    assert [c["status"] for c in candidates] == ["succeeded", "failed", "failed"]
    assert candidates[2]["error"] == "not scored: candidate 2 failed first"
    # A redelivered message of another candidate does nothing now.
    assert life.tuning().run(exp.id, 0, lambda *_: pytest.fail("scored after the failure")) is not None


def test_two_workers_score_each_candidate_once_and_refit_once(embedded: Callable[[], None]) -> None:
    churn_model()
    life = context.lifecycle()
    queue, life.jobs = life.jobs, None
    exp = life.retrain("churn", {"model_class": "svm", "tune": True})  # six candidates
    assert exp.grid_size == 6
    ran: list[object] = []
    lock = threading.Lock()

    def run(job: object) -> object:
        with lock:
            ran.append(job)
        return life.run_job(job)  # type: ignore[arg-type]

    pool = InProcessQueue(life.claimable_jobs, run, poll=0.05, workers=2)
    life.jobs = pool
    try:
        pool.recover()
        pool.join(timeout=120)
    finally:
        pool.close()
        life.jobs = queue
    done = life.store.get_experiment(exp.id)
    check_same_as_sequential(done)
    assert [c["attempts"] for c in life.metrics(exp.id)["candidates"]] == [1] * 6


def test_grid_scores_reach_tensorboard(tmp_path: Path) -> None:
    trained = type("T", (), {"learning_curves": {}, "metrics": {"f1_macro": 0.5}, "hyperparameters": {},
                             "grid_scores": [{"params": {"C": 1.0}, "scoring": "f1_macro", "mean": 0.7,
                                              "std": 0.1}]})()
    files = write_events(trained, tmp_path, "run")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    assert [e.value for e in acc.Scalars("grid/f1_macro/mean")] == pytest.approx([0.7])


# -- crashes -------------------------------------------------------------------------------

@pytest.fixture
def short_lease(embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "1.5")
    monkeypatch.setenv("MLFN_JOB_HEARTBEAT_SECONDS", "0.3")
    monkeypatch.setenv("MLFN_JOB_POLL_SECONDS", "0.1")
    context.reset()
    return embedded


def test_a_worker_killed_while_scoring_a_candidate_is_retried_and_the_tuning_completes(
        short_lease: Callable[[], None], tmp_path: Path) -> None:
    churn_model()
    life = context.lifecycle()
    queue, life.jobs = life.jobs, None
    exp = life.retrain("churn", TUNED)  # recorded with its candidates; nothing runs here yet
    life.jobs = queue
    # A worker process that stalls inside the scoring of candidate 1, then is SIGKILLed.
    script = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
              "import common.training.trainer as trainer\n"
              "trainer.score_candidate = lambda *a, **k: time.sleep(600)\n"
              "from common import context\n"
              "from common.jobs import Job\n"
              f"context.lifecycle().run_job(Job({exp.id}, 1))\n")
    env = {**os.environ, "MLFN_DATA_DIR": str(tmp_path / "data"), "MLFN_DEMO_MODELS": "false",
           "MLFN_JOB_LEASE_SECONDS": "1.5", "MLFN_JOB_HEARTBEAT_SECONDS": "0.3"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 60
    while life.tuning().candidates.list(exp.id)[1].status is not ExperimentStatus.running:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(2.0)  # longer than the lease: the heartbeat keeps it
    assert life.tuning().claimable(exp, life.store.get_model("churn").task) == [0, 2]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert life.recover() == [exp.id]  # candidates 0 and 2 now; 1 once its lease lapsed
    deadline = time.monotonic() + 60
    while life.store.get_experiment(exp.id).status is not ExperimentStatus.succeeded:
        assert life.store.get_experiment(exp.id).status is not ExperimentStatus.failed
        assert time.monotonic() < deadline, "the tuning did not complete"
        time.sleep(0.1)
    short_lease()
    done = life.store.get_experiment(exp.id)
    doc = check_same_as_sequential(done)
    assert [c["attempts"] for c in doc["candidates"]] == [1, 2, 1]


def test_on_sqs_a_lost_candidate_is_redelivered_and_the_refit_runs_once(
        on_aws: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker died holding candidate 0 (its lease ran out); another died after recording the
    last score but before queueing the refit. The redeliveries finish both, and the refit's
    message delivered twice trains once."""
    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "1")
    monkeypatch.setenv("MLFN_JOB_HEARTBEAT_SECONDS", "0.3")
    context.reset()
    churn_model()
    life = context.lifecycle()
    exp = life.retrain("churn", {**TUNED, "hyperparameters": {"C": 3.0}})  # one candidate
    task = life.store.get_model("churn").task
    assert life.tuning().claim(exp, 0) is not None  # ... and that worker is killed
    time.sleep(1.1)
    sqs = life.jobs._sqs  # type: ignore[union-attr]
    url = life.jobs.queue_url  # type: ignore[union-attr]

    def deliver() -> list[dict]:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return got.get("Messages", [])

    candidate_messages = deliver()
    assert [json.loads(m["Body"]) for m in candidate_messages] == [{"experiment_id": exp.id, "candidate": 0}]
    # The worker that takes it over scores it, then dies before it queues the refit.
    tuning = life.tuning()
    submit, tuning.submit = tuning.submit, None
    result = worker.handler(sqs_event(candidate_messages, ARN), None)
    assert result == {"batchItemFailures": []}
    assert tuning.candidates.list(exp.id)[0].attempts == 2
    assert deliver() == []  # no refit queued
    tuning.submit = submit
    # Its message was not deleted: redelivered, it finds the candidate scored and queues the refit.
    result = worker.handler(sqs_event(candidate_messages, ARN), None)
    refit = deliver()
    assert [json.loads(m["Body"]) for m in refit] == [{"experiment_id": exp.id}]
    assert tuning.claimable(exp, task) == []
    for _ in range(2):  # a duplicate delivery of the refit
        assert worker.handler(sqs_event(refit, ARN), None) == {"batchItemFailures": []}
    done = life.store.get_experiment(exp.id)
    assert done.status is ExperimentStatus.succeeded and done.attempts == 1, done.error


def test_a_refit_whose_worker_died_is_retried_with_the_recorded_scores(
        short_lease: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    churn_model()
    life = context.lifecycle()
    queue, life.jobs = life.jobs, None
    exp = life.retrain("churn", {**TUNED, "hyperparameters": {"C": 0.5}})
    for job in life.claimable_jobs():
        life.run_job(job)  # the one candidate
    assert [j.candidate for j in life.claimable_jobs()] == [None]  # the refit is claimable now
    assert life.job_state.claim(exp.id) is not None  # ... by a worker that dies
    assert life.claimable_jobs() == []  # held while its lease runs
    monkeypatch.setattr(trainer, "cross_validate", lambda *a: pytest.fail("scored again"))
    time.sleep(1.6)
    life.jobs = queue
    life.run_experiment(exp.id)
    done = life.store.get_experiment(exp.id)
    assert done.status is ExperimentStatus.succeeded and done.attempts == 2, done.error
    assert done.hyperparameters["C"] == 0.5
