"""GET /datasets?model=NAME: the model's dataset versions and their parts; DELETE
/datasets/parts/{version}?model=NAME: remove a part (a new dataset version without it)."""

from typing import Any

from common import context
from common.web.request import Request
from common.web.routing import MAX_ID, Param, Route, model_query


def datasets(request: Request, model: str) -> Any:
    """The model's current dataset version, every part (rows, source, when, the version that
    removed it) and every version with the parts it contains and the experiments trained on it."""
    return context.lifecycle().datasets(model)


def remove_part(request: Request, version: int, model: str) -> Any:
    """Remove the part added in dataset version `version`: a new dataset version without it.
    Earlier versions keep it (their experiments stay reproducible); 404 for an unknown part,
    409 if it was removed already."""
    return context.lifecycle().remove_part(model, version)


ROUTES = [
    Route("GET", "/datasets", datasets, (model_query(),), tags=("data",)),
    Route("DELETE", "/datasets/parts/{version}", remove_part,
          (Param("version", int, where="path", minimum=1, maximum=MAX_ID,
                 description="the part: the dataset version that added it"), model_query()),
          idempotent=True, tags=("data",)),
]
