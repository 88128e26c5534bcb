"""GET /metrics/{experiment_id}: status, hyperparameters and holdout metrics of one experiment."""

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from common import context
from common.web.app import ExperimentId, create_app, json_response, lambda_handler

router = APIRouter(tags=["experiments"])


@router.get("/metrics/{experiment_id}")
async def metrics(experiment_id: ExperimentId, model: str | None = Query(None, description="if given, the experiment must be one of this model's")):  # type: ignore[no-untyped-def]
    return json_response(await run_in_threadpool(context.lifecycle().metrics, experiment_id, model))


app = create_app([router])
handler = lambda_handler(app)
