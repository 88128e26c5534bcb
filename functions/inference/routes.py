"""The Open Inference Protocol (v2) over REST: server and model metadata, health, readiness and
infer, as Triton, KServe and MLServer clients call them (tritonclient's binary tensors too).

Model = our model name; version = an experiment id; no version = the deployed experiment.
Errors are the protocol's ``{"error": "..."}``: 400 invalid request, 404 unknown model or
version, 503 unavailable.
"""

from typing import Any

from common import context
from common.oip import dataplane
from common.oip.rest import encode_infer, parse_infer
from common.web.request import Reply, Request
from common.web.routing import Param, Route

MODEL = Param("model", where="path", description="model name")
VERSION = Param("version", where="path", description="an experiment id of the model")
TAGS = ("inference protocol",)


def server_metadata(request: Request) -> Any:
    """The server's name, version and protocol extensions (binary_tensor_data)."""
    return dataplane.server_metadata()


def live(request: Request) -> Any:
    """200 while the server runs."""
    return {"live": True}


def ready(request: Request) -> Any:
    """200 when the server can reach its stores."""
    context.backends()
    return {"ready": True}


def model_metadata(request: Request, model: str, version: str | None = None) -> Any:
    """A model's inputs (one per feature column) and outputs (label and probabilities, or
    prediction); parameters.classes gives the order of the probabilities."""
    return context.dataplane().model_metadata(model, version)


def model_ready(request: Request, model: str, version: str | None = None) -> Any:
    """200 when the model (the deployed experiment, or the version) can serve."""
    return context.dataplane().model_ready(model, version)


def infer(request: Request, model: str, version: str | None = None) -> Reply:
    """Predictions for tensors sent as JSON or binary (Inference-Header-Content-Length)."""
    parsed = parse_infer(model, version, request.headers, request.body)
    body, headers = encode_infer(context.dataplane().infer(parsed), parsed)
    content_type = headers.pop("content-type")
    return Reply(200, body, content_type, headers)


def oip(method: str, path: str, endpoint: Any, params: tuple[Param, ...] = (), **kw: Any) -> Route:
    return Route(method, path, endpoint, params, tags=TAGS, error_style="oip", **kw)


ROUTES = [
    oip("GET", "/v2", server_metadata, work="inline"),
    oip("GET", "/v2/health/live", live, work="inline", public=True),
    oip("GET", "/v2/health/ready", ready, public=True),
    oip("GET", "/v2/models/{model}", model_metadata, (MODEL,)),
    oip("GET", "/v2/models/{model}/versions/{version}", model_metadata, (MODEL, VERSION)),
    oip("GET", "/v2/models/{model}/ready", model_ready, (MODEL,)),
    oip("GET", "/v2/models/{model}/versions/{version}/ready", model_ready, (MODEL, VERSION)),
    oip("POST", "/v2/models/{model}/infer", infer, (MODEL,)),
    oip("POST", "/v2/models/{model}/versions/{version}/infer", infer, (MODEL, VERSION)),
]
