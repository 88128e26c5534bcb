"""POST /evaluate?model=NAME: labelled records (JSON, CSV) or a labelled zip of images, scored by
the deployed model."""

from fastapi import APIRouter, Query, Request

from common import context
from common.web import docs
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import upload

router = APIRouter(tags=["predict"])


@router.post("/evaluate", openapi_extra=docs.body(
    {"records": [{**docs.IRIS, "species": "setosa"}]},
    docs.IRIS_CSV.replace("petal_width\n", "petal_width,species\n").replace("0.2\n", "0.2,setosa\n")
    .replace("2.3\n", "2.3,virginica\n"), zip_upload=True, multipart_field="file"))
async def evaluate(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    serving = context.serving()
    kind, data = await upload(request, serving.settings)
    return json_response(serving.evaluate_upload(model, kind, data))


app = create_app([router])
handler = lambda_handler(app)
