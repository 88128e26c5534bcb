"""PUT /add_data?model=NAME: labelled rows (JSON records, CSV body, multipart field `file`) or,
for image models, a labelled zip of images."""

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from common import context
from common.web import docs
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import upload

router = APIRouter(tags=["data"])


@router.put("/add_data", openapi_extra=docs.body(
    {"records": [{"tenure": 8, "charges": 66.0, "plan": "basic", "churned": "yes"}, {"tenure": 70, "charges": 19.9, "plan": "premium", "churned": "no"}]},
    "tenure,charges,plan,churned\n1,95.5,basic,yes\n40,20.0,premium,no\n", zip_upload=True,
    multipart_field="file"))
async def add_data(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    kind, data = await upload(request, context.backends().settings)
    return json_response(await run_in_threadpool(context.lifecycle().add_frame_or_archive, model, kind, data))


app = create_app([router])
handler = lambda_handler(app)
