"""GET /model_classes: the catalog with hyperparameters (type, default, range) and tuning grids."""

from typing import Any

from common import context
from common.web.request import Request
from common.web.routing import Route


def model_classes(request: Request) -> Any:
    """The catalog: each class's tasks, hyperparameters (type, default, range) and tuning grid."""
    return context.lifecycle().model_classes()


ROUTES = [Route("GET", "/model_classes", model_classes, work="inline", tags=("models",))]
