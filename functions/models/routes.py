"""GET /models lists every model; POST /models creates one; DELETE /models/{name} deletes one
with its data, experiments, deployments and files."""

from typing import Any

from common import context
from common.web import docs
from common.web.bodies import read_json
from common.web.request import Reply, Request
from common.web.routing import Param, Route


def list_models(request: Request) -> Any:
    """Every model with its schema, deployed experiment and dataset size."""
    return context.serving().list_models()


def create_model(request: Request) -> Any:
    """Body: {"name", "task": "classification"|"regression", "target"}; 409 if the name exists."""
    record = context.lifecycle().create_model(read_json(request))
    return record.model_dump(mode="json")


def delete_model(request: Request, name: str) -> Reply:
    """Delete a model with its data, experiments, deployments and files; 409 while one of its
    experiments is queued or running (nothing is deleted then)."""
    context.lifecycle().delete_model(name)
    return Reply(204, b"", None)


ROUTES = [
    Route("GET", "/models", list_models, tags=("models",)),
    Route("POST", "/models", create_model, status=201, idempotent=True, tags=("models",),
          openapi=docs.body({"name": "churn", "task": "classification", "target": "churned"})),
    Route("DELETE", "/models/{name}", delete_model,
          (Param("name", where="path", description="model name"),), status=204, idempotent=True,
          tags=("models",)),
]
