"""POST /forward?model=NAME: one JSON object of feature -> value, or an image as multipart field
`image` (extra parameters as headers: X-Top-K), answered with one prediction.

`handler` is the Lambda entry point. It answers JSON forwards straight from the API Gateway event
and hands everything else (images, CORS, a missing `model`, other routes) to the FastAPI router in
`api.py` through Mangum, so a cold start does not import FastAPI for the common case
(`common/web/lambda_http.py`). `router` and `app` are that FastAPI side, loaded on first use.
"""

from typing import Any

from common import context
from common.payloads import check_json_type, parse_json
from common.settings import Settings
from common.web import rules
from common.web.lambda_http import HttpRequest, LambdaRoute, framework_side


def forward_json(request: HttpRequest, settings: Settings) -> Any:
    """The JSON branch of `api.forward`, in the same order of checks."""
    check_json_type(request.media_type)
    rules.check_received_length(settings.max_body_bytes, len(request.body))
    return context.serving().forward(request.one("model") or "", parse_json(request.body))


handler = LambdaRoute(
    "POST", "/forward", forward_json, fallback="functions.forward.api:handler", query=("model",),
    accepts=lambda request: request.media_type != "multipart/form-data",
)

__getattr__ = framework_side("functions.forward.api")
