"""POST /deploy/{experiment_id}: point the model at a succeeded experiment (rollback = redeploy)."""

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from common import context
from common.web.app import ExperimentId, create_app, json_response, lambda_handler

router = APIRouter(tags=["experiments"])


@router.post("/deploy/{experiment_id}")
async def deploy(experiment_id: ExperimentId, model: str | None = Query(None, description="if given, the experiment must be one of this model's")):  # type: ignore[no-untyped-def]
    life = context.lifecycle()
    return json_response(await run_in_threadpool(lambda: life.deploy(experiment_id, model=model)))


app = create_app([router])
handler = lambda_handler(app)
