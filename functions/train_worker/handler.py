"""The training worker: consumes the retrain SQS queue and reports partial batch failures.

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
from common.jobs import visibility_heartbeat

# Report failures per message (also when all fail) so SQS redelivers exactly those.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def train_one(record: SQSRecord) -> int:
    experiment_id = int(json.loads(record.body)["experiment_id"])
    with visibility_heartbeat(record.receipt_handle, record.event_source_arn, context.settings()):
        context.lifecycle().run_experiment(experiment_id)
    return experiment_id


def handler(event: dict[str, Any], lambda_context: Any) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=train_one, processor=processor,
                                    context=lambda_context)
