"""POST /forward_batch?model=NAME: {"records": [...]}, a CSV with a header row, or a zip of
images (application/zip or multipart field `file`).

The FastAPI router of the route (mounted by the local server) and its Mangum handler, which the
Lambda entry point in `app.py` falls back to for every request it does not answer itself."""

from fastapi import APIRouter, Query, Request

from common import context
from common.web import docs
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import top_k_header, upload

router = APIRouter(tags=["predict"])


@router.post("/forward_batch", openapi_extra=docs.body(
    {"records": [docs.IRIS]}, docs.IRIS_CSV, zip_upload=True, multipart_field="file"))
async def forward_batch(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    serving = context.serving()
    kind, data = await upload(request, serving.settings)
    return json_response(serving.forward_batch_upload(model, kind, data, top_k_header(request)))


app = create_app([router])
handler = lambda_handler(app)
