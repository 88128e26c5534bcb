"""Batch scoring jobs on the AWS backends (moto server: S3 presigned PUT and GET, DynamoDB,
SQS), through the real handlers with API Gateway and SQS events: a file over 6 MB scored chunk
by chunk by the score worker (as `mlfn worker --queue batch` runs it) equals /forward_batch on the same rows."""

from __future__ import annotations

from collections.abc import Callable

import boto3
import pytest
import requests

from common import context
from functions.batch_jobs import handler as batch_jobs
from functions.uploads import handler as uploads
from infra.local.worker import run
from tests.apigw import invoke
from tests.e2e.test_batch_jobs import (
    body_of,
    expected,
    expected_images,
    images_zip,
    rows_of,
    trained,
    trained_images,
)


def test_a_file_over_6mb_on_s3_and_sqs(on_aws: Callable[[], None],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="batch")["QueueUrl"]
    monkeypatch.setenv("MLFN_BATCH_QUEUE_URL", url)
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", str(1024 * 1024))
    monkeypatch.setenv("MLFN_MAX_BATCH_ROWS", "1000000")
    context.reset()
    trained()
    body = body_of(165_000)
    assert len(body) > 6 * 1024 * 1024
    doc = invoke(uploads.handler, "v1", "POST", "/uploads", {"model": "churn"}).json()
    sent = requests.put(doc["url"], data=body, headers=doc["headers"], timeout=60)
    assert sent.status_code == 200, sent.text
    started = invoke(batch_jobs.handler, "v1", "POST", "/batch_jobs",
                     {"model": "churn", "upload": doc["upload_id"]})
    assert started.status == 202, started.body
    job = started.json()

    handled = 0  # `mlfn worker --queue batch`: the plan, then every chunk, then the assembly
    while got := run(once=True, wait_seconds=0, queue="batch"):
        handled += got
    status = invoke(batch_jobs.handler, "v1", "GET", job["url"])
    assert status.status == 200
    done = status.json()
    assert done["status"] == "succeeded", done
    assert handled == done["chunks_total"] + 2 and done["chunks_total"] >= 6
    assert done["result"]["url"].startswith("http") and "Signature" in done["result"]["url"]
    got = requests.get(done["result"]["url"], timeout=60)
    assert got.status_code == 200
    header, rows = rows_of(got.content)
    assert header == ["row", "prediction", "probability_no", "probability_yes"]
    assert rows == expected(body)
    assert context.backends().datasets.list("_batch/") == [f"_batch/{done['job_id']}/result.csv"]


def test_a_zip_of_images_on_s3_is_read_by_ranges(on_aws: Callable[[], None],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An image model's batch job on S3: the plan and every chunk read the zip by ranged GETs
    (never the whole object), and the result equals /forward_batch on the same zip."""
    from common.storage import s3_objects

    sqs = boto3.client("sqs")
    monkeypatch.setenv("MLFN_BATCH_QUEUE_URL", sqs.create_queue(QueueName="batch")["QueueUrl"])
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "20000")
    context.reset()
    trained_images()
    body = images_zip(range(300, 1100))
    doc = invoke(uploads.handler, "v1", "POST", "/uploads", {"model": "digits"}).json()
    assert requests.put(doc["url"], data=body, headers=doc["headers"], timeout=60).status_code == 200
    whole = []
    monkeypatch.setattr(s3_objects.S3ObjectStore, "open_read",
                        lambda self, key: whole.append(key) or pytest.fail("downloaded whole"))
    job = invoke(batch_jobs.handler, "v1", "POST", "/batch_jobs",
                 {"model": "digits", "upload": doc["upload_id"]}).json()
    while run(once=True, wait_seconds=0, queue="batch"):
        pass
    done = invoke(batch_jobs.handler, "v1", "GET", job["url"]).json()
    assert done["status"] == "succeeded" and done["chunks_total"] >= 5, done
    header, rows = rows_of(requests.get(done["result"]["url"], timeout=60).content)
    assert rows == expected_images(body, [c.removeprefix("probability_") for c in header[3:]])
    assert whole == []


@pytest.mark.parametrize("again", ["other rows", "the same file"])
def test_an_upload_sent_again_while_scored_is_not_mixed_in(on_aws: Callable[[], None],
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            again: str) -> None:
    """The presigned PUT URL stays valid after the file arrived: a second PUT of other bytes
    while the chunks are scored fails the job (its chunks are read at the ETag that arrived)
    instead of mixing two files into one result; the same bytes again (a client's retry) are
    the same version, and the job succeeds."""
    sqs = boto3.client("sqs")
    monkeypatch.setenv("MLFN_BATCH_QUEUE_URL", sqs.create_queue(QueueName="batch")["QueueUrl"])
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "100000")
    monkeypatch.setenv("MLFN_MAX_BATCH_ROWS", "1000000")  # /forward_batch's, for expected()
    context.reset()
    trained()
    body = body_of(20_000)
    doc = invoke(uploads.handler, "v1", "POST", "/uploads", {"model": "churn"}).json()
    assert requests.put(doc["url"], data=body, headers=doc["headers"], timeout=60).ok
    job = invoke(batch_jobs.handler, "v1", "POST", "/batch_jobs",
                 {"model": "churn", "upload": doc["upload_id"]}).json()
    assert run(once=True, wait_seconds=0, queue="batch") == 1  # the plan
    assert run(once=True, wait_seconds=0, queue="batch") == 1  # a first chunk
    other = body if again == "the same file" else body_of(20_000).replace(b",north\n", b",south\n")
    assert other == body or len(other) == len(body) and other != body
    assert requests.put(doc["url"], data=other, headers=doc["headers"], timeout=60).ok
    while run(once=True, wait_seconds=0, queue="batch"):
        pass
    done = invoke(batch_jobs.handler, "v1", "GET", job["url"]).json()
    if again == "the same file":
        assert done["status"] == "succeeded", done
        assert rows_of(requests.get(done["result"]["url"], timeout=60).content)[1] == expected(body)
        return
    assert done["status"] == "failed", done
    assert f"upload {doc['upload_id']} was replaced after it arrived" in done["error"], done
    assert "POST /uploads" in done["error"] and "result" not in done
    assert context.backends().datasets.list("_batch/") == []
