"""PUT /add_data?model=NAME: labelled rows (JSON records, CSV body, multipart field `file`) or,
for image models, a labelled zip of images."""

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from common import context
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import upload

router = APIRouter(tags=["data"])


@router.put("/add_data")
async def add_data(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    kind, data = await upload(request, context.backends().settings)
    return json_response(await run_in_threadpool(context.lifecycle().add_frame_or_archive, model, kind, data))


app = create_app([router])
handler = lambda_handler(app)
