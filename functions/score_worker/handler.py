"""The score worker: consumes the batch SQS queue (bodies ``{"task": "batch_job" | "batch_chunk",
"id": ...}``, sent by ``POST /batch_jobs`` and by the workers themselves: a planned job queues
its chunks, the last chunk scored queues the assembly) and reports partial batch failures.

A job that fails on its data (a bad row) is recorded failed and not retried. A message is handed
back to SQS for redelivery when its task could not run to an end: another worker holds it under
a live lease, or an outage left it queued for another attempt. While it runs its message is kept
invisible (``common.jobs.visibility_heartbeat``). Runs on the ONNX layer: the scoring path
imports no pandas or scikit-learn.
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

log = logging.getLogger("mlfn.score_worker")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
TASKS = ("batch_job", "batch_chunk")
SETTLED = (SUCCEEDED, FAILED, "scoring")  # a planned job waits for its chunks, not for us


def score_one(record: SQSRecord) -> str:
    task = json.loads(record.body)
    if not isinstance(task, dict) or task.get("task") not in TASKS or not isinstance(task.get("id"), str):
        log.error("not a batch task, dropped: %.200s", record.body)
        return ""
    with visibility_heartbeat(record.receipt_handle, record.event_source_arn, context.settings()):
        try:
            done = context.batch_jobs().run(task)
        except NotFound:
            log.warning("%s %s does not exist (any more); message dropped", task["task"], task["id"])
            return task["id"]
    if done.status not in SETTLED:
        raise RuntimeError(f"{task['task']} {task['id']} is {done.status}; redeliver")
    return task["id"]


def handler(event: dict[str, Any], lambda_context: Any) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=score_one, processor=processor,
                                    context=lambda_context)
