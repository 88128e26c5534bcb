"""POST /deploy/{experiment_id}: point the model at a succeeded experiment (rollback = redeploy)."""

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from common import context
from common.web.app import ExperimentId, create_app, json_response, lambda_handler

router = APIRouter(tags=["experiments"])


@router.post("/deploy/{experiment_id}")
async def deploy(experiment_id: ExperimentId):  # type: ignore[no-untyped-def]
    return json_response(await run_in_threadpool(context.lifecycle().deploy, experiment_id))


app = create_app([router])
handler = lambda_handler(app)
