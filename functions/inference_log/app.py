"""GET /inference_log[?model=NAME&limit=N]: recent monitored calls, newest first (local/compose)."""

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from common import context
from common.web.app import create_app, json_response, lambda_handler

router = APIRouter(tags=["monitoring"])


@router.get("/inference_log")
async def inference_log(model: str | None = Query(None), limit: int = Query(100)):  # type: ignore[no-untyped-def]
    return json_response(await run_in_threadpool(context.serving().inference_log, model, limit))


app = create_app([router])
handler = lambda_handler(app)
