"""GET /models lists every model; POST /models creates one."""

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from common import context
from common.web import docs
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import read_json

router = APIRouter(tags=["models"])


@router.get("/models")
async def list_models():  # type: ignore[no-untyped-def]
    return json_response(await run_in_threadpool(context.serving().list_models))


@router.post("/models", status_code=201, openapi_extra=docs.body(
    {"name": "churn", "task": "classification", "target": "churned"}))
async def create_model(request: Request):  # type: ignore[no-untyped-def]
    """Body: {"name", "task": "classification"|"regression", "target"}; 409 if the name exists."""
    lifecycle = context.lifecycle()
    body = await read_json(request, lifecycle.backends.settings)
    record = await run_in_threadpool(lifecycle.create_model, body)
    return json_response(record.model_dump(mode="json"), 201)


app = create_app([router])
handler = lambda_handler(app)
