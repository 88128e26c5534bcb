"""GET /experiments?model=NAME[&status=S] (newest first); DELETE /experiments/{id}."""

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from common import context
from common.web.app import ExperimentId, create_app, json_response, lambda_handler

router = APIRouter(tags=["experiments"])


@router.get("/experiments")
async def experiments(model: str = Query(...), status: str | None = Query(None)):  # type: ignore[no-untyped-def]
    return json_response(await run_in_threadpool(context.lifecycle().experiments, model, status))


@router.delete("/experiments/{experiment_id}", status_code=204)
async def delete_experiment(experiment_id: ExperimentId, model: str | None = Query(None, description="if given, the experiment must be one of this model's")) -> Response:
    await run_in_threadpool(context.lifecycle().delete_experiment, experiment_id, model)
    return Response(status_code=204)


app = create_app([router])
handler = lambda_handler(app)
