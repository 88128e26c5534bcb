"""GET /experiments?model=NAME[&status=S] (newest first); DELETE /experiments/{id}."""

from typing import Any

from common import context
from common.web.request import Reply, Request
from common.web.routing import Param, Route, experiment_id, model_query


def experiments(request: Request, model: str, status: str | None) -> Any:
    """A model's experiments, newest first, optionally only those with one status."""
    return context.lifecycle().experiments(model, status)


def delete_experiment(request: Request, experiment_id: int, model: str | None) -> Reply:
    """Delete an experiment and its files; 409 for the deployed one or one queued or running."""
    context.lifecycle().delete_experiment(experiment_id, model)
    return Reply(204, b"", None)


ROUTES = [
    Route("GET", "/experiments", experiments,
          (model_query(), Param("status", required=False,
                                description="queued, running, succeeded or failed")),
          tags=("experiments",)),
    Route("DELETE", "/experiments/{experiment_id}", delete_experiment,
          (experiment_id(), model_query(required=False)), status=204, tags=("experiments",)),
]
