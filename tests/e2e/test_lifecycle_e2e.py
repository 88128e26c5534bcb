"""The whole life cycle through the handlers, embedded (local + SQLite + in-process queue) and on
AWS emulation (S3 + DynamoDB + SQS on a moto server, drained through the worker handler)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from functions.add_data import handler as add_data
from functions.deploy import handler as deploy
from functions.deployments import handler as deployments
from functions.evaluate import handler as evaluate
from functions.experiments import handler as experiments
from functions.forward import handler as forward
from functions.metadata import handler as metadata
from functions.metrics import handler as metrics
from functions.models import handler as models
from functions.retrain import handler as retrain
from tests.apigw import invoke
from tests.lifecycle_data import churn_rows, to_csv


@pytest.mark.parametrize("backend", ["embedded", "on_aws"])
def test_full_life_cycle(backend: str, request: pytest.FixtureRequest) -> None:
    drain: Callable[[], None] = request.getfixturevalue(backend)
    rows = churn_rows(300)

    created = invoke(models.handler, "v1", "POST", "/models", None,
                     {"name": "churn", "task": "classification", "target": "churned"})
    assert created.status == 201, created.body
    again = invoke(models.handler, "v2", "POST", "/models", None,
                   {"name": "churn", "task": "classification", "target": "churned"})
    assert again.status == 409

    first = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "churn"},
                   to_csv(rows[:200]), {"Content-Type": "text/csv"})
    assert first.status == 200, first.body
    assert first.json() == {"model": "churn", "rows_added": 200, "rows_total": 200, "dataset_version": 1}
    second = invoke(add_data.handler, "v2", "PUT", "/add_data", {"model": "churn"}, {"records": rows[200:]})
    assert second.status == 200, second.body
    assert second.json()["rows_total"] == 300 and second.json()["dataset_version"] == 2

    ids = []
    for body in ({"model_class": "random_forest", "hyperparameters": {"n_estimators": 31}},
                 {"model_class": "logistic_regression", "hyperparameters": {"C": 0.5}}):
        queued = invoke(retrain.handler, "v1", "PUT", "/retrain", {"model": "churn"}, body)
        assert queued.status == 202, queued.body
        assert queued.json()["status"] == "queued"
        ids.append(queued.json()["experiment_id"])
    rf, lr = ids
    assert rf != lr
    drain()

    for exp_id, cls in ((rf, "random_forest"), (lr, "logistic_regression")):
        got = invoke(metrics.handler, "v2", "GET", f"/metrics/{exp_id}")
        assert got.status == 200, got.body
        doc = got.json()
        assert doc["status"] == "succeeded", doc
        assert doc["model_class"] == cls and doc["dataset_version"] == 2 and doc["rows"] == 300
        assert set(doc["metrics"]) >= {"accuracy", "f1_macro", "precision_macro", "recall_macro",
                                       "roc_auc", "log_loss"}
        assert doc["metrics"]["accuracy"] > 0.7
        for key in ("created_at", "started_at", "finished_at"):
            assert doc[key]
        assert doc["error"] is None

    row = {k: v for k, v in rows[0].items() if k != "churned"}
    assert invoke(forward.handler, "v1", "POST", "/forward", {"model": "churn"}, row).status == 404

    d1 = invoke(deploy.handler, "v1", "POST", f"/deploy/{rf}")
    assert d1.status == 200 and d1.json() == {"model": "churn", "deployed": rf, "previous": None}
    answer = invoke(forward.handler, "v2", "POST", "/forward", {"model": "churn"}, row).json()
    assert answer["experiment_id"] == rf and answer["prediction"] in ("yes", "no")
    assert invoke(metadata.handler, "v1", "GET", "/metadata", {"model": "churn"}).json()["experiment_id"] == rf

    d2 = invoke(deploy.handler, "v2", "POST", f"/deploy/{lr}")
    assert d2.json() == {"model": "churn", "deployed": lr, "previous": rf}
    assert invoke(forward.handler, "v1", "POST", "/forward", {"model": "churn"}, row).json()["experiment_id"] == lr
    meta = invoke(metadata.handler, "v2", "GET", "/metadata", {"model": "churn"}).json()
    assert meta["experiment_id"] == lr and meta["model_class"] == "logistic_regression"

    rollback = invoke(deploy.handler, "v1", "POST", f"/deploy/{rf}")
    assert rollback.json() == {"model": "churn", "deployed": rf, "previous": lr}
    history = invoke(deployments.handler, "v1", "GET", "/deployments", {"model": "churn"}).json()
    assert [(h["experiment_id"], h["previous"]) for h in history] == [(rf, lr), (lr, rf), (rf, None)]

    labelled = invoke(evaluate.handler, "v2", "POST", "/evaluate", {"model": "churn"},
                      to_csv(rows[:50]), {"Content-Type": "text/csv"})
    assert labelled.status == 200, labelled.body
    assert labelled.json()["experiment_id"] == rf and labelled.json()["n"] == 50
    assert labelled.json()["metrics"]["accuracy"] > 0.7

    listed = invoke(experiments.handler, "v1", "GET", "/experiments", {"model": "churn"}).json()
    assert [e["experiment_id"] for e in listed] == [lr, rf]
    assert invoke(experiments.handler, "v1", "DELETE", f"/experiments/{rf}").status == 409
    assert invoke(experiments.handler, "v2", "DELETE", f"/experiments/{lr}").status == 204
    assert invoke(metrics.handler, "v1", "GET", f"/metrics/{lr}").status == 404
    assert invoke(deploy.handler, "v1", "POST", f"/deploy/{lr}").status == 404
    assert json.loads(invoke(forward.handler, "v1", "POST", "/forward", {"model": "churn"}, row).body)[
        "experiment_id"] == rf
