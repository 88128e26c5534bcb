"""PUT /retrain?model=NAME: validate, record the experiment as queued, answer 202 at once."""

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from common import context
from common.web import docs
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import read_json

router = APIRouter(tags=["experiments"])


@router.put("/retrain", status_code=202, openapi_extra=docs.body(
    {"model_class": "random_forest", "hyperparameters": {"n_estimators": 51}, "tune": False,
     "deploy": "if_better"}))
async def retrain(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    lifecycle = context.lifecycle()
    body = await read_json(request, lifecycle.backends.settings)
    exp = await run_in_threadpool(lifecycle.retrain, model, body)
    return json_response({"experiment_id": exp.id, "status": exp.status.value}, 202)


app = create_app([router])
handler = lambda_handler(app)
