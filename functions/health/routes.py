"""GET /health: liveness and which backends this instance uses."""

from typing import Any

from common import context
from common.web.request import Request
from common.web.routing import Route


def health(request: Request) -> Any:
    """Liveness and which backends this instance uses (no API key needed)."""
    settings = context.settings()
    return {
        "status": "ok",
        "object_store": settings.object_store,
        "experiment_store": settings.experiment_store,
        "job_queue": settings.job_queue,
    }


ROUTES = [Route("GET", "/health", health, work="inline", public=True, tags=("service",))]
