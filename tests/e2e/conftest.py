"""Fixtures for the end-to-end tests: the embedded backends and the AWS ones on moto."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from common import context
from functions.train_worker import handler as worker
from infra.local.worker import sqs_event


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_context: None) -> Callable[[], None]:
    monkeypatch.setenv("MLFN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFN_DEMO_MODELS", "false")
    monkeypatch.setenv("MLFN_DEPLOY_CHECK_SECONDS", "0")
    context.reset()
    return context.wait_for_jobs


@pytest.fixture
def on_aws(aws: str, monkeypatch: pytest.MonkeyPatch, fresh_context: None) -> Callable[[], None]:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="retrain")["QueueUrl"]
    for key, value in {"MLFN_OBJECT_STORE": "s3", "MLFN_EXPERIMENT_STORE": "dynamodb",
                       "MLFN_JOB_QUEUE": "sqs", "MLFN_QUEUE_URL": url,
                       "MLFN_DEPLOY_CHECK_SECONDS": "0"}.items():
        monkeypatch.setenv(key, value)
    context.reset()
    context.backends().ensure_cloud_resources()

    def drain() -> None:
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = got.get("Messages", [])
            if not messages:
                return
            result = worker.handler(sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:retrain"), None)
            failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
            assert not failed, result
            for m in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    return drain


@pytest.fixture(params=["sqlite", "postgres", "dynamodb"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              fresh_context: None) -> Iterator[str]:
    """The embedded service on each experiment store (DynamoDB with S3, on the moto server)."""
    monkeypatch.setenv("MLFN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFN_DEMO_MODELS", "false")
    monkeypatch.setenv("MLFN_DEPLOY_CHECK_SECONDS", "0")
    for key in ("MLFN_OBJECT_STORE", "MLFN_EXPERIMENT_STORE", "MLFN_JOB_QUEUE", "MLFN_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    if request.param == "postgres":
        monkeypatch.setenv("MLFN_EXPERIMENT_STORE", "postgres")
        monkeypatch.setenv("MLFN_POSTGRES_DSN", request.getfixturevalue("pg_dsn"))
    elif request.param == "dynamodb":
        request.getfixturevalue("aws")
        monkeypatch.setenv("MLFN_EXPERIMENT_STORE", "dynamodb")
        monkeypatch.setenv("MLFN_OBJECT_STORE", "s3")
    context.reset()
    context.backends().ensure_cloud_resources()
    yield request.param
    context.reset()
