"""POST /forward?model=NAME: one JSON object of feature -> value, or an image as multipart field
`image` (extra parameters as headers: X-Top-K), answered with one prediction."""

from typing import Any

from common import context
from common.web import docs
from common.web.bodies import image_upload, read_json, top_k
from common.web.request import Request
from common.web.routing import Route, model_query


def forward(request: Request, model: str) -> Any:
    """One prediction: a JSON object of feature -> value, or an image as multipart field
    `image` (header X-Top-K: how many classes to return)."""
    serving = context.serving()
    if request.media_type == "multipart/form-data":
        return serving.forward_image(model, image_upload(request), top_k(request))
    return serving.forward(model, read_json(request))


ROUTES = [Route("POST", "/forward", forward, (model_query(),), tags=("predict",),
                openapi=docs.body(docs.IRIS, multipart_field="image"))]
