"""Defects found in review, each pinned by a test: failed requests change nothing, odd input is a
400 (never a 500), and experiment states cannot be overwritten by a stale attempt."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from common import context
from common.demo import digits_png
from common.domain import ExperimentStatus
from functions.add_data import handler as add_data
from functions.artifacts import handler as artifacts
from functions.deploy import handler as deploy
from functions.evaluate import handler as evaluate
from functions.experiments import handler as experiments
from functions.forward import handler as forward
from functions.forward_batch import handler as forward_batch
from functions.metrics import handler as metrics
from functions.models import handler as models
from functions.retrain import handler as retrain
from tests.apigw import invoke, multipart


def make_model(name: str, task: str = "classification", target: str = "y") -> None:
    reply = invoke(models.handler, "v1", "POST", "/models", None, {"name": name, "task": task, "target": target})
    assert reply.status == 201, reply.body


def test_failed_first_upload_fixes_no_schema(embedded: Callable[[], None]) -> None:
    make_model("m2")
    bad = {"records": [{"a": 1.0, "b": "x", "y": True}, {"a": 2.0, "b": "x", "y": 1}]}
    reply = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "m2"}, bad)
    assert reply.status == 400 and "mixes" in reply.json()["detail"]
    assert context.backends().experiments.get_model("m2").features is None
    good = {"records": [{"a": float(i), "y": "p" if i % 2 else "q"} for i in range(12)]}
    assert invoke(add_data.handler, "v2", "PUT", "/add_data", {"model": "m2"}, good).status == 200


def test_csv_categories_keep_their_text(embedded: Callable[[], None]) -> None:
    make_model("codes")
    first = "code,x,y\nx,1,p\n1,2,q\n2,3,p\n" + "".join(f"x,{i},q\n" for i in range(10))
    assert invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "codes"}, first,
                  {"Content-Type": "text/csv"}).status == 200
    second = "code,x,y\n1,4,p\n2,5,q\n,6,p\n007,7,q\n"
    assert invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "codes"}, second,
                  {"Content-Type": "text/csv"}).status == 200
    from common.training.datasets import load_dataset

    store = context.backends().experiments
    frame = load_dataset(context.backends().datasets, store, store.get_model("codes"), 2)
    import pandas as pd

    last = frame["code"].tolist()[-4:]
    assert last[:2] == ["1", "2"] and pd.isna(last[2]) and last[3] == "007"  # text, not 1.0 or 7
    kinds = {f.name: f.kind.value for f in store.get_model("codes").features or []}
    assert kinds == {"code": "categorical", "x": "numeric"}


@pytest.mark.parametrize("body", ["a,y\n0,q,junk\n1,p,junk\n", "a,a,y\n1,2,p\n"])
def test_training_csv_is_as_strict_as_serving(embedded: Callable[[], None], body: str) -> None:
    make_model("strict")
    reply = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "strict"}, body, {"Content-Type": "text/csv"})
    assert reply.status == 400, reply.body
    assert context.backends().datasets.list("") == []


def test_non_finite_regression_target_refused(embedded: Callable[[], None]) -> None:
    make_model("reg", task="regression")
    body = "a,b,y\n" + "".join(f"{i},{i % 3},{i * 1.5}\n" for i in range(12)) + "5,1,inf\n"
    reply = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "reg"}, body, {"Content-Type": "text/csv"})
    assert reply.status == 400 and "finite" in reply.json()["detail"]
    assert context.backends().experiments.dataset_parts("reg") == []


def test_failing_queue_fails_the_experiment_visibly(embedded: Callable[[], None],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    make_model("q")
    rows = [{"a": float(i), "y": "p" if i % 2 else "q"} for i in range(12)]
    assert invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "q"}, {"records": rows}).status == 200
    life = context.lifecycle()

    class Down:
        def submit(self, experiment_id: int) -> None:
            raise ConnectionError("queue unreachable")

    monkeypatch.setattr(life, "jobs", Down())
    reply = invoke(retrain.handler, "v1", "PUT", "/retrain", {"model": "q"}, {"model_class": "svm"})
    assert reply.status == 503 and "retry" in reply.json()["detail"]
    (exp,) = life.store.list_experiments("q")
    assert exp.status is ExperimentStatus.failed and "queue unreachable" in (exp.error or "")
    assert invoke(experiments.handler, "v2", "DELETE", f"/experiments/{exp.id}").status == 204


def test_a_stale_attempt_cannot_overwrite_the_outcome(embedded: Callable[[], None]) -> None:
    make_model("race")
    rows = [{"a": float(i), "y": "p" if i % 2 else "q"} for i in range(20)]
    assert invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "race"}, {"records": rows}).status == 200
    life = context.lifecycle()
    life.jobs = None
    exp = life.retrain("race", {"model_class": "logistic_regression", "deploy": "always"})
    assert life.run_experiment(exp.id).status is ExperimentStatus.succeeded
    key = life.store.get_experiment(exp.id).artifact_key
    # A second worker that claimed the job earlier now fails: the succeeded outcome stands.
    life.store.update_experiment(exp.id, {"status": ExperimentStatus.running})
    life.store.update_experiment(exp.id, {"status": ExperimentStatus.succeeded})
    from common.errors import Conflict

    with pytest.raises(Conflict):
        life.store.update_experiment(exp.id, {"status": ExperimentStatus.failed},
                                     expected_status=ExperimentStatus.running)
    assert life.store.get_experiment(exp.id).status is ExperimentStatus.succeeded
    assert context.backends().models.exists(key)


def test_deploy_policy_failure_keeps_the_trained_model(embedded: Callable[[], None],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    make_model("pol")
    rows = [{"a": float(i), "y": "p" if i % 2 else "q"} for i in range(20)]
    assert invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "pol"}, {"records": rows}).status == 200
    life = context.lifecycle()

    def broken(*args: object) -> None:
        raise RuntimeError("champion vanished")

    monkeypatch.setattr(life, "_apply_policy", broken)
    done = life.train_now("pol", {"model_class": "svm", "deploy": "if_better"})
    assert done.status is ExperimentStatus.succeeded
    assert "not deployed" in (done.error or "") and "champion vanished" in (done.error or "")
    assert context.backends().models.exists(done.artifact_key or "")


def test_odd_inputs_are_400_not_500(demo_env: Path) -> None:
    huge = "99999999999999999999"
    for handler, method, path in ((metrics.handler, "GET", f"/metrics/{huge}"),
                                  (deploy.handler, "POST", f"/deploy/{huge}"),
                                  (experiments.handler, "DELETE", f"/experiments/{huge}"),
                                  (artifacts.handler, "GET", f"/artifacts/{huge}/model.onnx"),
                                  (metrics.handler, "GET", "/metrics/0")):
        reply = invoke(handler, "v1", method, path)
        assert reply.status == 400, (path, reply.body)
    body, headers = multipart({"image": ("d.png", digits_png(0), "image/png")})
    reply = invoke(forward.handler, "v1", "POST", "/forward", {"model": "digits"}, body,
                   {**headers, "X-Top-K": "9" * 5000})
    assert reply.status == 400 and "X-Top-K" in reply.json()["detail"]
    reply = invoke(evaluate.handler, "v1", "POST", "/evaluate", {"model": "diabetes"},
                   "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,progression\n50,2,27,95,180,110,45,4,4.6,90,inf\n",
                   {"Content-Type": "text/csv"})
    assert reply.status == 400 and "number" in reply.json()["detail"]


@pytest.mark.parametrize("name", [".", ""])
def test_zip_entry_without_a_name(demo_env: Path, name: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), digits_png(0))
    reply = invoke(forward_batch.handler, "v1", "POST", "/forward_batch", {"model": "digits"}, buf.getvalue(),
                   {"Content-Type": "application/zip"})
    assert reply.status == 400, reply.body


def test_zip_with_a_duplicate_entry(demo_env: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("3/x.png", digits_png(3))
        zf.writestr("3/x.png", digits_png(4))
    reply = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "digits"}, buf.getvalue(),
                   {"Content-Type": "application/zip"})
    assert reply.status == 400 and "twice" in reply.json()["detail"]


def test_postgres_deploy_racing_delete_never_deadlocks(pg_dsn: str) -> None:
    from common.domain import ModelRecord, Task
    from common.errors import Conflict, NotFound
    from common.storage.postgres_store import PostgresExperimentStore

    store = PostgresExperimentStore(pg_dsn)
    store.create_model(ModelRecord(name="m", task=Task.classification, target="y"))
    outcomes = []
    for _ in range(25):
        exp = store.create_experiment({"model": "m", "model_class": "svm"})
        store.update_experiment(exp.id, {"status": ExperimentStatus.succeeded})

        def deploy_it(i: int = exp.id) -> str:
            try:
                store.deploy("m", i, store.deployed_experiment("m"))
                return "deployed"
            except (Conflict, NotFound) as exc:
                return type(exc).__name__

        def delete_it(i: int = exp.id) -> str:
            try:
                store.delete_experiment(i)
                return "deleted"
            except (Conflict, NotFound) as exc:
                return type(exc).__name__

        with ThreadPoolExecutor(2) as pool:
            outcomes.extend(f.result() for f in [pool.submit(deploy_it), pool.submit(delete_it)])
    assert set(outcomes) <= {"deployed", "deleted", "Conflict", "NotFound"}


def test_chunked_body_over_the_limit_is_413(demo_env: Path, monkeypatch: pytest.MonkeyPatch,
                                            live_server: str) -> None:
    import requests

    from common import context as ctx

    monkeypatch.setenv("MLFN_MAX_BODY_BYTES", "4096")
    ctx.reset()

    def chunks():  # no Content-Length: sent with Transfer-Encoding: chunked
        yield b'{"records": ['
        for _ in range(200):
            yield b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},'
        yield b"{}]}"

    reply = requests.post(f"{live_server}/forward_batch?model=iris", data=chunks(), timeout=30,
                          headers={"Content-Type": "application/json"})
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"] == "payload too large"
    ok = requests.post(f"{live_server}/forward?model=iris", timeout=30, json={
        "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2})
    assert ok.status_code == 200


def _fence_model(name: str) -> None:
    make_model(name)
    rows = [{"a": float(i), "b": float(i % 7), "y": "p" if (i * 7) % 5 > 1 else "q"}
            for i in range(40)]
    assert invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": name},
                  {"records": rows}).status == 200


def test_an_attempt_whose_lease_was_taken_over_writes_nothing(embedded: Callable[[], None]) -> None:
    """Attempt 1 is slow, its lease runs out, attempt 2 trains and deploys. When attempt 1 ends
    it must neither record an outcome nor touch (overwrite or delete) the deployed model file."""
    import hashlib
    from datetime import timedelta

    from common.domain import utcnow
    from common.errors import Conflict
    from common.names import model_key

    _fence_model("fence")
    life = context.lifecycle()
    life.jobs = None
    exp = life.retrain("fence", {"model_class": "logistic_regression", "deploy": "always"})
    first = life._claim(exp.id)
    assert first is not None and first.attempts == 1
    life.store.update_experiment(exp.id, {"lease_until": utcnow() - timedelta(seconds=1)})
    second = life.run_experiment(exp.id)
    assert second.status is ExperimentStatus.succeeded and second.attempts == 2
    assert life.store.deployed_experiment("fence") == exp.id
    key = second.artifact_key
    assert key == model_key("fence", exp.id, 2)
    digest = hashlib.sha256(context.backends().models.get(key)).hexdigest()
    with pytest.raises(Conflict, match="no longer holds the job"):
        life._train(first)  # the stale attempt finishes its training now
    assert hashlib.sha256(context.backends().models.get(key)).hexdigest() == digest
    assert not context.backends().models.exists(model_key("fence", exp.id, 1))
    after = life.store.get_experiment(exp.id)
    assert after.status is ExperimentStatus.succeeded and after.attempts == 2
    reply = invoke(forward.handler, "v1", "POST", "/forward", {"model": "fence"}, {"a": 1.0, "b": 1.0})
    assert reply.status == 200, reply.body


def test_if_better_does_not_replace_a_model_deployed_while_it_trained(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    _fence_model("champ")
    life = context.lifecycle()
    life.jobs = None
    weak = life.train_now("champ", {"model_class": "logistic_regression", "deploy": "always"})
    strong = life.train_now("champ", {"model_class": "random_forest", "deploy": "never"})
    challenger = life.retrain("champ", {"model_class": "logistic_regression",
                                        "deploy": "if_better"})

    def champion_replaced_meanwhile(model: object, trained: object) -> dict[str, float]:
        life.deploy(strong.id)  # another user deploys while the challenger trains
        return {"f1_macro": -1.0}  # the challenger beats the champion it was compared with

    monkeypatch.setattr(life, "_score_champion", champion_replaced_meanwhile)
    done = life.run_experiment(challenger.id)
    assert weak.id != strong.id
    assert done.status is ExperimentStatus.succeeded
    assert life.store.deployed_experiment("champ") == strong.id
    assert done.error is not None and done.error.startswith("not deployed")
    assert f"experiment {strong.id} was deployed" in done.error


def test_messages_say_what_to_fix(embedded: Callable[[], None]) -> None:
    """Mistakes a new user makes get an answer that names the fix."""
    make_model("hints", "regression", "price")
    put = {"Content-Type": "text/csv"}
    cases = [
        # curl -d @file.csv strips the line breaks: one long header
        (add_data.handler, "PUT", "/add_data", "size,rooms,price" + "".join(
            f"{i},{i % 3},{i * 10}" for i in range(12)), put, 400, "--data-binary"),
        (add_data.handler, "PUT", "/add_data", "size;rooms;price\n1;2;3\n", put, 400,
         "separated by something other than commas"),
        (add_data.handler, "POST", "/add_data", "size,price\n1,2\n", put, 405, "use PUT"),
        (retrain.handler, "POST", "/retrain", {"model_class": "svm"}, None, 405, "use PUT"),
    ]
    for handler, method, path, body, headers, status, needle in cases:
        reply = invoke(handler, "v1", method, path, {"model": "hints"}, body, headers)
        assert reply.status == status, (path, reply.body)
        assert needle in reply.json()["detail"], reply.json()
    assert invoke(add_data.handler, "v1", "POST", "/add_data", {"model": "hints"}, "x",
                  put).headers.get("allow") == "PUT"
    reply = invoke(add_data.handler, "v2", "PUT", "/add_data", None, "size,price\n1,2\n", put)
    assert reply.status == 400
    assert reply.json()["detail"] == "query parameter 'model' is required (add ?model=...)"
    rows = "".join(f"{i},{i * 10}\n" for i in range(12))
    assert invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "hints"},
                  "size,price\n" + rows, put).status == 200
    life = context.lifecycle()
    life.jobs = None
    life.train_now("hints", {"model_class": "svm", "deploy": "always"})
    # a CSV batch without its header row
    reply = invoke(forward_batch.handler, "v1", "POST", "/forward_batch", {"model": "hints"},
                   "3\n4\n", put)
    assert reply.status == 400 and "header row missing" in reply.json()["detail"], reply.body
    make_model("two", "regression", "y")
    assert invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "two"},
                  "a,b,y\n" + "".join(f"{i},{i % 4},{i}\n" for i in range(12)), put).status == 200
    life.train_now("two", {"model_class": "svm", "deploy": "always"})
    reply = invoke(forward.handler, "v1", "POST", "/forward", {"model": "two"}, {})
    assert reply.status == 400 and reply.json()["detail"] == "missing features 'a', 'b'"


def test_first_upload_that_cannot_be_stored_fixes_no_schema(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    make_model("outage")
    datasets = context.backends().datasets

    def unreachable(key: str, data: bytes) -> None:
        raise ConnectionError("object store unreachable")

    monkeypatch.setattr(datasets, "put", unreachable)
    text_a = {"records": [{"a": f"t{i}", "y": "p" if i % 2 else "q"} for i in range(12)]}
    reply = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "outage"}, text_a)
    assert reply.status == 503 and reply.json()["error"] == "service unavailable"
    assert context.backends().experiments.get_model("outage").features is None
    monkeypatch.undo()
    numeric_a = {"records": [{"a": float(i), "y": "p" if i % 2 else "q"} for i in range(12)]}
    reply = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "outage"}, numeric_a)
    assert reply.status == 200, reply.body
    (feature,) = context.backends().experiments.get_model("outage").features or []
    assert feature.kind.value == "numeric"


def test_concurrent_first_uploads_agree_on_one_schema(embedded: Callable[[], None]) -> None:
    import json

    from common.errors import BadRequest

    make_model("firsts")
    numeric = {"records": [{"a": float(i), "y": "p" if i % 2 else "q"} for i in range(12)]}
    text = {"records": [{"a": f"t{i}", "y": "p" if i % 2 else "q"} for i in range(12)]}
    life = context.lifecycle()

    def upload(body: dict) -> str:
        try:
            life.add_frame_or_archive("firsts", "json", json.dumps(body).encode())
            return "ok"
        except BadRequest:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(upload, [numeric, text] * 4))
    (feature,) = context.backends().experiments.get_model("firsts").features or []
    stored = context.backends().experiments.dataset_parts("firsts")
    # Whichever schema won, only the uploads that fit it were stored (JSON numbers are not
    # categories and text is not a number): the four of the winning kind.
    assert outcomes.count("ok") == len(stored) == 4, outcomes
    winner = 0 if feature.kind.value == "numeric" else 1
    assert [o == "ok" for o in outcomes] == [i % 2 == winner for i in range(8)], outcomes


def test_405_names_every_method_of_the_path(embedded: Callable[[], None]) -> None:
    reply = invoke(models.handler, "v1", "PUT", "/models", None, {"name": "x"})
    assert reply.status == 405
    assert reply.json()["detail"] == "PUT is not allowed on /models; use GET, POST"
    assert reply.headers["allow"] == "GET, POST"


def test_outages_map_to_503_and_other_errors_to_500() -> None:
    import sqlite3

    from common.web.guard import unexpected_reply

    assert unexpected_reply(ConnectionResetError("reset"))[0] == 503
    assert unexpected_reply(TimeoutError())[0] == 503
    assert unexpected_reply(sqlite3.OperationalError("attempt to write a readonly database"))[0] == 500
    assert unexpected_reply(ValueError("bug"))[0] == 500
    try:
        import psycopg
    except ImportError:
        return
    assert unexpected_reply(psycopg.OperationalError("connection refused"))[0] == 503
    assert unexpected_reply(psycopg.errors.DiskFull("disk full"))[0] == 500


def test_an_upload_whose_registration_times_out_after_applying_keeps_its_bytes(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    make_model("ambiguous")
    store = context.backends().experiments
    applied = store.add_dataset_part

    def applied_then_timed_out(*args: object, **kwargs: object) -> object:
        applied(*args, **kwargs)  # type: ignore[arg-type]
        raise TimeoutError("the answer was lost")

    monkeypatch.setattr(store, "add_dataset_part", applied_then_timed_out)
    rows = {"records": [{"a": float(i), "y": "p" if i % 2 else "q"} for i in range(12)]}
    reply = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "ambiguous"}, rows)
    assert reply.status == 503 and "check before repeating" in reply.json()["detail"]
    (part,) = store.dataset_parts("ambiguous")
    assert context.backends().datasets.exists(part.key)  # registered, so its file stays


def test_a_job_inside_its_lease_is_retried_once_when_the_lease_runs_out(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """recover() twice (two restarts) inside the lease: the job is retried exactly once, by
    whichever worker claims it first after the lease, and not before."""
    from common.domain import utcnow

    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "1.5")
    monkeypatch.setenv("MLFN_JOB_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("MLFN_JOB_POLL_SECONDS", "0.1")
    context.reset()
    _fence_model("timers")
    life = context.lifecycle()
    queued = life.jobs
    life.jobs = None
    exp = life.retrain("timers", {"model_class": "svm"})
    claimed = life._claim(exp.id)  # by a worker that dies at once: its lease is never renewed
    assert claimed is not None and claimed.lease_until is not None
    assert claimed.lease_until > utcnow()
    life.jobs = queued
    assert life.recover() == [] and life.recover() == []
    time.sleep(0.5)
    assert life.store.get_experiment(exp.id).status is ExperimentStatus.running  # not before
    deadline = time.monotonic() + 60
    while life.store.get_experiment(exp.id).status is ExperimentStatus.running:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    embedded()
    done = life.store.get_experiment(exp.id)
    assert done.status is ExperimentStatus.succeeded and done.attempts == 2, done
