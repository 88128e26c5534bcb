"""The ingestion worker: consumes the ingest SQS queue (bodies ``{"task": "ingest", "id": ...}``,
sent by ``PUT /add_data?upload=``) and reports partial batch failures.

An ingestion that fails on its data (a bad row) is recorded on its ingestion (status
``failed``) and not retried. A message is handed back to SQS for redelivery when the ingestion
could not run to an end: it runs elsewhere under a live lease (that worker may still die), or an
outage left it queued for another attempt. While it runs, its message is kept invisible
(``common.jobs.visibility_heartbeat``), so SQS redelivers it only once this worker stopped.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from common import context
from common.errors import NotFound
from common.jobs import visibility_heartbeat
from common.tasks import FAILED, SUCCEEDED

log = logging.getLogger("mlfn.ingest_worker")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def ingest_one(record: SQSRecord) -> str:
    task = json.loads(record.body)
    if not isinstance(task, dict) or task.get("task") != "ingest" or not isinstance(task.get("id"), str):
        log.error("not an ingestion task, dropped: %.200s", record.body)
        return ""
    with visibility_heartbeat(record.receipt_handle, record.event_source_arn, context.settings()):
        try:
            done = context.ingestions().run(task["id"])
        except NotFound:
            log.warning("ingestion %s does not exist (any more); message dropped", task["id"])
            return task["id"]
    if done.status not in (SUCCEEDED, FAILED):
        raise RuntimeError(f"ingestion {task['id']} is {done.status}; redeliver")
    return task["id"]


def handler(event: dict[str, Any], lambda_context: Any) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=ingest_one, processor=processor,
                                    context=lambda_context)
