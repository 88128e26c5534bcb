"""POST /forward_batch?model=NAME: {"records": [...]}, a CSV with a header row, or a zip of
images (application/zip or multipart field `file`); extra parameters as headers: X-Top-K."""

from typing import Any

from common import context
from common.web import docs
from common.web.bodies import top_k, upload
from common.web.request import Request
from common.web.routing import Route, model_query


def forward_batch(request: Request, model: str) -> Any:
    """Predictions in input order: {"records": [...]}, a CSV with a header row, or a zip of
    images (application/zip or multipart field `file`).

    X-Top-K, a positive integer, keeps the k most probable classes of each row's
    `probabilities`, most probable first, for classification models whatever the body (JSON,
    CSV or zip). 0 or a non-integer is a 400, and so is X-Top-K on a tabular regression model,
    which has no classes to rank.
    """
    k = top_k(request)
    kind, data = upload(request)
    return context.serving().forward_batch_upload(model, kind, data, k)


ROUTES = [Route("POST", "/forward_batch", forward_batch, (model_query(),), tags=("predict",),
                openapi=docs.body({"records": [docs.IRIS]}, docs.IRIS_CSV, zip_upload=True,
                                  multipart_field="file"))]
