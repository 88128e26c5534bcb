"""POST /forward?model=NAME: one JSON object of feature -> value, or an image as multipart field
`image` (extra parameters as headers: X-Top-K), answered with one prediction.

The FastAPI router of the route (mounted by the local server) and its Mangum handler, which the
Lambda entry point in `app.py` falls back to for every request it does not answer itself."""

from fastapi import APIRouter, Query, Request

from common import context
from common.web import docs
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import image_upload, media_type, read_json, top_k_header

router = APIRouter(tags=["predict"])


@router.post("/forward", openapi_extra=docs.body(docs.IRIS, multipart_field="image"))
async def forward(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    serving = context.serving()
    if media_type(request) == "multipart/form-data":
        data = await image_upload(request, serving.settings)
        return json_response(serving.forward_image(model, data, top_k_header(request)))
    record = await read_json(request, serving.settings)
    return json_response(serving.forward(model, record))


app = create_app([router])
handler = lambda_handler(app)
