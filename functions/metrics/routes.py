"""GET /metrics/{experiment_id}: status, hyperparameters and holdout metrics of one experiment."""

from typing import Any

from common import context
from common.web.request import Request
from common.web.routing import Route, experiment_id, model_query


def metrics(request: Request, experiment_id: int, model: str | None) -> Any:
    """Status, hyperparameters, holdout metrics and files of one experiment."""
    return context.lifecycle().metrics(experiment_id, model)


ROUTES = [Route("GET", "/metrics/{experiment_id}", metrics,
                (experiment_id(), model_query(required=False)), tags=("experiments",))]
