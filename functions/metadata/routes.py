"""GET /metadata?model=NAME: the deployed model's provenance, read from the ONNX file itself."""

from typing import Any

from common import context
from common.web.request import Request
from common.web.routing import Route, model_query


def metadata(request: Request, model: str) -> Any:
    """The deployed model's provenance, read from the ONNX file itself."""
    return context.serving().metadata(model)


ROUTES = [Route("GET", "/metadata", metadata, (model_query(),), tags=("models",))]
