"""GET /deployments?model=NAME: the deploy history, newest first."""

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from common import context
from common.web.app import create_app, json_response, lambda_handler

router = APIRouter(tags=["experiments"])


@router.get("/deployments")
async def deployments(model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    return json_response(await run_in_threadpool(context.lifecycle().deployments, model))


app = create_app([router])
handler = lambda_handler(app)
