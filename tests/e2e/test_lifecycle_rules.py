"""Life-cycle rules: validation that changes nothing, concurrency, tuning, deploy policies,
Postgres flat metrics and restart recovery."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from common import context
from common.domain import ExperimentStatus
from functions.add_data import handler as add_data
from functions.deploy import handler as deploy
from functions.model_classes import handler as model_classes
from functions.models import handler as models
from functions.retrain import handler as retrain
from tests.apigw import invoke
from tests.lifecycle_data import churn_rows, to_csv


def create_churn(rows: int = 120) -> list[dict]:
    assert invoke(models.handler, "v1", "POST", "/models", None,
                  {"name": "churn", "task": "classification", "target": "churned"}).status == 201
    data = churn_rows(rows)
    if rows:
        reply = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "churn"}, {"records": data})
        assert reply.status == 200, reply.body
    return data


def storage_snapshot() -> tuple:
    b = context.backends()
    exps = [(e.id, e.status.value) for e in b.experiments.list_experiments()]
    parts = [(p.version, p.key) for m in b.experiments.list_models() for p in b.experiments.dataset_parts(m.name)]
    return (exps, parts, b.datasets.list(""), b.models.list(""),
            [(m.name, m.features, m.deployed_experiment_id) for m in b.experiments.list_models()])


def test_model_classes_route(embedded: Callable[[], None]) -> None:
    reply = invoke(model_classes.handler, "v2", "GET", "/model_classes")
    assert reply.status == 200
    classes = {c["name"]: c for c in reply.json()}
    assert set(classes) == {"random_forest", "svm", "logistic_regression", "catboost"}
    n_est = next(p for p in classes["random_forest"]["hyperparameters"] if p["name"] == "n_estimators")
    assert n_est["type"] == "int" and n_est["default"] == 100 and n_est["minimum"] == 1
    assert classes["catboost"]["grid"]


BAD_MODELS = [
    ({"name": "Bad Name", "task": "classification", "target": "y"}, "invalid model name"),
    ({"name": "x" * 65, "task": "classification", "target": "y"}, "invalid model name"),
    ({"name": "ok", "task": "ranking", "target": "y"}, "task"),
    ({"name": "ok", "task": "regression"}, "'target'"),
    ({"name": "ok", "task": "regression", "target": "y", "colour": 1}, "'colour'"),
]


@pytest.mark.parametrize(("body", "needle"), BAD_MODELS)
def test_create_model_validation(embedded: Callable[[], None], body: dict, needle: str) -> None:
    reply = invoke(models.handler, "v1", "POST", "/models", None, body)
    assert reply.status == 400 and needle in reply.json()["detail"], reply.body
    assert context.backends().experiments.list_models() == []


BAD_UPLOADS = [
    ("missing column", lambda rows: [{k: v for k, v in r.items() if k != "plan"} for r in rows], "'plan'"),
    ("extra column", lambda rows: [{**r, "age": 3} for r in rows], "'age'"),
    ("wrong type", lambda rows: [*rows[:3], {**rows[3], "tenure": "long"}], "'tenure' (row 3)"),
    ("missing target", lambda rows: [*rows[:2], {**rows[2], "churned": None}], "(row 2)"),
]


@pytest.mark.parametrize(("case", "mutate", "needle"), BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_add_data_schema_mismatch_changes_nothing(embedded: Callable[[], None], case: str,
                                                  mutate: Callable, needle: str) -> None:
    rows = create_churn(60)
    before = storage_snapshot()
    bad = mutate(churn_rows(10, seed=3))
    for version, body, headers in (("v1", {"records": bad}, None),
                                   ("v2", to_csv(bad), {"Content-Type": "text/csv"})):
        if case == "missing target" and version == "v2":
            continue  # an empty CSV cell is the same as null: covered by the JSON case
        reply = invoke(add_data.handler, version, "PUT", "/add_data", {"model": "churn"}, body, headers)
        assert reply.status == 400, (case, reply.body)
        assert needle in reply.json()["detail"], reply.json()
    assert storage_snapshot() == before
    assert len(rows) == 60


def test_add_data_multipart_file(embedded: Callable[[], None]) -> None:
    create_churn(0)
    rows = churn_rows(30)
    boundary = "----mlfnboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"churn.csv\"\r\n"
            f"Content-Type: text/csv\r\n\r\n{to_csv(rows)}\r\n--{boundary}--\r\n")
    reply = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "churn"}, body,
                   {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status == 200, reply.body
    assert reply.json()["rows_added"] == 30
    schema = {f.name: f.kind.value for f in context.backends().experiments.get_model("churn").features or []}
    assert schema == {"tenure": "numeric", "charges": "numeric", "plan": "categorical", "region": "categorical"}


def test_add_data_errors(embedded: Callable[[], None]) -> None:
    assert invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "ghost"},
                  {"records": churn_rows(3)}).status == 404
    create_churn(0)
    for body, headers, needle in ((b"{oops", {"Content-Type": "application/json"}, "malformed JSON"),
                                  ("a,b\n", {"Content-Type": "text/csv"}, "no data rows"),
                                  ({"records": []}, None, "non-empty"),
                                  ("x", {"Content-Type": "text/plain"}, "content type")):
        reply = invoke(add_data.handler, "v2", "PUT", "/add_data", {"model": "churn"}, body, headers)
        assert reply.status == 400 and needle in reply.json()["detail"], reply.body
    assert storage_snapshot()[1] == []


BAD_RETRAINS = [
    ({"model_class": "random_forest", "hyperparameters": {"n_estimators": -1}}, "'n_estimators'"),
    ({"model_class": "random_forest", "hyperparameters": {"trees": 5}}, "'trees'"),
    ({"model_class": "svm", "hyperparameters": {"kernel": "cubic"}}, "'kernel'"),
    ({"model_class": "xgboost"}, "unknown model_class"),
    ({"hyperparameters": {}}, "'model_class'"),
    ({"model_class": "svm", "deploy": "sometimes"}, "deploy"),
    ({"model_class": "svm", "tune": "yes"}, "tune"),
    ({"model_class": "svm", "primary_metric": "mae"}, "primary_metric"),
]


@pytest.mark.parametrize(("body", "needle"), BAD_RETRAINS)
def test_retrain_validates_before_queueing(embedded: Callable[[], None], body: dict, needle: str) -> None:
    create_churn(40)
    before = storage_snapshot()
    reply = invoke(retrain.handler, "v2", "PUT", "/retrain", {"model": "churn"}, body)
    assert reply.status == 400 and needle in reply.json()["detail"], reply.body
    assert storage_snapshot() == before


def test_retrain_without_data_is_400(embedded: Callable[[], None]) -> None:
    create_churn(0)
    reply = invoke(retrain.handler, "v1", "PUT", "/retrain", {"model": "churn"}, {"model_class": "svm"})
    assert reply.status == 400 and "no data" in reply.json()["detail"]


def test_deploy_errors(embedded: Callable[[], None]) -> None:
    create_churn(40)
    assert invoke(deploy.handler, "v1", "POST", "/deploy/999").status == 404
    assert invoke(deploy.handler, "v1", "POST", "/deploy/abc").status == 400
    queued = context.lifecycle().store.create_experiment({"model": "churn", "model_class": "svm"})
    reply = invoke(deploy.handler, "v2", "POST", f"/deploy/{queued.id}")
    assert reply.status == 409 and "queued" in reply.json()["detail"]
    # With ?model=, an experiment of another model is refused before anything changes.
    assert invoke(models.handler, "v1", "POST", "/models", None,
                  {"name": "other", "task": "regression", "target": "y"}).status == 201
    reply = invoke(deploy.handler, "v1", "POST", f"/deploy/{queued.id}", {"model": "other"})
    assert reply.status == 404
    assert reply.json()["detail"] == f"experiment {queued.id} belongs to model 'churn', not 'other'"
    from functions.experiments import handler as experiments
    from functions.metrics import handler as metrics

    for handler, method, path in ((metrics.handler, "GET", f"/metrics/{queued.id}"),
                                  (experiments.handler, "DELETE", f"/experiments/{queued.id}")):
        assert invoke(handler, "v2", method, path, {"model": "other"}).status == 404
        assert invoke(handler, "v2", method, path, {"model": "churn"}).status in (200, 409)


def test_too_few_rows_refused_before_queueing(embedded: Callable[[], None]) -> None:
    create_churn(5)
    before = storage_snapshot()
    reply = invoke(retrain.handler, "v1", "PUT", "/retrain", {"model": "churn"}, {"model_class": "svm"})
    assert reply.status == 400 and "at least 10" in reply.json()["detail"]
    assert storage_snapshot() == before


def test_training_failure_is_recorded(embedded: Callable[[], None]) -> None:
    create_churn(0)
    rows = [{**r, "churned": "no"} for r in churn_rows(12)]
    rows[0]["churned"] = "yes"  # a class with one row cannot be split into train and holdout
    assert invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "churn"}, {"records": rows}).status == 200
    queued = invoke(retrain.handler, "v1", "PUT", "/retrain", {"model": "churn"}, {"model_class": "svm"})
    assert queued.status == 202
    embedded()
    exp = context.lifecycle().store.get_experiment(queued.json()["experiment_id"])
    assert exp.status is ExperimentStatus.failed and "two rows" in (exp.error or "")
    assert exp.finished_at is not None
    assert context.backends().models.list("") == []


def test_json_categories_must_be_strings_or_integers(embedded: Callable[[], None]) -> None:
    """A category is text; a JSON integer is read as its decimal text (as a CSV cell would be),
    any other number is refused."""
    create_churn(20)
    before = storage_snapshot()
    rows = [{**r, "plan": 5.5} for r in churn_rows(3, seed=9)]  # numbers for a categorical column
    reply = invoke(add_data.handler, "v2", "PUT", "/add_data", {"model": "churn"}, {"records": rows})
    assert reply.status == 400 and "'plan' (row 0): expected a string category" in reply.json()["detail"]
    rows[2]["plan"] = "plus"
    reply = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "churn"}, {"records": rows})
    assert reply.status == 400 and "'plan' (row" in reply.json()["detail"]
    assert storage_snapshot() == before
    rows = [{**r, "plan": 5} for r in churn_rows(3, seed=9)]
    reply = invoke(add_data.handler, "v2", "PUT", "/add_data", {"model": "churn"}, {"records": rows})
    assert reply.status == 200, reply.body


def test_parallel_add_data_loses_no_row(embedded: Callable[[], None], live_server: str) -> None:
    requests.post(f"{live_server}/models", json={"name": "churn", "task": "classification",
                                                 "target": "churned"}, timeout=30).raise_for_status()
    batches = [churn_rows(7, seed=i) for i in range(20)]

    def upload(i: int) -> int:
        url = f"{live_server}/add_data?model=churn"
        if i % 2:
            reply = requests.put(url, json={"records": batches[i]}, timeout=60)
        else:
            reply = requests.put(url, data=to_csv(batches[i]), headers={"Content-Type": "text/csv"}, timeout=60)
        assert reply.status_code == 200, reply.text
        return int(reply.json()["dataset_version"])

    with ThreadPoolExecutor(20) as pool:
        versions = list(pool.map(upload, range(20)))
    assert sorted(versions) == list(range(1, 21))
    from common.training.datasets import load_dataset

    store = context.backends().experiments
    frame = load_dataset(context.backends().datasets, store, store.get_model("churn"), 20)
    assert len(frame) == 140
    assert sorted(frame["tenure"].tolist()) == sorted(r["tenure"] for b in batches for r in b)


def test_parallel_retrains_get_distinct_ids_and_finish(embedded: Callable[[], None], live_server: str) -> None:
    requests.post(f"{live_server}/models", json={"name": "churn", "task": "classification",
                                                 "target": "churned"}, timeout=30).raise_for_status()
    requests.put(f"{live_server}/add_data?model=churn", json={"records": churn_rows(80)},
                 timeout=60).raise_for_status()

    def queue(i: int) -> int:
        reply = requests.put(f"{live_server}/retrain?model=churn", timeout=60,
                             json={"model_class": "logistic_regression", "hyperparameters": {"C": 0.1 + i}})
        assert reply.status_code == 202, reply.text
        return int(reply.json()["experiment_id"])

    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(queue, range(20)))
    assert len(set(ids)) == 20
    embedded()
    for i in ids:
        doc = requests.get(f"{live_server}/metrics/{i}", timeout=30).json()
        assert doc["status"] == "succeeded", doc


def test_parallel_deploys_leave_a_consistent_history(embedded: Callable[[], None], live_server: str) -> None:
    create_churn(80)
    life = context.lifecycle()
    ids = []
    for c in (0.1, 1.0, 10.0, 0.5, 2.0, 5.0):
        ids.append(life.retrain("churn", {"model_class": "logistic_regression", "hyperparameters": {"C": c}}).id)
    embedded()
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: requests.post(f"{live_server}/deploy/{i}", timeout=60), ids * 2))
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    history = requests.get(f"{live_server}/deployments?model=churn", timeout=30).json()
    assert len(history) == 12
    # Each deploy's "previous" is the one recorded just before it: no lost or crossed update.
    for newer, older in zip(history, history[1:], strict=False):
        assert newer["previous"] == older["experiment_id"]
    assert history[-1]["previous"] is None
    assert life.store.deployed_experiment("churn") == history[0]["experiment_id"]
    answer = requests.post(f"{live_server}/forward?model=churn", timeout=30,
                           json={k: v for k, v in churn_rows(1)[0].items() if k != "churned"}).json()
    assert answer["experiment_id"] == history[0]["experiment_id"]


def test_tune_searches_the_declared_grid(embedded: Callable[[], None]) -> None:
    create_churn(150)
    life = context.lifecycle()
    exp = life.retrain("churn", {"model_class": "random_forest", "tune": True,
                                 "hyperparameters": {"max_features": "all"}})
    embedded()
    done = life.store.get_experiment(exp.id)
    assert done.status is ExperimentStatus.succeeded, done.error
    assert done.tune is True
    grid = {"n_estimators": [51, 151], "max_depth": [None, 8], "min_samples_leaf": [1, 3]}
    for name, values in grid.items():
        assert done.hyperparameters[name] in values
    assert done.hyperparameters["max_features"] == "all"  # the caller's value is kept
    meta = context.serving().load("churn", exp.id).metadata
    assert meta["hyperparameters"] == done.hyperparameters and meta["tune"] is True
    fixed = life.retrain("churn", {"model_class": "random_forest", "tune": True,
                                   "hyperparameters": {"n_estimators": 5}})
    embedded()
    done = life.store.get_experiment(fixed.id)
    assert done.status is ExperimentStatus.succeeded, done.error
    assert done.hyperparameters["n_estimators"] == 5  # set by the request: not searched
    assert done.hyperparameters["max_depth"] in grid["max_depth"]


def test_deploy_if_better_and_always(embedded: Callable[[], None]) -> None:
    create_churn(200)
    life = context.lifecycle()
    first = life.retrain("churn", {"model_class": "logistic_regression", "deploy": "if_better"})
    embedded()
    assert life.store.deployed_experiment("churn") == first.id  # no champion yet: deployed
    worse = life.retrain("churn", {"model_class": "random_forest", "deploy": "if_better",
                                   "hyperparameters": {"n_estimators": 1, "max_depth": 1}})
    embedded()
    assert life.store.get_experiment(worse.id).status is ExperimentStatus.succeeded
    assert life.store.deployed_experiment("churn") == first.id  # a stump does not beat it
    note = life.store.get_experiment(worse.id).error or ""
    assert note.startswith("not deployed: f1_macro") and f"experiment {first.id}" in note
    forced = life.retrain("churn", {"model_class": "random_forest", "deploy": "always",
                                    "hyperparameters": {"n_estimators": 1, "max_depth": 1}})
    embedded()
    assert life.store.deployed_experiment("churn") == forced.id


def test_queued_jobs_survive_a_restart(embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    create_churn(60)
    life = context.lifecycle()
    monkeypatch.setattr(life, "jobs", None)  # the process "dies" before a worker runs the job
    exp = life.retrain("churn", {"model_class": "svm"})
    assert life.store.get_experiment(exp.id).status is ExperimentStatus.queued
    context.reset()  # a new process on the same store
    from infra.local.server import prepare_store, start_process

    prepare_store(context.settings())
    start_process(context.settings())
    embedded()
    assert context.lifecycle().store.get_experiment(exp.id).status is ExperimentStatus.succeeded


def test_postgres_store_fills_flat_metrics(tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                          fresh_context: None) -> None:
    monkeypatch.setenv("MLFN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLFN_EXPERIMENT_STORE", "postgres")
    monkeypatch.setenv("MLFN_POSTGRES_DSN", pg_dsn)
    monkeypatch.setenv("MLFN_DEMO_MODELS", "false")
    context.reset()
    create_churn(80)
    exp = context.lifecycle().retrain("churn", {"model_class": "logistic_regression", "tune": True})
    context.wait_for_jobs()
    assert context.lifecycle().store.get_experiment(exp.id).status is ExperimentStatus.succeeded
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT id, model_id, problem, model_name, h_tune, metric, metric_value "
                            "FROM experiment_metrics ORDER BY metric").fetchall()
    assert {r[5] for r in rows} == {"accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "log_loss"}
    assert all(r[:5] == (exp.id, "churn", "classification", "logistic_regression", True) for r in rows)
    assert {r[5]: r[6] for r in rows} == context.lifecycle().store.get_experiment(exp.id).metrics


def test_artifacts_listed_and_downloadable(embedded: Callable[[], None], tmp_path: Path) -> None:
    from functions.artifacts import handler as artifacts
    from functions.metrics import handler as metrics

    create_churn(150)
    exp = context.lifecycle().retrain("churn", {"model_class": "catboost",
                                                "hyperparameters": {"iterations": 40, "depth": 3}})
    embedded()
    doc = invoke(metrics.handler, "v1", "GET", f"/metrics/{exp.id}").json()
    names = [a["name"] for a in doc["artifacts"]]
    assert names[0] == "model.onnx" and any(n.startswith("tensorboard/events.out.tfevents") for n in names)
    board = next(a for a in doc["artifacts"] if a["name"].startswith("tensorboard/"))
    reply = invoke(artifacts.handler, "v2", "GET", board["url"])
    assert reply.status == 200
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / board["name"].split("/")[-1]).write_bytes(reply.body)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert len(events.Scalars("loss/Logloss/validation")) == 40
    assert len(events.Scalars("loss/Logloss/learn")) == 40
    onnx_reply = invoke(artifacts.handler, "v1", "GET", f"/artifacts/{exp.id}/model.onnx")
    assert onnx_reply.status == 200 and onnx_reply.body == context.backends().models.get(doc["artifact_key"])
    assert invoke(artifacts.handler, "v1", "GET", f"/artifacts/{exp.id}/../../etc/passwd").status == 404
    assert invoke(artifacts.handler, "v1", "GET", f"/artifacts/{exp.id}/nope").status == 404
    # deleting the experiment deletes its files
    assert invoke(__import__("functions.experiments.handler", fromlist=["handler"]).handler, "v1", "DELETE",
                  f"/experiments/{exp.id}").status == 204
    assert context.backends().models.list("churn/") == []
