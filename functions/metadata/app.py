"""GET /metadata?model=NAME: the deployed model's provenance, read from the ONNX file itself.

`handler` is the Lambda entry point: it answers `GET /metadata?model=NAME` straight from the API
Gateway event and hands everything else to the FastAPI router in `api.py` through Mangum
(`common/web/lambda_http.py`).
"""

from typing import Any

from common import context
from common.settings import Settings
from common.web.lambda_http import HttpRequest, LambdaRoute, framework_side


def metadata(request: HttpRequest, settings: Settings) -> Any:
    return context.serving().metadata(request.one("model") or "")


handler = LambdaRoute("GET", "/metadata", metadata, fallback="functions.metadata.api:handler",
                      query=("model",))

__getattr__ = framework_side("functions.metadata.api")
