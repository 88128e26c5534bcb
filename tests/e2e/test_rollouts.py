"""Issue 15: safe rollouts. A canary answers its share of the requests (by request id, so a
retry lands on the same side), a shadow scores the champion's requests without answering,
feedback joins true outcomes to the calls, live metrics equal scikit-learn's on the joined
pairs, and a guarded canary is rolled back when it does worse than the champion, not when it
does as well. Through API Gateway events where the route is the point, on every store where the
state is."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from common import context
from common.errors import Conflict, NotFound
from common.monitoring import REQUEST_ID
from common.storage.rollouts import StaleRollout, in_canary, rollout_store
from functions.deploy import handler as deploy
from functions.deployments import handler as deployments
from functions.experiments import handler as experiments
from functions.forward import handler as forward
from functions.forward_batch import handler as forward_batch
from functions.models import handler as models
from functions.rollouts import handler as rollouts
from tests.apigw import Reply, invoke
from tests.lifecycle_data import churn_rows

MODEL = {"model": "churn"}
FEATURES = ("tenure", "charges", "plan", "region")


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_context: None) -> Iterator[None]:
    monkeypatch.setenv("MLFN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFN_DEMO_MODELS", "false")
    monkeypatch.setenv("MLFN_DEPLOY_CHECK_SECONDS", "0")
    monkeypatch.setenv("MLFN_GUARD_CHECK_SECONDS", "0")
    monkeypatch.setenv("MLFN_GUARD_MIN_REQUESTS", "100")
    monkeypatch.setenv("MLFN_EMF", "false")
    for key in ("MLFN_OBJECT_STORE", "MLFN_EXPERIMENT_STORE", "MLFN_JOB_QUEUE", "MLFN_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    context.reset()
    yield
    context.reset()


def churn_model(rows: int = 400) -> None:
    life = context.lifecycle()
    life.create_model({"name": "churn", "task": "classification", "target": "churned"})
    life.add_frame("churn", pd.DataFrame(churn_rows(rows)))


def train(model_class: str = "logistic_regression", deploy_policy: str = "never") -> int:
    exp = context.lifecycle().train_now("churn", {"model_class": model_class, "deploy": deploy_policy})
    assert exp.status.value == "succeeded", exp
    return exp.id


def champion_and_challengers(n: int = 2) -> tuple[int, list[int]]:
    churn_model()
    champion = train(deploy_policy="always")
    return champion, [train("random_forest" if i % 2 == 0 else "logistic_regression")
                      for i in range(n)]


def features(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in FEATURES}


def predict(record: dict[str, Any], request_id: str | None = None) -> Reply:
    headers = {} if request_id is None else {"X-Request-Id": request_id}
    return invoke(forward.handler, "v2", "POST", "/forward", MODEL, record, headers)


def start(experiment_id: int, **query: str) -> Reply:
    return invoke(deploy.handler, "v1", "POST", f"/deploy/{experiment_id}", {**MODEL, **query})


def state() -> dict[str, Any]:
    reply = invoke(rollouts.handler, "v2", "GET", "/rollout", MODEL)
    assert reply.status == 200, reply.body
    return reply.json()


# -- canary routing --------------------------------------------------------------------------
def test_the_canary_answers_its_share_and_a_retry_lands_on_the_same_side(service: None) -> None:
    champion, (canary, _) = champion_and_challengers()
    reply = start(canary, canary="20")
    assert reply.status == 200, reply.body
    assert reply.json()["canary"]["experiment_id"] == canary
    assert reply.json()["canary"]["share"] == 20.0 and reply.json()["deployed"] == champion

    serving, record = context.serving(), features(churn_rows(1, seed=5)[0])
    answered: Counter[int] = Counter()
    ids = [uuid.uuid4().hex for _ in range(5000)]
    for request_id in ids:
        token = REQUEST_ID.set(request_id)
        try:
            answered[serving.forward("churn", record)["experiment_id"]] += 1
        finally:
            REQUEST_ID.reset(token)
    assert set(answered) == {champion, canary}
    assert abs(answered[canary] / 5000 - 0.20) <= 0.03, answered

    # Over HTTP: the answer carries the request id; the same id always gets the same model.
    for request_id in ids[:20]:
        sides = {predict(record, request_id).json()["experiment_id"] for _ in range(3)}
        expected = canary if in_canary(request_id, "churn", 20.0) else champion
        assert sides == {expected}
    reply = predict(record)
    assert reply.headers["x-request-id"] and reply.json()["experiment_id"] in (champion, canary)


def test_batches_are_routed_and_the_inference_log_names_the_side(service: None) -> None:
    champion, (canary, _) = champion_and_challengers()
    assert start(canary, canary="50").status == 200
    rows = [features(r) for r in churn_rows(3, seed=2)]
    seen = {}
    for i in range(40):
        request_id = f"batch-{i}"
        reply = invoke(forward_batch.handler, "v1", "POST", "/forward_batch", MODEL,
                       {"records": rows}, {"X-Request-Id": request_id})
        assert reply.status == 200, reply.body
        seen[request_id] = reply.json()["experiment_id"]
    assert set(seen.values()) == {champion, canary}
    log = context.backends().experiments.calls_since("churn", pd.Timestamp(0, tz="UTC"))
    by_id = {c["request_id"]: c for c in log}
    for request_id, experiment_id in seen.items():
        call = by_id[request_id]
        assert call["experiment_id"] == experiment_id
        assert call["role"] == ("canary" if experiment_id == canary else "champion")
        assert len(call["predictions"]) == 3


def test_promoting_and_ending_a_canary_under_traffic_fails_no_request(service: None) -> None:
    champion, (canary, other) = champion_and_challengers()
    assert start(canary, canary="30").status == 200
    serving, record = context.serving(), features(churn_rows(1, seed=9)[0])
    stop, failures, answered = threading.Event(), [], Counter()

    def traffic() -> None:
        while not stop.is_set():
            token = REQUEST_ID.set(uuid.uuid4().hex)
            try:
                answered[serving.forward("churn", record)["experiment_id"]] += 1
            except Exception as exc:  # any failure fails the test
                failures.append(repr(exc))
            finally:
                REQUEST_ID.reset(token)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        def changed(reply: Reply) -> None:
            assert reply.status == 200, reply.body
            time.sleep(0.05)  # let traffic see each state

        for _ in range(3):
            changed(start(other, canary="40"))  # replace the canary
            changed(invoke(rollouts.handler, "v1", "DELETE", "/canary", MODEL))
            changed(start(canary, canary="30"))
        changed(start(canary))  # promote: deploying the canary ends it
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert set(answered) <= {champion, canary, other} and sum(answered.values()) > 50
    now = state()
    assert now["deployed"] == canary and now["canary"] is None
    reasons = [h["reason"] for h in now["history"] if h["event"] == "canary ended"]
    assert reasons[-1] == "promoted" and "ended by request" in reasons and "replaced" in reasons
    token = REQUEST_ID.set("after")
    try:
        assert serving.forward("churn", record)["experiment_id"] == canary
    finally:
        REQUEST_ID.reset(token)


# -- shadow ----------------------------------------------------------------------------------
def test_the_shadow_never_changes_an_answer_and_is_logged_beside_the_champion(service: None) -> None:
    champion, (shadow, _) = champion_and_challengers()
    rows = [features(r) for r in churn_rows(30, seed=4)]
    before = [predict(r, f"before-{i}").json() for i, r in enumerate(rows)]
    reply = start(shadow, shadow="true")
    assert reply.status == 200 and reply.json()["shadow"]["experiment_id"] == shadow
    after = [predict(r, f"after-{i}").json() for i, r in enumerate(rows)]
    assert [a["prediction"] for a in after] == [b["prediction"] for b in before]
    assert {a["experiment_id"] for a in after} == {champion}
    assert [a["probabilities"] for a in after] == [b["probabilities"] for b in before]

    log = context.backends().experiments.calls_since("churn", pd.Timestamp(0, tz="UTC"))
    shadowed = {c["request_id"]: c for c in log if c["role"] == "shadow"}
    assert set(shadowed) == {f"after-{i}" for i in range(len(rows))}
    assert {c["experiment_id"] for c in shadowed.values()} == {shadow}
    live = invoke(rollouts.handler, "v2", "GET", "/live_metrics", MODEL).json()
    assert live["agreement"]["requests"] == len(rows)
    shadow_preds = [shadowed[f"after-{i}"]["predictions"][0] for i in range(len(rows))]
    expected = sum(s == a["prediction"] for s, a in zip(shadow_preds, after, strict=True)) / len(rows)
    assert live["agreement"]["shadow_agrees"] == pytest.approx(expected)

    assert invoke(rollouts.handler, "v1", "DELETE", "/shadow", MODEL).status == 200
    assert state()["shadow"] is None
    missing = invoke(rollouts.handler, "v1", "DELETE", "/shadow", MODEL)
    assert missing.status == 404 and "no shadow" in missing.json()["detail"]


def test_a_sampled_shadow_scores_its_share_of_the_requests_by_request_id(service: None) -> None:
    champion, (shadow, _) = champion_and_challengers()
    reply = start(shadow, shadow="true", sample="20")
    assert reply.status == 200 and reply.json()["shadow"]["sample"] == 20.0
    serving, record = context.serving(), features(churn_rows(1, seed=3)[0])
    ids = [f"sampled-{i}" for i in range(2000)]
    for n, request_id in enumerate(ids + ids[:200]):  # the first 200 twice: a retry is
        token = REQUEST_ID.set(request_id)              # sampled alike
        try:
            assert serving.forward("churn", record)["experiment_id"] == champion
        finally:
            REQUEST_ID.reset(token)
        if n % 200 == 0:
            serving.flush_shadow()  # never overloaded: this test is about the sample
    serving.flush_shadow()
    assert serving._shadows.dropped == 0
    serving.monitor.flush()
    log = context.backends().experiments.calls_since("churn", pd.Timestamp(0, tz="UTC"))
    scored = Counter(c["request_id"] for c in log if c["role"] == "shadow")
    first = {i for i in ids if i in scored}
    assert abs(len(first) / len(ids) - 0.20) <= 0.03, len(first)
    assert {scored[i] for i in ids[:200] if i in scored} == {2}  # retried: scored again
    # The sample is not the canary's split: a 20 % canary and a 20 % sample pick other ids.
    assert first != {i for i in ids if in_canary(i, "churn", 20.0)}

    # Changing the sample of the current shadow keeps it and records the change.
    reply = start(shadow, shadow="true", sample="100")
    assert reply.status == 200 and reply.json()["shadow"]["sample"] == 100.0
    last = reply.json()["history"][-1]
    assert (last["event"], last["sample"], last["previous_sample"]) == ("shadow sample changed", 100.0,
                                                                       20.0)
    assert reply.json()["shadow"]["since"] == state()["shadow"]["since"]


def test_an_overloaded_shadow_drops_its_work_and_the_answers_do_not_wait(
        service: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_SHADOW_QUEUE", "2")
    context.reset()
    champion, (shadow, _) = champion_and_challengers()
    assert start(shadow, shadow="true").status == 200
    serving, record = context.serving(), features(churn_rows(1, seed=3)[0])
    token = REQUEST_ID.set("warm")
    try:
        serving.forward("churn", record)
        serving.flush_shadow()
        scorer = serving._shadows
        with scorer._lock:  # the shadow is stuck: nothing it queued gets scored
            for i in range(50):
                REQUEST_ID.set(f"busy-{i}")
                assert serving.forward("churn", record)["experiment_id"] == champion
            assert scorer.dropped >= 47
    finally:
        REQUEST_ID.reset(token)
    serving.flush_shadow()
    serving.monitor.flush()
    log = context.backends().experiments.calls_since("churn", pd.Timestamp(0, tz="UTC"))
    assert sum(c["role"] == "shadow" for c in log) <= 4
    assert sum(c["role"] == "champion" for c in log) == 51


def test_a_failing_shadow_does_not_fail_the_answer(service: None) -> None:
    champion, (shadow, _) = champion_and_challengers()
    assert start(shadow, shadow="true").status == 200
    backends = context.backends()
    for key in backends.models.list(f"churn/{shadow}/"):  # its graph is gone
        backends.models.delete(key)
    context.serving().sessions = type(context.serving().sessions)(4)
    reply = predict(features(churn_rows(1)[0]), "shadow-gone")
    assert reply.status == 200 and reply.json()["experiment_id"] == champion


# -- feedback and live metrics ---------------------------------------------------------------
def test_live_metrics_on_feedback_equal_scikit_learn(service: None) -> None:
    champion, (canary, _) = champion_and_challengers()
    assert start(canary, canary="50").status == 200
    live_rows = churn_rows(200, seed=11)
    served: dict[int, list[tuple[str, str]]] = {champion: [], canary: []}
    outcomes = []
    for i, row in enumerate(live_rows):
        answer = predict(features(row), f"live-{i}").json()
        served[answer["experiment_id"]].append((answer["prediction"], row["churned"]))
        if i % 4:  # a quarter of the outcomes never come back
            outcomes.append({"request_id": f"live-{i}", "label": row["churned"]})
        else:
            served[answer["experiment_id"]].pop()
    csv_part = "request_id,label\n" + "".join(f"{o['request_id']},{o['label']}\n" for o in outcomes[:50])
    reply = invoke(rollouts.handler, "v1", "POST", "/feedback", MODEL, csv_part,
                   {"Content-Type": "text/csv"})
    assert reply.status == 200 and reply.json()["outcomes"] == 50, reply.body
    reply = invoke(rollouts.handler, "v2", "POST", "/feedback", MODEL, outcomes[50:])
    assert reply.status == 200 and reply.json()["outcomes"] == len(outcomes) - 50
    assert reply.json()["matched"] == len(outcomes) - 50 and reply.json()["unmatched"] == []
    # Outcomes of requests never served are kept but named (the first 20).
    stray = [{"request_id": f"never-served-{i}", "label": "yes"} for i in range(25)]
    reply = invoke(rollouts.handler, "v2", "POST", "/feedback", MODEL,
                   [*stray, {"request_id": "live-1", "label": live_rows[1]["churned"]}])
    assert reply.json()["outcomes"] == 26 and reply.json()["matched"] == 1
    assert reply.json()["unmatched"] == [f"never-served-{i}" for i in range(20)]

    live = invoke(rollouts.handler, "v2", "GET", "/live_metrics", MODEL).json()
    sides = {(e["role"], e["experiment_id"]): e for e in live["experiments"]}
    assert set(sides) == {("champion", champion), ("canary", canary)}
    for (_, experiment_id), side in sides.items():
        pred, true = zip(*served[experiment_id], strict=True)
        assert side["with_outcome"] == len(pred)
        assert side["metrics"]["accuracy"] == pytest.approx(accuracy_score(true, pred))
        assert side["metrics"]["f1_macro"] == pytest.approx(
            f1_score(true, pred, average="macro", labels=sorted(set(true) | set(pred))))
    assert sum(s["requests"] for s in sides.values()) == len(live_rows)

    # A window that starts after every call has nothing in it.
    later = invoke(rollouts.handler, "v2", "GET", "/live_metrics",
                   {**MODEL, "since": "2999-01-01T00:00:00"}).json()
    assert later["experiments"] == []


def test_regression_live_metrics_and_batch_rows(service: None) -> None:
    life = context.lifecycle()
    life.create_model({"name": "churn", "task": "regression", "target": "charges"})
    rows = churn_rows(300)
    life.add_frame("churn", pd.DataFrame(rows).drop(columns=["churned"]))
    champion = train("random_forest", deploy_policy="always")
    batch = [{k: r[k] for k in ("tenure", "plan", "region")} for r in rows[:5]]
    reply = invoke(forward_batch.handler, "v1", "POST", "/forward_batch", MODEL,
                   {"records": batch}, {"X-Request-Id": "reg-1"})
    predictions = reply.json()["predictions"]
    truth = [r["charges"] for r in rows[:5]]
    reply = invoke(rollouts.handler, "v2", "POST", "/feedback", MODEL,
                   [{"request_id": "reg-1", "row": i, "label": t} for i, t in enumerate(truth)])
    assert reply.status == 200, reply.body
    live = invoke(rollouts.handler, "v2", "GET", "/live_metrics", MODEL).json()
    (side,) = live["experiments"]
    assert side["experiment_id"] == champion and side["with_outcome"] == 5
    errors = [p - t for p, t in zip(predictions, truth, strict=True)]
    assert side["metrics"]["mae"] == pytest.approx(sum(abs(e) for e in errors) / 5, rel=1e-6)
    assert side["metrics"]["rmse"] == pytest.approx((sum(e * e for e in errors) / 5) ** 0.5, rel=1e-6)
    bad = invoke(rollouts.handler, "v2", "POST", "/feedback", MODEL,
                 [{"request_id": "reg-1", "label": "a lot"}])
    assert bad.status == 400 and "label must be a finite number" in bad.json()["detail"]


# -- the guard -------------------------------------------------------------------------------
def serve_with_feedback(rows: list[dict[str, Any]], prefix: str) -> None:
    for i, row in enumerate(rows):
        assert predict(features(row), f"{prefix}-{i}").status == 200
    reply = invoke(rollouts.handler, "v2", "POST", "/feedback", MODEL,
                   [{"request_id": f"{prefix}-{i}", "label": r["churned"]} for i, r in enumerate(rows)])
    assert reply.status == 200, reply.body


def test_a_guarded_canary_as_good_as_the_champion_stays(service: None) -> None:
    churn_model()
    train(deploy_policy="always")
    twin = train()  # the same class on the same data
    assert start(twin, canary="50", guard="true").status == 200
    serve_with_feedback(churn_rows(400, seed=21), "eq")
    serve_with_feedback(churn_rows(50, seed=22), "eq2")
    now = state()
    assert now["canary"] is not None and now["canary"]["guard"] is True, now["history"]


def test_a_guarded_canary_trained_on_shuffled_labels_is_rolled_back(service: None) -> None:
    churn_model()
    champion = train(deploy_policy="always")
    life = context.lifecycle()
    shuffled = pd.DataFrame(churn_rows(400, seed=1))
    shuffled["churned"] = random.Random(0).sample(list(shuffled["churned"]), len(shuffled))
    life.add_frame("churn", shuffled)
    life.remove_part("churn", 1)
    bad = train("random_forest")
    assert start(bad, canary="50", guard="true").status == 200
    serve_with_feedback(churn_rows(400, seed=31), "bad")
    now = state()
    assert now["canary"] is None, now
    ended = now["history"][-1]
    assert ended["event"] == "canary ended" and ended["experiment_id"] == bad
    assert ended["reason"].startswith("auto-rollback: ")
    assert "f1_macro" in ended["reason"] or "accuracy" in ended["reason"]
    # The deploy history records it too, newest first, between the deploys.
    history = invoke(deployments.handler, "v2", "GET", "/deployments", MODEL).json()
    assert [(h["event"], h["experiment_id"]) for h in history] == [
        ("canary ended", bad), ("canary started", bad), ("deploy", champion)]
    assert history[0]["reason"] == ended["reason"]
    assert predict(features(churn_rows(1)[0]), "bad-0").json()["experiment_id"] == champion


def test_guarded_canaries_need_the_inference_log(aws: str, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path, fresh_context: None) -> None:
    for key, value in {"MLFN_EXPERIMENT_STORE": "dynamodb", "MLFN_OBJECT_STORE": "s3",
                       "MLFN_DATA_DIR": str(tmp_path), "MLFN_DEMO_MODELS": "false"}.items():
        monkeypatch.setenv(key, value)
    context.reset()
    context.backends().ensure_cloud_resources()
    _, (canary, _) = champion_and_challengers()
    reply = start(canary, canary="10", guard="true")
    assert reply.status == 409 and "inference log" in reply.json()["detail"]
    assert state()["canary"] is None
    assert start(canary, canary="10").status == 200  # unguarded works on DynamoDB
    missing = invoke(rollouts.handler, "v2", "GET", "/live_metrics", MODEL)
    assert missing.status == 404 and "inference log" in missing.json()["detail"]


# -- bad input leaves the rollout as it was --------------------------------------------------
@pytest.mark.parametrize(("query", "status", "words"), [
    ({"canary": "0"}, 400, "'canary' must be between 1 and 99"),
    ({"canary": "100"}, 400, "'canary' must be between 1 and 99"),
    ({"canary": "ten"}, 400, "'canary' must be an integer"),
    ({"canary": "10", "guard": "maybe"}, 400, "'guard' must be true or false"),
    ({"guard": "true"}, 400, "'guard' applies to a canary"),
    ({"canary": "10", "shadow": "true"}, 400, "either 'canary' or 'shadow'"),
    ({"shadow": "yes"}, 400, "'shadow' must be true or false"),
    ({"sample": "10"}, 400, "'sample' applies to a shadow"),
    ({"shadow": "true", "sample": "0"}, 400, "'sample' must be between 1 and 100"),
    ({"shadow": "true", "sample": "101"}, 400, "'sample' must be between 1 and 100"),
    ({"canary": "10", "sample": "10"}, 400, "'sample' applies to a shadow"),
])
def test_bad_rollout_requests_name_the_parameter(service: None, query: dict[str, str], status: int,
                                                 words: str) -> None:
    _, (canary, shadow) = champion_and_challengers()
    assert start(shadow, shadow="true").status == 200
    before = state()
    reply = start(canary, **query)
    assert reply.status == status and words in reply.json()["detail"], reply.body
    assert state() == before


def test_rollout_conflicts(service: None) -> None:
    champion, (canary, shadow) = champion_and_challengers()
    failed = context.lifecycle().retrain("churn", {"model_class": "logistic_regression"})
    # queued, not yet succeeded (no worker drains it in this test before the check)
    cases = [(champion, {"canary": "10"}, "is the deployed one"),
             (failed.id, {"canary": "10"}, "only a succeeded experiment"),
             (champion, {"shadow": "true"}, "is the deployed one")]
    for experiment_id, query, words in cases:
        reply = start(experiment_id, **query)
        assert reply.status == 409 and words in reply.json()["detail"], reply.body
    context.wait_for_jobs()
    assert start(canary, canary="10").status == 200
    reply = start(canary, shadow="true")
    assert reply.status == 409 and "is the canary" in reply.json()["detail"]
    assert start(shadow, shadow="true").status == 200
    reply = start(shadow, canary="5")
    assert reply.status == 409 and "is the shadow" in reply.json()["detail"]
    for experiment_id, role in ((canary, "canary"), (shadow, "shadow")):
        reply = invoke(experiments.handler, "v1", "DELETE", f"/experiments/{experiment_id}", MODEL)
        assert reply.status == 409 and role in reply.json()["detail"], reply.body
    assert state()["canary"]["experiment_id"] == canary and state()["shadow"]["experiment_id"] == shadow
    unknown = invoke(rollouts.handler, "v2", "GET", "/rollout", {"model": "nope"})
    assert unknown.status == 404


@pytest.mark.parametrize(("body", "content_type", "words"), [
    ({"request_id": "a", "label": "yes"}, "application/json", "body must be ["),
    ([], "application/json", "body must be ["),
    ([{"label": "yes"}], "application/json", "outcome 0: expected"),
    ([{"request_id": "a", "label": "yes"}, {"request_id": 5, "label": "no"}], "application/json",
     "outcome 1: request_id must be"),
    ([{"request_id": "a", "label": None}], "application/json", "outcome 0: label must be"),
    ([{"request_id": "a", "label": "no", "row": -1}], "application/json", "row must be a non-negative"),
    ("id,label\na,yes\n", "text/csv", "header must be request_id,label"),
    ("request_id,label\na,yes,3\n", "text/csv", "CSV line 2"),
    ("request_id,label,row\na,yes,x\n", "text/csv", "row must be a non-negative"),
    ("[{", "application/json", "malformed JSON"),
])
def test_bad_feedback_names_the_field_and_stores_nothing(service: None, body: Any, content_type: str,
                                                         words: str) -> None:
    churn_model(60)
    train(deploy_policy="always")
    headers = {"Content-Type": content_type}
    reply = invoke(rollouts.handler, "v2", "POST", "/feedback", MODEL,
                   body if isinstance(body, str) else json.dumps(body), headers)
    assert reply.status == 400 and words in reply.json()["detail"], reply.body
    from common.rollouts import feedback_store

    assert feedback_store(context.backends()).since("churn", pd.Timestamp(0, tz="UTC")) == {}


def test_deleting_the_model_deletes_its_rollout_calls_and_outcomes(service: None) -> None:
    _, (canary, _) = champion_and_challengers()
    assert start(canary, canary="10").status == 200
    assert predict(features(churn_rows(1)[0]), "before-delete").status == 200
    reply = invoke(rollouts.handler, "v2", "POST", "/feedback", MODEL,
                   [{"request_id": "before-delete", "label": "yes"}])
    assert reply.json()["matched"] == 1
    assert invoke(models.handler, "v1", "DELETE", "/models/churn").status in (200, 204)
    churn_model(60)
    champion = train(deploy_policy="always")
    assert state()["canary"] is None and state()["history"] == []
    # The new model's live metrics know nothing of the old one's calls and outcomes.
    live = invoke(rollouts.handler, "v2", "GET", "/live_metrics", MODEL).json()
    assert live["experiments"] == []
    assert context.backends().experiments.calls_since("churn", pd.Timestamp(0, tz="UTC")) == []
    assert predict(features(churn_rows(1)[0]), "after").json()["experiment_id"] == champion
    reply = invoke(rollouts.handler, "v2", "POST", "/feedback", MODEL,
                   [{"request_id": "before-delete", "label": "yes"}])
    assert reply.json()["matched"] == 0 and reply.json()["unmatched"] == ["before-delete"]


# -- the record on every store ---------------------------------------------------------------
def test_rollout_state_on_every_store(any_store: str) -> None:
    _, (canary, shadow) = champion_and_challengers()
    ro = context.lifecycle().rollouts()
    ro.start_canary(canary, 25, guard=any_store != "dynamodb")
    ro.start_shadow(shadow)
    store = rollout_store(context.backends().experiments)
    read = store.get("churn")
    assert (read.canary, read.share, read.shadow) == (canary, 25.0, shadow)

    # Compare-and-set: a write from a stale read is refused, the fresh one lands.
    store.put("churn", read.__class__(**{**read.__dict__, "share": 30.0}))
    with pytest.raises(StaleRollout):
        store.put("churn", read.__class__(**{**read.__dict__, "share": 40.0}))
    assert store.get("churn").share == 30.0

    # Two changes at once both land (each retries on the other's write).
    ro.end_canary("churn")
    ro.end_shadow("churn")
    for _ in range(3):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(fn: Any, *args: Any, barrier: threading.Barrier = barrier,
                errors: list[BaseException] = errors) -> None:
            barrier.wait()
            try:
                fn(*args)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(ro.start_canary, canary, 10, False)),
                   threading.Thread(target=run, args=(ro.start_shadow, shadow))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        now = store.get("churn")
        assert (now.canary, now.shadow) == (canary, shadow)
        ro.end_canary("churn")
        ro.end_shadow("churn")
    events = [(h["event"], h.get("reason")) for h in ro.state("churn")["history"]]
    assert events[:4] == [("canary started", None), ("shadow started", None),
                          ("canary ended", "ended by request"), ("shadow ended", "ended by request")]
    assert sorted(events[4:6]) == [("canary started", None), ("shadow started", None)]
    assert len(events) == 16
    with pytest.raises(NotFound):
        ro.end_canary("churn")
    context.lifecycle().deploy(canary)
    ro.start_shadow(shadow)
    with pytest.raises(Conflict):
        context.lifecycle().delete_experiment(shadow)

