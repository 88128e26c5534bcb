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
    `image` (header X-Top-K: how many classes to return).

    X-Top-K, a positive integer, keeps the k most probable classes of a classification model's
    `probabilities`, most probable first, for tabular and image models alike (without it: every
    class, in the model's class order for tabular models). 0 or a non-integer is a 400, and so
    is X-Top-K on a tabular regression model, which has no classes to rank.
    """
    serving = context.serving()
    k = top_k(request)
    if request.media_type == "multipart/form-data":
        return serving.forward_image(model, image_upload(request), k)
    return serving.forward(model, read_json(request), k)


ROUTES = [Route("POST", "/forward", forward, (model_query(),), tags=("predict",),
                openapi=docs.body(docs.IRIS, multipart_field="image"))]
