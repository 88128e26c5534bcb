"""Ingestions that crash: a worker killed (SIGKILL) mid-file leaves no dataset version and the
ingestion is retried by the next worker; a crash after the part was registered is not applied
twice; expired and abandoned uploads are collected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common import context
from common.errors import Conflict
from common.ingestion import Ingestions
from common.tasks import Lease

HEADER = "tenure,charges,plan,churned\n"
ROWS = "".join(f"{i % 70},{i % 50}.5,{('a', 'b')[i % 2]},{('yes', 'no')[(i // 3) % 2]}\n"
               for i in range(300))


CHURN = {"name": "churn", "task": "classification", "target": "churned"}


def prepared(monkeypatch: pytest.MonkeyPatch, body: bytes, model: dict[str, Any] = CHURN,
             filename: str = "f.csv") -> tuple[Ingestions, str]:
    """A model, an upload of ``body`` and its ingestion, queued (no worker running)."""
    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    context.reset()
    context.lifecycle().create_model(model)
    uploads = context.ingestions().uploads
    doc = uploads.create(model["name"], None, filename)
    uploads.receive(doc["upload_id"], None, body)
    started = context.ingestions().start(model["name"], doc["upload_id"])
    return context.ingestions(), started["ingestion_id"]


def lapse(ingestions: Ingestions, ingestion_id: str) -> None:
    record = ingestions.records.get("ingestion", ingestion_id)
    ingestions.records.update(record, {**record.doc, "lease_until": time.time() - 1})


def crash_after_registering(ingestions: Ingestions, ingestion_id: str,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the ingestion in a process that dies just after it registered the part."""
    original = Ingestions._register

    def register_then_die(self: Ingestions, *args: object) -> tuple[int, int]:
        original(self, *args)  # type: ignore[arg-type]
        raise KeyboardInterrupt  # the process dies before it records success

    monkeypatch.setattr(Ingestions, "_register", register_then_die)
    with pytest.raises(KeyboardInterrupt):
        ingestions.run(ingestion_id)
    monkeypatch.setattr(Ingestions, "_register", original)


def test_a_crash_after_registering_is_not_applied_twice(embedded: Callable[[], None],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ingestions, ingestion_id = prepared(monkeypatch, (HEADER + ROWS).encode())
    crash_after_registering(ingestions, ingestion_id, monkeypatch)
    with pytest.raises(Conflict):  # its lease is live: nobody else may take it yet
        ingestions.run(ingestion_id)
    lapse(ingestions, ingestion_id)
    done = ingestions.run(ingestion_id)
    assert done.status == "succeeded" and done.doc["attempts"] == 2
    parts = context.backends().experiments.dataset_parts("churn")
    assert [(p.version, p.rows) for p in parts] == [(1, 300)]


def test_a_stale_attempt_cannot_write(embedded: Callable[[], None],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ingestions, ingestion_id = prepared(monkeypatch, (HEADER + ROWS).encode())
    record = ingestions.records.get("ingestion", ingestion_id)
    first = ingestions.state.claim(record, lambda r: None)
    assert isinstance(first, Lease)
    lapse(ingestions, ingestion_id)
    assert ingestions.run(ingestion_id).status == "succeeded"  # the second attempt
    with pytest.raises(Conflict):
        first.write(rows_read=1)
    assert len(context.backends().experiments.dataset_parts("churn")) == 1


def slowed_worker(module: str, function: str, seconds: float) -> str:
    """A worker script that runs one ingestion (its id: argv[1]) with ``module.function``
    slowed by ``seconds`` a call, so that a test can kill it mid-file."""
    return textwrap.dedent(f"""
        import importlib, sys, time
        from common import context
        module = importlib.import_module({module!r})
        original = getattr(module, {function!r})
        def slow(*args, **kwargs):
            time.sleep({seconds!r})
            return original(*args, **kwargs)
        setattr(module, {function!r}, slow)
        context.ingestions().run(sys.argv[1])
    """)


WORKER = slowed_worker("common.training.datasets", "conform", 0.05)


def kill_mid_ingestion(ingestions: Ingestions, ingestion_id: str, script: str, rows: int) -> None:
    """Run ``script`` (given the ingestion id) in a worker process and SIGKILL it once it has
    read ``rows`` rows (and written row groups)."""
    worker = subprocess.Popen([sys.executable, "-c", script, ingestion_id], env=os.environ.copy(),
                              stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 60
        while True:
            doc = ingestions.records.get("ingestion", ingestion_id).doc
            if doc["status"] == "running" and doc["rows_read"] >= rows:
                break
            assert time.monotonic() < deadline and worker.poll() is None, doc
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_worker_killed_mid_ingestion(embedded: Callable[[], None], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_INGEST_CHUNK_ROWS", "5")
    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "1.5")
    monkeypatch.setenv("MLFN_JOB_HEARTBEAT_SECONDS", "0.2")
    ingestions, ingestion_id = prepared(monkeypatch, (HEADER + ROWS).encode())
    kill_mid_ingestion(ingestions, ingestion_id, WORKER, rows=50)
    store = context.backends().experiments
    assert store.dataset_parts("churn") == [] and store.get_model("churn").dataset_version == 0
    assert ingestions.status(ingestion_id)["status"] == "running"
    time.sleep(1.6)  # its lease lapses: the next worker retries it
    assert ingestions.claimable() == [ingestion_id]
    done = ingestions.run(ingestion_id)
    assert done.status == "succeeded" and done.doc["attempts"] == 2, done.doc
    assert [(p.version, p.rows) for p in store.dataset_parts("churn")] == [(1, 300)]


def test_attempts_run_out(embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    ingestions, ingestion_id = prepared(monkeypatch, (HEADER + ROWS).encode())
    for _ in range(3):
        record = ingestions.records.get("ingestion", ingestion_id)
        assert ingestions.state.claim(record, lambda r: None) is not None
        lapse(ingestions, ingestion_id)
    done = ingestions.run(ingestion_id)
    assert done.status == "failed" and "attempts" in done.doc["error"]
    upload = ingestions.uploads.get(done.doc["upload_id"])
    assert upload.status == "received"  # may be ingested again


def test_expired_uploads_are_collected(embedded: Callable[[], None],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from common.gc import collect

    context.lifecycle().create_model({"name": "churn", "task": "classification",
                                      "target": "churned"})
    uploads = context.ingestions().uploads
    never = uploads.create("churn", None, None)["upload_id"]
    sent = uploads.create("churn", None, None)["upload_id"]
    uploads.receive(sent, None, b"a,b\n1,2\n")
    fresh = uploads.create("churn", None, None)["upload_id"]
    orphan = "_uploads/" + "f" * 32 + ".abc"
    context.backends().datasets.put(orphan, b"left by a crash")
    assert collect(context.backends()).uploads == []  # nothing has expired yet
    later = time.time() + context.settings().upload_expiry_seconds + 1
    for upload_id in (never, sent):
        record = uploads.records.get("upload", upload_id)
        uploads.records.update(record, {**record.doc, "expires_at": time.time() - 1})
    monkeypatch.setattr(time, "time", lambda: later)
    gone = uploads.expire()
    assert sorted(gone) == sorted([never, sent, fresh, orphan])
    assert context.backends().datasets.list("_uploads/") == []


def test_the_delivery_after_the_last_attempt_fails_the_ingestion(
        on_aws: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Three attempts died (each invocation timed out): the next delivery through the ingest
    worker's handler marks the ingestion failed, names why, and consumes the message."""
    import json

    import boto3
    import requests

    from common.tasks import MAX_ATTEMPTS
    from functions.ingest_worker import handler as ingest_worker
    from infra.local.worker import sqs_event

    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="ingest")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    monkeypatch.setenv("MLFN_INGEST_QUEUE_URL", url)
    context.reset()
    context.lifecycle().create_model(CHURN)
    ingestions = context.ingestions()
    doc = ingestions.uploads.create(CHURN["name"], None, "f.csv")
    sent = requests.put(doc["url"], data=(HEADER + ROWS).encode(), headers=doc["headers"], timeout=30)
    assert sent.status_code == 200, sent.text
    ingestion_id = ingestions.start(CHURN["name"], doc["upload_id"])["ingestion_id"]
    record = ingestions.records.get("ingestion", ingestion_id)
    ingestions.records.update(record, {**record.doc, "status": "running", "attempts": MAX_ATTEMPTS,
                                       "lease_until": time.time() - 1})
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0)["Messages"]
    assert json.loads(got[0]["Body"]) == {"task": "ingest", "id": ingestion_id}
    answer = ingest_worker.handler(sqs_event(got, arn), None)
    assert answer == {"batchItemFailures": []}
    done = ingestions.status(ingestion_id)
    assert done["status"] == "failed" and f"{MAX_ATTEMPTS} attempts ran out" in done["error"], done
    assert context.backends().experiments.dataset_parts("churn") == []


def test_the_emulators_queues_redrive_as_the_template(on_aws: Callable[[], None],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-compose's emulator_init creates the queues with the template's delivery counts."""
    import json

    import boto3

    from infra.docker.emulator_init import create_queues
    from tests.infra.test_events import template

    endpoint = boto3.client("sqs").meta.endpoint_url.rstrip("/")
    urls = {name: f"{endpoint}/123456789012/{name}" for name in ("jobs", "ingest", "batch")}
    monkeypatch.setenv("MLFN_QUEUE_URL", urls["jobs"])
    monkeypatch.setenv("MLFN_INGEST_QUEUE_URL", urls["ingest"])
    monkeypatch.setenv("MLFN_BATCH_QUEUE_URL", urls["batch"])
    context.reset()
    create_queues(context.settings())
    resources = template()["Resources"]
    sqs = boto3.client("sqs")
    for name, queue in (("jobs", "JobsQueue"), ("ingest", "IngestQueue"), ("batch", "BatchQueue")):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
        redrive = json.loads(got["Attributes"]["RedrivePolicy"])
        assert int(redrive["maxReceiveCount"]) == \
            int(resources[queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"]), name
