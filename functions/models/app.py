"""GET /models: every model with its task, target, feature schema and deployed experiment."""

from fastapi import APIRouter

from common import context
from common.web.app import create_app, json_response, lambda_handler

router = APIRouter(tags=["models"])


@router.get("/models")
async def list_models():  # type: ignore[no-untyped-def]
    return json_response(context.serving().list_models())


app = create_app([router])
handler = lambda_handler(app)
