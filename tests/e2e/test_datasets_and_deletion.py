"""Dataset versions as sets of parts and deleting a model, through API Gateway events (v1 and v2):
GET /datasets, DELETE /datasets/parts/{version}, DELETE /models/{name}; embedded (local files,
SQLite, in-process queue) and on AWS emulation (S3, DynamoDB, SQS on a moto server)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from common import context
from common.domain import ExperimentStatus
from common.errors import BadRequest
from common.training.datasets import load_dataset
from functions.add_data import handler as add_data
from functions.datasets import handler as datasets
from functions.deploy import handler as deploy
from functions.deployments import handler as deployments
from functions.experiments import handler as experiments
from functions.metadata import handler as metadata
from functions.metrics import handler as metrics
from functions.models import handler as models
from functions.retrain import handler as retrain
from tests.apigw import invoke, multipart
from tests.lifecycle_data import churn_rows, to_csv

CHURN = {"name": "churn", "task": "classification", "target": "churned"}
MODEL = {"model": "churn"}


def create_churn() -> None:
    assert invoke(models.handler, "v1", "POST", "/models", None, CHURN).status == 201


def add_three_parts(rows: list[dict]) -> None:
    """Parts 1 (a CSV body), 2 (JSON records) and 3 (a multipart file), 100 rows each."""
    replies = [
        invoke(add_data.handler, "v1", "PUT", "/add_data", MODEL, to_csv(rows[:100]),
               {"Content-Type": "text/csv"}),
        invoke(add_data.handler, "v2", "PUT", "/add_data", MODEL, {"records": rows[100:200]}),
        invoke(add_data.handler, "v1", "PUT", "/add_data", MODEL,
               *multipart({"file": ("third.csv", to_csv(rows[200:]).encode(), "text/csv")})),
    ]
    assert [r.status for r in replies] == [200] * 3, [r.body for r in replies]
    assert [r.json()["dataset_version"] for r in replies] == [1, 2, 3]


def queue(body: dict[str, Any] | None = None) -> int:
    reply = invoke(retrain.handler, "v2", "PUT", "/retrain", MODEL,
                   body or {"model_class": "logistic_regression"})
    assert reply.status == 202, reply.body
    return int(reply.json()["experiment_id"])


def storage() -> tuple:
    """Everything stored: rows of every kind and the files of both object stores."""
    b = context.backends()
    store = b.experiments
    names = [m.name for m in store.list_models()]
    return ([m.model_dump() for m in store.list_models()],
            [e.model_dump() for e in store.list_experiments()],
            {n: [d.model_dump() for d in store.list_deployments(n)] for n in names},
            {n: [p.model_dump() for p in store.all_dataset_parts(n)] for n in names},
            b.models.list(""), b.datasets.list(""))


@pytest.mark.parametrize("backend", ["embedded", "on_aws"])
def test_remove_a_part_then_retrain(backend: str, request: pytest.FixtureRequest) -> None:
    drain: Callable[[], None] = request.getfixturevalue(backend)
    rows = churn_rows(300)
    create_churn()
    add_three_parts(rows)
    first = queue()
    drain()
    before = context.backends().experiments.dataset_parts("churn", 3)

    removed = invoke(datasets.handler, "v1", "DELETE", "/datasets/parts/2", MODEL)
    assert removed.status == 200, removed.body
    assert removed.json() == {"model": "churn", "removed": 2, "dataset_version": 4,
                              "rows_total": 200, "parts": [1, 3]}
    second = queue({"model_class": "random_forest", "hyperparameters": {"n_estimators": 21}})
    drain()

    done = {i: invoke(metrics.handler, "v1", "GET", f"/metrics/{i}").json() for i in (first, second)}
    assert all(d["status"] == "succeeded" for d in done.values()), done
    assert (done[first]["dataset_version"], done[first]["rows"]) == (3, 300)
    assert (done[second]["dataset_version"], done[second]["rows"]) == (4, 200)  # without part 2
    assert invoke(deploy.handler, "v1", "POST", f"/deploy/{second}").status == 200
    assert invoke(metadata.handler, "v2", "GET", "/metadata", MODEL).json()["dataset_version"] == 4

    listed = invoke(datasets.handler, "v2", "GET", "/datasets", MODEL)
    assert listed.status == 200, listed.body
    doc = listed.json()
    assert (doc["model"], doc["dataset_version"], doc["rows_total"]) == ("churn", 4, 200)
    assert [(p["version"], p["rows"], p["source"], p["removed_in"]) for p in doc["parts"][:2]] == [
        (1, 100, "csv", None), (2, 100, "json", 4)]
    # A multipart file: "multipart" and its name once functions/add_data passes them on.
    assert (doc["parts"][2]["version"], doc["parts"][2]["removed_in"]) == (3, None)
    assert (doc["parts"][2]["source"], doc["parts"][2]["filename"]) in (
        (("multipart", "third.csv"), ("csv", None)))
    assert all(p["created_at"] for p in doc["parts"]) and doc["parts"][1]["removed_at"]
    assert [(v["version"], v["change"], v["part"], v["parts"], v["rows"], v["experiments"])
            for v in doc["versions"]] == [
        (1, "added", 1, [1], 100, []), (2, "added", 2, [1, 2], 200, []),
        (3, "added", 3, [1, 2, 3], 300, [first]), (4, "removed", 2, [1, 3], 200, [second])]

    # The first experiment is still reproducible: its version has the same parts, with files.
    b = context.backends()
    assert [p.key for p in b.experiments.dataset_parts("churn", 3)] == [p.key for p in before]
    frame = load_dataset(b.datasets, b.experiments, b.experiments.get_model("churn"), 3)
    expected = pd.concat([pd.read_parquet(io.BytesIO(b.datasets.get(p.key))) for p in before],
                         ignore_index=True)
    assert len(frame) == 300
    pd.testing.assert_frame_equal(frame, expected)
    assert len(load_dataset(b.datasets, b.experiments, b.experiments.get_model("churn"), 4)) == 200


def test_retrain_now_trains_on_the_version_without_the_part(embedded: Callable[[], None]) -> None:
    """Lifecycle.train_now, a real training in this process, after a removal."""
    create_churn()
    add_three_parts(churn_rows(300))
    life = context.lifecycle()
    assert life.remove_part("churn", 1)["dataset_version"] == 4
    exp = life.train_now("churn", {"model_class": "logistic_regression"})
    assert exp.status is ExperimentStatus.succeeded, exp.error
    assert (exp.dataset_version, exp.rows) == (4, 200)
    assert life.remove_part("churn", 3)["rows_total"] == 100
    assert life.remove_part("churn", 2) == {"model": "churn", "removed": 2, "dataset_version": 6,
                                            "rows_total": 0, "parts": []}
    with pytest.raises(BadRequest, match="no data in its dataset version 6 .every part was removed"):
        life.train_now("churn", {"model_class": "logistic_regression"})


def test_the_source_of_a_part(embedded: Callable[[], None]) -> None:
    """A multipart file is recorded with its name (once the add_data route passes it on)."""
    create_churn()
    rows = churn_rows(40)
    life = context.lifecycle()
    life.add_frame_or_archive("churn", "csv", to_csv(rows[:20]).encode(), "multipart", "a.csv")
    life.add_frame_or_archive("churn", "json", json.dumps({"records": rows[20:]}).encode())
    parts = invoke(datasets.handler, "v1", "GET", "/datasets", MODEL).json()["parts"]
    assert [(p["source"], p["filename"]) for p in parts] == [("multipart", "a.csv"), ("json", None)]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_dataset_route_errors_change_nothing(embedded: Callable[[], None], version: str) -> None:
    create_churn()
    add_three_parts(churn_rows(300))
    assert invoke(datasets.handler, version, "DELETE", "/datasets/parts/2", MODEL).status == 200
    before = storage()
    cases = [
        ("GET", "/datasets", {"model": "ghost"}, 404, "'ghost' does not exist"),
        ("GET", "/datasets", None, 400, "'model' is required"),
        ("GET", "/datasets", {"model": "Bad Name"}, 400, "invalid model name"),
        ("DELETE", "/datasets/parts/2", {"model": "ghost"}, 404, "'ghost' does not exist"),
        ("DELETE", "/datasets/parts/2", None, 400, "'model' is required"),
        ("DELETE", "/datasets/parts/0", MODEL, 400, "between 1 and"),
        ("DELETE", "/datasets/parts/two", MODEL, 400, "must be an integer"),
        ("DELETE", "/datasets/parts/-1", MODEL, 400, "between 1 and"),
        ("DELETE", "/datasets/parts/4", MODEL, 404, "no dataset part 4"),  # a removal, no part
        ("DELETE", "/datasets/parts/99", MODEL, 404, "no dataset part 99"),
        ("DELETE", "/datasets/parts/2", MODEL, 409, "removed already, in dataset version 4"),
        ("PUT", "/datasets/parts/2", MODEL, 405, "use DELETE"),
    ]
    for method, path, query, status, needle in cases:
        reply = invoke(datasets.handler, version, method, path, query)
        assert reply.status == status, (method, path, query, reply.body)
        assert needle in reply.json()["detail"], reply.json()
    assert storage() == before


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_delete_a_model_with_everything(embedded: Callable[[], None], version: str) -> None:
    create_churn()
    add_three_parts(churn_rows(300))
    trained = [queue(), queue({"model_class": "svm"})]
    embedded()  # the in-process worker trains both
    assert invoke(deploy.handler, version, "POST", f"/deploy/{trained[0]}").status == 200
    invoke(datasets.handler, version, "DELETE", "/datasets/parts/1", MODEL)
    assert invoke(models.handler, "v1", "POST", "/models", None,
                  {"name": "other", "task": "regression", "target": "y"}).status == 201
    b = context.backends()
    assert b.models.list("churn/") and b.datasets.list("churn/")

    gone = invoke(models.handler, version, "DELETE", "/models/churn")
    assert (gone.status, gone.body) == (204, b"")
    assert [m["name"] for m in invoke(models.handler, version, "GET", "/models").json()] == ["other"]
    assert b.models.list("churn/") == [] and b.datasets.list("churn/") == []
    for exp_id in trained:
        assert invoke(metrics.handler, version, "GET", f"/metrics/{exp_id}").status == 404
    for handler, method, path in ((datasets.handler, "GET", "/datasets"),
                                  (experiments.handler, "GET", "/experiments"),
                                  (deployments.handler, "GET", "/deployments")):
        assert invoke(handler, version, method, path, MODEL).status == 404
    assert invoke(models.handler, version, "DELETE", "/models/churn").status == 404

    create_churn()  # the same name again: nothing of the old model
    doc = invoke(datasets.handler, version, "GET", "/datasets", MODEL).json()
    assert (doc["dataset_version"], doc["parts"], doc["versions"]) == (0, [], [])
    assert invoke(experiments.handler, version, "GET", "/experiments", MODEL).json() == []
    assert invoke(deployments.handler, version, "GET", "/deployments", MODEL).json() == []
    (listed,) = [m for m in invoke(models.handler, version, "GET", "/models").json()
                 if m["name"] == "churn"]
    assert (listed["features"], listed["deployed_experiment_id"], listed["rows_total"]) == ([], None, 0)
    first = invoke(add_data.handler, version, "PUT", "/add_data", MODEL, {"records": churn_rows(20)})
    assert first.json()["dataset_version"] == 1 and first.json()["rows_total"] == 20


@pytest.mark.parametrize("status", [ExperimentStatus.queued, ExperimentStatus.running])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_delete_a_model_refused_while_a_job_is_unfinished(
        embedded: Callable[[], None], version: str, status: ExperimentStatus) -> None:
    create_churn()
    add_three_parts(churn_rows(300))
    store = context.backends().experiments
    # Recorded directly, not queued: no worker picks it up while the test looks.
    job = store.create_experiment({"model": "churn", "model_class": "svm"})
    if status is ExperimentStatus.running:
        store.update_experiment(job.id, {"status": status, "attempts": 1})
    before = storage()
    refused = invoke(models.handler, version, "DELETE", "/models/churn")
    assert refused.status == 409, refused.body
    assert f"experiment {job.id} {status.value}" in refused.json()["detail"]
    assert storage() == before
    for path, expected in (("/models/ghost", 404), ("/models/Not%20A%20Name", 400)):
        reply = invoke(models.handler, version, "DELETE", path)
        assert reply.status == expected, reply.body
    assert storage() == before
    store.update_experiment(job.id, {"status": ExperimentStatus.failed})
    assert invoke(models.handler, version, "DELETE", "/models/churn").status == 204


def test_delete_a_model_on_aws(on_aws: Callable[[], None]) -> None:
    """A queued job refuses the delete until the worker has trained it; then the model's items
    and its objects in both buckets are gone, and the replay of the same request says so."""
    create_churn()
    add_three_parts(churn_rows(300))
    exp_id = queue()
    refused = invoke(models.handler, "v1", "DELETE", "/models/churn")
    assert refused.status == 409 and f"experiment {exp_id} queued" in refused.json()["detail"]
    on_aws()
    b = context.backends()
    assert b.models.list("churn/") and len(b.datasets.list("churn/")) == 3
    key = {"Idempotency-Key": "delete-churn-1"}
    gone = invoke(models.handler, "v2", "DELETE", "/models/churn", None, None, key)
    assert gone.status == 204, gone.body
    again = invoke(models.handler, "v2", "DELETE", "/models/churn", None, None, key)
    assert again.status == 204 and again.headers.get("idempotent-replayed") == "true"
    assert invoke(models.handler, "v1", "DELETE", "/models/churn").status == 404
    assert b.models.list("churn/") == [] and b.datasets.list("churn/") == []
    import boto3

    items = boto3.client("dynamodb").scan(TableName=b.settings.table_name)["Items"]
    assert not [i for i in items if "churn" in json.dumps(i) and i["pk"]["S"] != "IDEMPOTENCY"]
