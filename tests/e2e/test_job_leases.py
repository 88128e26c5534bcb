"""Issue 13: training attempts are fenced by their files too (each writes under keys of its own),
and SQS keeps a message invisible while its worker trains (a visibility heartbeat)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from common import context
from common.domain import ExperimentStatus, utcnow
from common.errors import Conflict
from common.names import artifact_prefix, legacy_model_key, model_key
from functions.artifacts import handler as artifacts
from tests.apigw import invoke

ROWS = [{"a": float(i), "b": float(i % 7), "y": "p" if (i * 7) % 5 > 1 else "q"} for i in range(40)]


def make_model(name: str) -> None:
    import pandas as pd

    life = context.lifecycle()
    life.create_model({"name": name, "task": "classification", "target": "y"})
    life.add_frame(name, pd.DataFrame(ROWS))


def test_a_stale_attempt_cannot_overwrite_the_newer_attempts_model(
        any_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13, defect 2: attempt 1 checks it holds the job, then stalls in its model write; its
    lease runs out, attempt 2 takes over, trains, writes and deploys. When attempt 1's write
    lands, it lands at attempt 1's own key, its outcome is refused and its files are removed:
    the model served is attempt 2's, byte for byte."""
    make_model("fence")
    life, models = context.lifecycle(), context.backends().models
    life.jobs = None
    exp = life.retrain("fence", {"model_class": "logistic_regression", "deploy": "always"})
    first = life._claim(exp.id)
    assert first is not None and first.attempts == 1

    stalled, release = threading.Event(), threading.Event()
    put = models.put

    def stalling_put(key: str, data: bytes) -> None:
        if key == model_key("fence", exp.id, 1):
            stalled.set()
            release.wait(60)
        put(key, data)

    monkeypatch.setattr(models, "put", stalling_put)
    board = tmp_path / "board"
    board.mkdir()
    (board / "events.out.tfevents.stale").write_bytes(b"attempt 1's events")
    stale = SimpleNamespace(onnx_bytes=b"attempt 1's model", metrics={"accuracy": 0.0},
                            hyperparameters={}, rows=40)
    outcome: dict[str, Any] = {}

    def attempt_one() -> None:
        try:
            outcome["value"] = life.record_trained(first, stale, board)
        except Exception as exc:
            outcome["error"] = exc

    writer = threading.Thread(target=attempt_one)
    writer.start()
    assert stalled.wait(30), "attempt 1 never reached its model write"

    life.store.update_experiment(exp.id, {"lease_until": utcnow() - timedelta(seconds=1)})
    second = life.run_experiment(exp.id)
    assert second.status is ExperimentStatus.succeeded and second.attempts == 2, second.error
    assert second.artifact_key == model_key("fence", exp.id, 2)
    newer = models.get(second.artifact_key)
    assert life.store.deployed_experiment("fence") == exp.id

    release.set()
    writer.join(60)
    assert isinstance(outcome.get("error"), Conflict), outcome
    after = life.store.get_experiment(exp.id)
    assert after.status is ExperimentStatus.succeeded and after.attempts == 2
    assert after.artifact_key == second.artifact_key
    assert models.get(after.artifact_key) == newer
    assert not models.exists(model_key("fence", exp.id, 1))  # landed at its own key, removed
    assert models.list(artifact_prefix("fence", exp.id, 1)) == []
    # What is served is attempt 2's model: a fresh serving process loads it through the record.
    context.serving().sessions._items.clear()
    answer = context.serving().forward("fence", {"a": 1.0, "b": 1.0})
    assert answer["experiment_id"] == exp.id
    assert context.serving().load("fence").size_bytes == len(newer)
    names = [a["name"] for a in life.artifacts(after)]
    assert names[0] == "model.onnx" and all(not n.endswith(".stale") for n in names)


def test_deleting_an_experiment_removes_every_attempts_files(any_store: str) -> None:
    make_model("leftovers")
    life, models = context.lifecycle(), context.backends().models
    life.jobs = None
    done = life.train_now("leftovers", {"model_class": "logistic_regression"})
    assert done.artifact_key == model_key("leftovers", done.id, 1)
    # What a stale attempt could leave behind, had it died between its write and its cleanup.
    models.put(model_key("leftovers", done.id, 2), b"leftover")
    models.put(artifact_prefix("leftovers", done.id, 2) + "tensorboard/x", b"leftover")
    other = life.train_now("leftovers", {"model_class": "logistic_regression"})
    life.delete_experiment(done.id)
    assert [k for k in models.list("leftovers/") if "/parts/" not in k] == sorted(
        [other.artifact_key, *(a["key"] for a in life.artifacts(other) if a["name"] != "model.onnx")])


def test_an_experiment_trained_before_per_attempt_keys_is_served_listed_and_deleted(
        embedded: Callable[[], None]) -> None:
    """Its record names ``<model>/<id>.onnx`` and its TensorBoard files sit under
    ``<model>/<id>/tensorboard/``."""
    make_model("old")
    life, models = context.lifecycle(), context.backends().models
    life.jobs = None
    exp = life.train_now("old", {"model_class": "logistic_regression"})
    legacy = legacy_model_key("old", exp.id)
    for item in life.artifacts(exp):
        target = legacy if item["name"] == "model.onnx" else f"old/{exp.id:010d}/{item['name']}"
        models.put(target, models.get(item["key"]))
        models.delete(item["key"])
    old = life.store.update_experiment(exp.id, {"artifact_key": legacy, "attempts": 2})
    listed = {a["name"]: a["key"] for a in life.artifacts(old)}
    assert listed["model.onnx"] == legacy
    assert any(n.startswith("tensorboard/events.out.tfevents") for n in listed)
    life.deploy(exp.id)
    assert context.serving().forward("old", {"a": 1.0, "b": 2.0})["experiment_id"] == exp.id
    reply = invoke(artifacts.handler, "v1", "GET", f"/artifacts/{exp.id}/model.onnx")
    assert reply.status == 200 and reply.body == models.get(legacy)

    newer = life.train_now("old", {"model_class": "logistic_regression", "deploy": "always"})
    life.delete_experiment(exp.id)
    assert not models.exists(legacy) and models.list(f"old/{exp.id:010d}/") == []
    assert models.exists(str(newer.artifact_key))


# -- SQS ---------------------------------------------------------------------------------------
@pytest.fixture
def sqs_heartbeat(on_aws: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The AWS backends on moto with a 2 s visibility timeout, a 2 s job lease renewed (and the
    message's visibility extended) every 0.5 s."""
    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "2")
    monkeypatch.setenv("MLFN_JOB_HEARTBEAT_SECONDS", "0.5")
    context.reset()
    sqs = boto3.client("sqs")
    url = context.settings().queue_url
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "2"})
    return sqs


def slow_training(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    import common.training.trainer as trainer

    fit = trainer.train

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return fit(*args, **kwargs)

    monkeypatch.setattr(trainer, "train", slow)


def test_a_message_is_not_redelivered_while_its_worker_trains(
        sqs_heartbeat: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training takes ~5 s, the queue's visibility timeout is 2 s: the worker's heartbeat keeps
    the message invisible, so another receive meanwhile gets nothing; once trained, the message
    is deleted."""
    from infra.local import worker

    sqs, url = sqs_heartbeat, context.settings().queue_url
    make_model("visible")
    exp = context.lifecycle().retrain("visible", {"model_class": "logistic_regression"})
    slow_training(monkeypatch, 5.0)
    handled: list[int] = []
    consumer = threading.Thread(target=lambda: handled.append(worker.run(once=True, wait_seconds=5)))
    consumer.start()
    store = context.lifecycle().store
    deadline = time.monotonic() + 30
    while store.get_experiment(exp.id).status is ExperimentStatus.queued:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    while consumer.is_alive():
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=0)
        assert "Messages" not in got, "redelivered while its worker still trains"
    assert time.monotonic() - started > 4.0  # the training outlasted two visibility timeouts
    assert handled == [1]
    done = store.get_experiment(exp.id)
    assert done.status is ExperimentStatus.succeeded and done.attempts == 1, done.error
    time.sleep(2.5)
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)


def test_a_message_that_keeps_failing_reaches_the_dead_letter_queue(sqs_heartbeat: Any) -> None:
    """A job held by a live lease elsewhere: each delivery is handed back (not extended), and
    after maxReceiveCount receives SQS moves the message to the dead-letter queue."""
    import json

    from infra.local import worker

    sqs, url = sqs_heartbeat, context.settings().queue_url
    dlq = sqs.create_queue(QueueName="retrain-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})})
    make_model("poison")
    life = context.lifecycle()
    exp = life.retrain("poison", {"model_class": "logistic_regression"})
    life._claim(exp.id)  # held by a worker that lives (its lease is renewed below)
    deadline = time.monotonic() + 60
    while True:
        life.store.renew_lease(exp.id, 1, utcnow() + timedelta(seconds=60))
        worker.run(once=True, wait_seconds=1)
        got = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)
        if "Messages" in got:
            break
        assert time.monotonic() < deadline, "the failing message never reached the dead-letter queue"
    assert json.loads(got["Messages"][0]["Body"]) == {"experiment_id": exp.id}
    assert life.store.get_experiment(exp.id).status is ExperimentStatus.running
