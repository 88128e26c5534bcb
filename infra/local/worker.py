"""A long-running worker for docker-compose and servers: long-polls the SQS retrain queue (or,
``--queue ingest``, the ingest queue; ``--queue batch``, the batch scoring queue) and hands each
message to the same handler the Lambda worker of that queue uses."""

from __future__ import annotations

import logging
from typing import Any

from common import context

log = logging.getLogger("mlfn.worker")


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Messages from ReceiveMessage in the shape Lambda's SQS event source delivers them."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "",
            }
            for m in messages
        ]
    }


def run(once: bool = False, wait_seconds: int = 20, queue: str = "jobs") -> int:
    """Process messages until stopped (or one receive when ``once``); returns messages handled."""
    import boto3

    settings = context.backends().settings
    if queue == "ingest":
        from functions.ingest_worker.handler import handler

        url, variable = settings.ingest_queue_url, "MLFN_INGEST_QUEUE_URL"
    elif queue == "batch":
        from functions.score_worker.handler import handler

        url, variable = settings.batch_queue_url, "MLFN_BATCH_QUEUE_URL"
    else:
        from functions.train_worker.handler import handler

        url, variable = settings.queue_url, "MLFN_QUEUE_URL"
    if settings.job_queue != "sqs" or not url:
        raise SystemExit(f"mlfn worker needs MLFN_JOB_QUEUE=sqs and {variable}; the embedded "
                         "in-process queue runs inside `mlfn serve`")
    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    handled = 0
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1,
                                  WaitTimeSeconds=wait_seconds, AttributeNames=["All"])
        messages = got.get("Messages", [])
        if messages:
            result = handler(sqs_event(messages, arn), None)
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            for m in messages:
                if m["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                else:
                    log.warning("message %s left for redelivery", m["MessageId"])
            handled += len(messages)
        if once:
            return handled
