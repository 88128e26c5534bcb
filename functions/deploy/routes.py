"""POST /deploy/{experiment_id}: point the model at a succeeded experiment (rollback = redeploy)."""

from typing import Any

from common import context
from common.web.request import Request
from common.web.routing import Route, experiment_id, model_query


def deploy(request: Request, experiment_id: int, model: str | None) -> Any:
    """Point the model at a succeeded experiment (a rollback is a deploy of an earlier one)."""
    return context.lifecycle().deploy(experiment_id, model=model)


ROUTES = [Route("POST", "/deploy/{experiment_id}", deploy,
                (experiment_id(), model_query(required=False)), tags=("experiments",),
                idempotent=True)]
