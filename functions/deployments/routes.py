"""GET /deployments?model=NAME: the deploy history, newest first."""

from typing import Any

from common import context
from common.web.request import Request
from common.web.routing import Route, model_query


def deployments(request: Request, model: str) -> Any:
    """The deploy history, newest first."""
    return context.lifecycle().deployments(model)


ROUTES = [Route("GET", "/deployments", deployments, (model_query(),), tags=("experiments",))]
