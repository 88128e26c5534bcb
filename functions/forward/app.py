"""POST /forward?model=NAME: one JSON object of feature -> value, one prediction."""

from fastapi import APIRouter, Query, Request

from common import context
from common.web.app import create_app, json_response, lambda_handler
from common.web.bodies import read_json

router = APIRouter(tags=["predict"])


@router.post("/forward")
async def forward(request: Request, model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    serving = context.serving()
    record = await read_json(request, serving.settings)
    return json_response(serving.forward(model, record))


app = create_app([router])
handler = lambda_handler(app)
