"""Uploads and ingestion on the AWS backends (moto server: S3 presigned PUT and multipart,
DynamoDB, SQS), through the real handlers with API Gateway events: upload -> ingest on the
ingest queue's worker -> retrain on the new dataset version."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import requests

from common import context
from common.domain import Experiment
from functions.add_data import handler as add_data
from functions.ingest_worker import handler as ingest_worker
from functions.models import handler as models
from functions.retrain import handler as retrain
from functions.uploads import handler as uploads
from infra.local.worker import sqs_event
from tests.apigw import invoke

MIB = 1024 * 1024


@pytest.fixture
def stack(on_aws: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], int]]:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="ingest")["QueueUrl"]
    for key, value in {"MLFN_INGEST_QUEUE_URL": url, "MLFN_INGEST_CHUNK_ROWS": "5000",
                       "MLFN_UPLOAD_MULTIPART_BYTES": str(5 * MIB),
                       "MLFN_UPLOAD_PART_BYTES": str(5 * MIB)}.items():
        monkeypatch.setenv(key, value)
    context.reset()

    def drain() -> int:
        handled = 0
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = got.get("Messages", [])
            if not messages:
                return handled
            result = ingest_worker.handler(sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:ingest"), None)
            assert result == {"batchItemFailures": []}, result
            for m in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            handled += len(messages)

    created = invoke(models.handler, "v1", "POST", "/models",
                     body={"name": "wide", "task": "classification", "target": "label"})
    assert created.status == 201, created.body
    yield drain
    context.reset()


def csv_rows(n: int, start: int = 0, pad: int = 0) -> bytes:
    text = "x" * pad
    return "".join(f"{i % 97},{(i * 13) % 50}.25,{text}{i % 3},{('a', 'b')[(i // 2) % 2]}\n"
                   for i in range(start, start + n)).encode()


HEADER = b"n,m,note,label\n"


def announce(model: str = "wide", **query: str) -> dict[str, Any]:
    reply = invoke(uploads.handler, "v1", "POST", "/uploads", {"model": model, **query})
    assert reply.status == 201, reply.body
    return reply.json()


def ingest(upload_id: str, drain: Callable[[], int], model: str = "wide") -> dict[str, Any]:
    started = invoke(add_data.handler, "v1", "PUT", "/add_data",
                     {"model": model, "upload": upload_id})
    assert started.status == 202, started.body
    assert drain() == 1
    got = invoke(uploads.handler, "v1", "GET", f"/ingestions/{started.json()['ingestion_id']}")
    assert got.status == 200
    return got.json()


def retrained(model: str, on_aws: Callable[[], None]) -> Experiment:
    """PUT /retrain (logistic regression) through its handler, run by the training worker."""
    trained = invoke(retrain.handler, "v1", "PUT", "/retrain", {"model": model},
                     body={"model_class": "logistic_regression"})
    assert trained.status == 202, trained.body
    on_aws()  # the training worker drains the retrain queue
    return context.backends().experiments.get_experiment(trained.json()["experiment_id"])


def test_presigned_put_ingest_retrain(stack: Callable[[], int], on_aws: Callable[[], None]) -> None:
    body = HEADER + csv_rows(3000)
    doc = announce(filename="wide.csv")
    assert doc["url"].startswith("http") and "Signature" in doc["url"] or "X-Amz-Signature" in doc["url"]
    assert doc["status"] == "pending"
    sent = requests.put(doc["url"], data=body, headers=doc["headers"], timeout=30)
    assert sent.status_code == 200, sent.text
    status = invoke(uploads.handler, "v1", "GET", f"/uploads/{doc['upload_id']}").json()
    assert status["status"] == "received" and status["size"] == len(body)
    done = ingest(doc["upload_id"], stack)
    assert done["status"] == "succeeded" and done["rows_added"] == 3000, done
    assert done["dataset_version"] == 1
    bucket = context.backends().datasets
    assert bucket.list("_uploads/") == []  # the upload's object went with its ingestion
    exp = retrained("wide", on_aws)
    assert exp.status.value == "succeeded" and exp.dataset_version == 1 and exp.rows == 3000


def test_multipart_upload(stack: Callable[[], int]) -> None:
    body = HEADER + csv_rows(40_000, pad=250)
    assert len(body) > 10 * MIB
    doc = announce(size=str(len(body)))
    parts = doc["multipart"]["parts"]
    assert len(parts) == 3 and doc["multipart"]["part_bytes"] == 5 * MIB
    size = doc["multipart"]["part_bytes"]
    early = invoke(uploads.handler, "v1", "POST", f"/uploads/{doc['upload_id']}/complete")
    assert early.status == 400 and "part 1 has not arrived" in early.json()["detail"]
    for part in parts:
        chunk = body[(part["part"] - 1) * size: part["part"] * size]
        sent = requests.put(part["url"], data=chunk, headers=doc["headers"], timeout=60)
        assert sent.status_code == 200, sent.text
    done = invoke(uploads.handler, "v1", "POST", f"/uploads/{doc['upload_id']}/complete")
    assert done.status == 200 and done.json()["size"] == len(body), done.body
    result = ingest(doc["upload_id"], stack)
    assert result["status"] == "succeeded" and result["rows_added"] == 40_000, result


def test_a_bad_row_on_s3_changes_nothing(stack: Callable[[], int]) -> None:
    first = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "wide"},
                   body=HEADER + csv_rows(20), headers={"Content-Type": "text/csv"})
    assert first.status == 200, first.body  # the schema: 'm' is numeric
    doc = announce()
    body = HEADER + csv_rows(7000) + b"1,oops,z,a\n"
    requests.put(doc["url"], data=body, headers=doc["headers"], timeout=30)
    done = ingest(doc["upload_id"], stack)
    assert done["status"] == "failed" and done["row"] == 7000, done
    assert "feature 'm' (row 7000)" in done["error"]
    store = context.backends().experiments
    assert store.get_model("wide").dataset_version == 1
    assert [p.key for p in store.all_dataset_parts("wide")] == context.backends().datasets.list("wide/")
    # the upload may be ingested again (it failed on its data: it fails again, nothing added)
    status = invoke(uploads.handler, "v1", "GET", f"/uploads/{doc['upload_id']}").json()
    assert status["status"] == "received"


@pytest.mark.parametrize("when", ["before add_data", "while queued"])
def test_an_upload_replaced_after_it_arrived_is_not_ingested(stack: Callable[[], int],
                                                              when: str) -> None:
    """The presigned URL takes a second PUT: other bytes after the upload arrived are refused
    (the ingestion reads the ETag that arrived), at the request or by the worker; nothing is
    added either way."""
    doc = announce()
    assert requests.put(doc["url"], data=HEADER + csv_rows(300), headers=doc["headers"],
                        timeout=30).ok
    status = invoke(uploads.handler, "v1", "GET", f"/uploads/{doc['upload_id']}").json()
    assert status["status"] == "received"
    replaced = HEADER + csv_rows(300, start=1)
    if when == "before add_data":
        assert requests.put(doc["url"], data=replaced, headers=doc["headers"], timeout=30).ok
        refused = invoke(add_data.handler, "v1", "PUT", "/add_data",
                         {"model": "wide", "upload": doc["upload_id"]})
        assert refused.status == 400, refused.body
        detail = refused.json()["detail"]
    else:
        started = invoke(add_data.handler, "v1", "PUT", "/add_data",
                         {"model": "wide", "upload": doc["upload_id"]})
        assert started.status == 202, started.body
        assert requests.put(doc["url"], data=replaced, headers=doc["headers"], timeout=30).ok
        assert stack() == 1
        done = invoke(uploads.handler, "v1", "GET",
                      f"/ingestions/{started.json()['ingestion_id']}").json()
        assert done["status"] == "failed", done
        detail = done["error"]
    assert f"upload {doc['upload_id']} was replaced after it arrived" in detail, detail
    assert "POST /uploads" in detail
    assert context.backends().experiments.get_model("wide").dataset_version == 0
    assert context.backends().datasets.list("wide/") == []
