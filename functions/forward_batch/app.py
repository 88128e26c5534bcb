"""POST /forward_batch?model=NAME: {"records": [...]}, a CSV with a header row, or a zip of
images (application/zip or multipart field `file`).

`handler` is the Lambda entry point: it answers bodies sent as JSON, CSV or zip straight from the
API Gateway event and hands everything else (multipart uploads, CORS, a missing `model`, other
routes) to the FastAPI router in `api.py` through Mangum (`common/web/lambda_http.py`).
"""

from typing import Any

from common import context
from common.payloads import top_k_of, upload_format
from common.settings import Settings
from common.web import rules
from common.web.lambda_http import HttpRequest, LambdaRoute, framework_side


def forward_batch_body(request: HttpRequest, settings: Settings) -> Any:
    """The non-multipart branch of `api.forward_batch`, in the same order of checks."""
    rules.check_received_length(settings.max_body_bytes, len(request.body))
    kind = upload_format(request.media_type)
    top_k = top_k_of(request.headers.get("x-top-k"))
    return context.serving().forward_batch_upload(request.one("model") or "", kind, request.body,
                                                  top_k)


handler = LambdaRoute(
    "POST", "/forward_batch", forward_batch_body, fallback="functions.forward_batch.api:handler",
    query=("model",), accepts=lambda request: request.media_type != "multipart/form-data",
)

__getattr__ = framework_side("functions.forward_batch.api")
