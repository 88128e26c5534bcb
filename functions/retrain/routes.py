"""PUT /retrain?model=NAME: validate, record the experiment as queued, answer 202 at once."""

from typing import Any

from common import context
from common.web import docs
from common.web.bodies import read_json
from common.web.request import Request
from common.web.routing import Route, model_query


def retrain(request: Request, model: str) -> Any:
    """Validate the request, record the experiment as queued and answer 202 at once."""
    exp = context.lifecycle().retrain(model, read_json(request))
    return {"experiment_id": exp.id, "status": exp.status.value}


ROUTES = [Route("PUT", "/retrain", retrain, (model_query(),), status=202, idempotent=True, tags=("experiments",),
                openapi=docs.body({"model_class": "random_forest",
                                   "hyperparameters": {"n_estimators": 51}, "tune": False,
                                   "deploy": "if_better"}))]
