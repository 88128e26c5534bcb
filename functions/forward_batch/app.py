"""POST /forward_batch?model=NAME: {"records": [...]} or a CSV with a header row."""

from fastapi import APIRouter, Query, Request

from common import context
from common.errors import BadRequest
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import csv_records, media_type, parse_json, read_body

router = APIRouter(tags=["predict"])


@router.post("/forward_batch")
async def forward_batch(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    serving = context.serving()
    kind = media_type(request)
    body = await read_body(request, serving.settings)
    if kind == "text/csv":
        records = csv_records(body, serving.load(model).features)
    elif kind in ("application/json", ""):
        doc = parse_json(body)
        if not isinstance(doc, dict) or "records" not in doc:
            raise BadRequest('body must be {"records": [{...}, ...]}')
        records = doc["records"]
    else:
        raise BadRequest(f"wrong content type {kind!r}; send application/json or text/csv")
    return json_response(serving.forward_batch(model, records))


app = create_app([router])
handler = lambda_handler(app)
