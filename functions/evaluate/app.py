"""POST /evaluate?model=NAME: labelled records (JSON, CSV) or a labelled zip of images, scored by
the deployed model."""

from fastapi import APIRouter, Query, Request

from common import context
from common.payloads import csv_records, records_of
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import upload

router = APIRouter(tags=["predict"])


@router.post("/evaluate")
async def evaluate(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    serving = context.serving()
    kind, data = await upload(request, serving.settings)
    if kind == "zip":
        return json_response(serving.evaluate_images(model, data))
    if kind == "csv":
        loaded = serving.tabular_model(model)
        records = csv_records(data, loaded.features, extra=(loaded.metadata["target"],))
    else:
        records = records_of(data)
    return json_response(serving.evaluate(model, records))


app = create_app([router])
handler = lambda_handler(app)
