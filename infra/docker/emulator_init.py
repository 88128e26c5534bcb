"""Create what template.yaml creates on AWS, on the emulator docker-compose uses (moto or
LocalStack): the buckets, the DynamoDB table when experiments live there, and the retrain,
ingest and batch queues with their dead-letter queues. Idempotent; configured by the same MLFN_* variables
as the service.

    python infra/docker/emulator_init.py
"""

from __future__ import annotations

import json
import logging

from common.backends import Backends
from common.settings import Settings

log = logging.getLogger("mlfn.emulator_init")

# As template.yaml: a retrain message that fails three deliveries moves to the dead-letter
# queue, an ingest or batch message (a task: 3 attempts, the delivery that records their failure,
# one duplicate) five. The visibility timeout outlasts one job's lease.
MAX_RECEIVE_COUNT = 3
TASK_MAX_RECEIVE_COUNT = 5


def create_queues(settings: Settings) -> None:
    for url, count in ((settings.queue_url, MAX_RECEIVE_COUNT),
                       (settings.ingest_queue_url, TASK_MAX_RECEIVE_COUNT),
                       (settings.batch_queue_url, TASK_MAX_RECEIVE_COUNT)):
        if url:
            create_queue(settings, url, count)


def create_queue(settings: Settings, queue_url: str, max_receive_count: int = MAX_RECEIVE_COUNT) -> None:
    import boto3

    sqs = boto3.client("sqs")
    name = queue_url.rstrip("/").rsplit("/", 1)[-1]
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(int(settings.job_lease_seconds) + 60),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    log.info("queue %s (dead letters: %s)", url, dlq_url)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    Backends.from_settings(settings).ensure_cloud_resources()
    log.info("buckets %s, %s ready", settings.models_bucket, settings.datasets_bucket)
    if settings.job_queue == "sqs":
        create_queues(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
