"""GET /health: liveness and which backends this instance uses."""

from typing import Any

from common import context
from common.web.request import Request
from common.web.routing import Route


def health(request: Request) -> Any:
    """Liveness, which backends this instance uses, and its request limits (no API key
    needed): a body over `max_body_bytes` goes through POST /uploads instead."""
    settings = context.settings()
    return {
        "status": "ok",
        "object_store": settings.object_store,
        "experiment_store": settings.experiment_store,
        "job_queue": settings.job_queue,
        "max_body_bytes": settings.max_body_bytes,
        "max_batch_rows": settings.max_batch_rows,
    }


ROUTES = [Route("GET", "/health", health, work="inline", public=True, tags=("service",))]
