"""Safe rollouts of a model: GET /rollout (its canary, shadow and their history), DELETE
/canary and /shadow (end one), POST /feedback (true outcomes of served requests)
and GET /live_metrics (each side's metrics on those outcomes), GET /drift (how far the served
rows moved from the training rows). A canary or shadow starts with
POST /deploy/{experiment_id}?canary=PERCENT or ?shadow=true."""

from typing import Any

from common import context
from common.rollouts import parse_feedback, parse_since
from common.web import docs
from common.web.bodies import upload
from common.web.request import Request
from common.web.routing import Param, Route, model_query

FEEDBACK = [{"request_id": "3f0c1e9a5b2d4c6e8f7a1b2c3d4e5f60", "label": "setosa"},
            {"request_id": "9a8b7c6d5e4f30211a2b3c4d5e6f7a8b", "row": 2, "label": "virginica"}]


def rollout(request: Request, model: str) -> Any:
    """The model's deployed experiment, its canary (share, guard, since when) and shadow, and
    the canaries that ended (promoted, ended by request, or rolled back by the guard)."""
    return context.lifecycle().rollouts().state(model)


def end_canary(request: Request, model: str) -> Any:
    """End the canary: the deployed experiment answers every request again (404: no canary)."""
    return context.lifecycle().rollouts().end_canary(model)


def end_shadow(request: Request, model: str) -> Any:
    """Stop shadow scoring (404: no shadow)."""
    return context.lifecycle().rollouts().end_shadow(model)


def feedback(request: Request, model: str) -> Any:
    """True outcomes of served predictions, joined to them by the request id every answer
    carries (`X-Request-Id`; `row`: the record of a batch request, 0 by default). JSON list or
    CSV `request_id,label[,row]`; a later outcome of the same request and row replaces it."""
    kind, data = upload(request)
    return context.lifecycle().rollouts().feedback(model, parse_feedback(kind, data))


def live_metrics(request: Request, model: str, since: str | None) -> Any:
    """Per experiment and role (champion, canary, shadow): requests, p99 latency and the
    metrics of the predictions that received feedback; how often the shadow agreed."""
    return context.lifecycle().rollouts().live_metrics(model, parse_since(since))


def drift(request: Request, model: str, experiment: int | None, since: str | None) -> Any:
    """The population stability index (PSI) of each feature and of the predictions: the rows an
    experiment (the deployed one by default) served since `since` (24 h ago by default) against
    its training data's profile. Above the threshold (0.25) over enough rows: drifted."""
    return context.serving().drift(model, experiment, parse_since(since))


ROUTES = [
    Route("GET", "/rollout", rollout, (model_query(),), tags=("rollouts",)),
    Route("DELETE", "/canary", end_canary, (model_query(),), idempotent=True,
          tags=("rollouts",)),
    Route("DELETE", "/shadow", end_shadow, (model_query(),), idempotent=True,
          tags=("rollouts",)),
    Route("POST", "/feedback", feedback, (model_query(),), idempotent=True, tags=("rollouts",),
          openapi=docs.body(FEEDBACK, "request_id,label\n3f0c1e9a5b2d4c6e8f7a1b2c3d4e5f60,setosa\n")),
    Route("GET", "/live_metrics", live_metrics,
          (model_query(), Param("since", str, required=False,
                                description="ISO 8601 time: only calls served since then")),
          tags=("rollouts",)),
    Route("GET", "/drift", drift,
          (model_query(),
           Param("experiment", int, required=False, minimum=1,
                 description="the experiment whose served rows to compare (default: the deployed one)"),
           Param("since", str, required=False,
                 description="ISO 8601 time: only rows served since then (default: 24 h ago)")),
          tags=("rollouts", "monitoring")),
]
