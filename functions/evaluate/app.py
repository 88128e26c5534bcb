"""POST /evaluate?model=NAME: labelled records (JSON, CSV) or a labelled zip of images, scored by
the deployed model."""

from fastapi import APIRouter, Query, Request

from common import context
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import upload

router = APIRouter(tags=["predict"])


@router.post("/evaluate")
async def evaluate(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    serving = context.serving()
    kind, data = await upload(request, serving.settings)
    return json_response(serving.evaluate_upload(model, kind, data))


app = create_app([router])
handler = lambda_handler(app)
