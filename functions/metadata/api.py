"""GET /metadata?model=NAME: the deployed model's provenance, read from the ONNX file itself.

The FastAPI router of the route (mounted by the local server) and its Mangum handler, which the
Lambda entry point in `app.py` falls back to for every request it does not answer itself."""

from fastapi import APIRouter, Query

from common import context
from common.web.app import create_app, json_response, lambda_handler

router = APIRouter(tags=["models"])


@router.get("/metadata")
async def metadata(model: str = Query(..., description="model name")):  # type: ignore[no-untyped-def]
    return json_response(context.serving().metadata(model))


app = create_app([router])
handler = lambda_handler(app)
