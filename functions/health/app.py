"""GET /health: liveness and which backends this instance uses."""

from fastapi import APIRouter

from common import context
from common.web.app import create_app, json_response, lambda_handler

router = APIRouter(tags=["service"])


@router.get("/health")
async def health():  # type: ignore[no-untyped-def]
    settings = context.backends().settings
    return json_response(
        {
            "status": "ok",
            "object_store": settings.object_store,
            "experiment_store": settings.experiment_store,
            "job_queue": settings.job_queue,
        }
    )


app = create_app([router])
handler = lambda_handler(app)
