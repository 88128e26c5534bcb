"""GET /model_classes: the catalog with hyperparameters (type, default, range) and tuning grids."""

from fastapi import APIRouter

from common import context
from common.web.app import create_app, json_response, lambda_handler

router = APIRouter(tags=["models"])


@router.get("/model_classes")
async def model_classes():  # type: ignore[no-untyped-def]
    return json_response(context.lifecycle().model_classes())


app = create_app([router])
handler = lambda_handler(app)
