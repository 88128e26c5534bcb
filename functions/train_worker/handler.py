"""The training worker: consumes the retrain SQS queue and reports partial batch failures.

A message is a job (``common.jobs.Job``): an experiment's training, or the scoring of one grid
candidate of a tuned experiment (``{"experiment_id": N, "candidate": I}``, ``common/tuning.py``).

A training that fails is recorded on its experiment (status ``failed``) and not retried; only a
message that could not be processed at all (e.g. the experiment is running elsewhere, a store is
unreachable) is reported back to SQS for redelivery. While a job trains, its message is kept
invisible (``common.jobs.visibility_heartbeat``), so SQS redelivers it only once this worker
stopped.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from common import context
from common.jobs import Job, visibility_heartbeat
from common.training.trainer import preload

# The training stack is imported at start (Lambda's init phase; `mlfn worker` before it polls),
# not inside the first job.
preload()

# Report failures per message (also when all fail) so SQS redelivers exactly those.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def train_one(record: SQSRecord) -> int:
    job = Job.of(json.loads(record.body))
    with visibility_heartbeat(record.receipt_handle, record.event_source_arn, context.settings()):
        context.lifecycle().run_job(job)
    return job.experiment_id


def handler(event: dict[str, Any], lambda_context: Any) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=train_one, processor=processor,
                                    context=lambda_context)
