"""GET /inference_log[?model=NAME&limit=N]: recent monitored calls, newest first (local/compose)."""

from typing import Any

from common import context
from common.web.request import Request
from common.web.routing import Param, Route


def inference_log(request: Request, model: str | None, limit: int) -> Any:
    """Recent monitored calls, newest first (where the experiment store is SQL)."""
    return context.serving().inference_log(model, limit)


ROUTES = [Route("GET", "/inference_log", inference_log,
                (Param("model", required=False, description="only this model's calls"),
                 Param("limit", int, required=False, default=100,
                       description="how many rows (1 to 10000)")),
                tags=("monitoring",))]
