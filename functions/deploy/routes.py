"""POST /deploy/{experiment_id}: point the model at a succeeded experiment (rollback = redeploy),
or start it as a canary (``?canary=PERCENT[&guard=true]``) or a shadow (``?shadow=true``)."""

from typing import Any

from common import context
from common.errors import BadRequest
from common.web.request import Request
from common.web.routing import Param, Route, experiment_id, model_query


def deploy(request: Request, experiment_id: int, model: str | None, canary: int | None,
           guard: bool | None, shadow: bool | None, sample: int | None) -> Any:
    """Point the model at a succeeded experiment (a rollback is a deploy of an earlier one).

    With `canary=PERCENT` the experiment answers that share of the requests instead (chosen by
    request id: a retried request lands on the same side) while the deployed one answers the
    rest; `guard=true` ends the canary by itself when it does worse than the champion. With
    `shadow=true` it scores the same requests (those a canary answers too), after the answer,
    and its answers are only logged; `sample=PERCENT` has it score only that share of them
    (chosen by request id). Deploying the canary or shadow experiment promotes it."""
    if canary is not None and shadow:
        raise BadRequest("give either 'canary' or 'shadow', not both: an experiment is one or "
                         "the other (a model may have one of each)")
    if guard is not None and canary is None:
        raise BadRequest("query parameter 'guard' applies to a canary; add ?canary=PERCENT")
    if sample is not None and not shadow:
        raise BadRequest("query parameter 'sample' applies to a shadow; add ?shadow=true")
    if canary is not None:
        return context.lifecycle().rollouts().start_canary(experiment_id, canary, bool(guard),
                                                           model=model)
    if shadow:
        return context.lifecycle().rollouts().start_shadow(
            experiment_id, model=model, sample=100.0 if sample is None else float(sample))
    return context.lifecycle().deploy(experiment_id, model=model)


ROUTES = [Route("POST", "/deploy/{experiment_id}", deploy,
                (experiment_id(), model_query(required=False),
                 Param("canary", int, required=False, minimum=1, maximum=99,
                       description="start the experiment as a canary answering this percent "
                                   "of the requests"),
                 Param("guard", bool, required=False,
                       description="with canary: end it automatically when it does worse than "
                                   "the champion (errors, p99 latency, live metric)"),
                 Param("shadow", bool, required=False,
                       description="start the experiment as a shadow: it scores the deployed "
                                   "model's requests and its answers are only logged"),
                 Param("sample", int, required=False, minimum=1, maximum=100,
                       description="with shadow: the percent of the requests it scores "
                                   "(default 100)")),
                tags=("experiments",), idempotent=True)]
