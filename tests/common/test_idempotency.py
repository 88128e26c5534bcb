"""Idempotency-Key on add_data, retrain, POST /models and deploy: one contract, run against every
experiment store (SQLite, PostgreSQL, DynamoDB on a moto server), through real API Gateway
events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from common import context
from functions.add_data import handler as add_data
from functions.deploy import handler as deploy
from functions.models import handler as models
from functions.retrain import handler as retrain
from tests.apigw import invoke
from tests.lifecycle_data import churn_rows

CHURN = {"name": "churn", "task": "classification", "target": "churned"}


@pytest.fixture(params=["sqlite", "postgres", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          fresh_context: None) -> Iterator[str]:
    monkeypatch.setenv("MLFN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFN_DEMO_MODELS", "false")
    monkeypatch.setenv("MLFN_EMF", "false")
    if request.param == "postgres":
        monkeypatch.setenv("MLFN_EXPERIMENT_STORE", "postgres")
        monkeypatch.setenv("MLFN_POSTGRES_DSN", request.getfixturevalue("pg_dsn"))
    elif request.param == "dynamodb":
        request.getfixturevalue("aws")
        monkeypatch.setenv("MLFN_EXPERIMENT_STORE", "dynamodb")
    context.reset()
    context.backends().ensure_cloud_resources()
    context.lifecycle().jobs = None  # record retrains only
    yield request.param
    context.reset()


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def upload(key: str | None, rows: list[dict], version: str = "v1") -> object:
    return invoke(add_data.handler, version, "PUT", "/add_data", {"model": "churn"},
                  {"records": rows}, keyed(key) if key else None)


def parts() -> int:
    return len(context.backends().experiments.dataset_parts("churn"))


def test_a_retried_write_returns_the_first_answer_and_writes_nothing(store: str) -> None:
    first = invoke(models.handler, "v1", "POST", "/models", None, CHURN, keyed("create-1"))
    again = invoke(models.handler, "v2", "POST", "/models", None, CHURN, keyed("create-1"))
    assert first.status == again.status == 201 and first.body == again.body
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert invoke(models.handler, "v1", "POST", "/models", None, CHURN).status == 409  # no key
    rows = churn_rows(30)
    a, b = upload("data-1", rows), upload("data-1", rows, "v2")
    assert a.status == b.status == 200 and a.json() == b.json() and parts() == 1
    r1 = invoke(retrain.handler, "v1", "PUT", "/retrain", {"model": "churn"},
                {"model_class": "svm"}, keyed("train-1"))
    r2 = invoke(retrain.handler, "v1", "PUT", "/retrain", {"model": "churn"},
                {"model_class": "svm"}, keyed("train-1"))
    assert r1.status == r2.status == 202 and r1.json() == r2.json()
    assert len(context.backends().experiments.list_experiments("churn")) == 1
    exp_id = r1.json()["experiment_id"]
    context.lifecycle().run_experiment(exp_id)
    d1 = invoke(deploy.handler, "v1", "POST", f"/deploy/{exp_id}", None, None, keyed("dep-1"))
    d2 = invoke(deploy.handler, "v1", "POST", f"/deploy/{exp_id}", None, None, keyed("dep-1"))
    assert d1.status == d2.status == 200 and d1.json() == d2.json()
    assert len(context.backends().experiments.list_deployments("churn")) == 1


def test_the_same_key_for_another_request_is_a_422_and_writes_nothing(store: str) -> None:
    assert invoke(models.handler, "v1", "POST", "/models", None, CHURN).status == 201
    assert upload("k", churn_rows(20)).status == 200
    other = upload("k", churn_rows(21))
    assert other.status == 422 and "was used for a different request" in other.json()["detail"]
    elsewhere = invoke(retrain.handler, "v1", "PUT", "/retrain", {"model": "churn"},
                       {"model_class": "svm"}, keyed("k"))
    assert elsewhere.status == 422
    assert parts() == 1 and context.backends().experiments.list_experiments("churn") == []


def test_an_error_answer_releases_the_key(store: str) -> None:
    """A refused request is not remembered: the corrected retry with the same key runs."""
    assert invoke(models.handler, "v1", "POST", "/models", None, CHURN).status == 201
    assert upload(None, churn_rows(20)).status == 200  # the schema: tenure is a number
    bad = [{**r, "tenure": "many"} for r in churn_rows(20)]
    assert upload("fix-1", bad).status == 400
    assert upload("fix-1", churn_rows(20)).status == 200 and parts() == 2


def test_concurrent_retries_write_once(store: str) -> None:
    assert invoke(models.handler, "v1", "POST", "/models", None, CHURN).status == 201
    rows = churn_rows(500)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: upload("race", rows), range(4)))
    statuses = sorted(r.status for r in replies)
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}, [r.body for r in replies]
    assert parts() == 1
    first = next(r for r in replies if r.status == 200).json()
    assert all(r.json() == first for r in replies if r.status == 200)
    busy = [r for r in replies if r.status == 409]
    assert all("still running" in r.json()["detail"] for r in busy)


def test_keys_expire(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_IDEMPOTENCY_TTL_SECONDS", "1")
    context.reset()
    context.lifecycle().jobs = None
    assert invoke(models.handler, "v1", "POST", "/models", None, CHURN).status == 201
    rows = churn_rows(20)
    assert upload("short", rows).status == 200
    time.sleep(2.1)
    again = upload("short", rows)
    assert again.status == 200 and "idempotent-replayed" not in again.headers and parts() == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "naïve"])
def test_malformed_keys_are_refused(store: str, key: str) -> None:
    reply = invoke(models.handler, "v1", "POST", "/models", None, CHURN, {"Idempotency-Key": key})
    assert reply.status == 400 and "Idempotency-Key" in reply.json()["detail"]
    assert context.backends().experiments.list_models() == []
