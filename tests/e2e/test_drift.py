"""Issue 15, drift: every tabular experiment carries a profile of its training rows; the
monitoring writer counts the served rows into its bins; GET /drift reports the PSI per feature
and for the predictions: about 0 on rows drawn from the training data, above 0.25 on a shifted
feature. On every store where the counts live (SQLite, PostgreSQL, DynamoDB on moto), through
API Gateway events."""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import onnx
import pandas as pd
import pytest

from common import context
from common.drift import PREDICTION
from common.names import model_key
from common.storage.drift import total
from functions.forward import handler as forward
from functions.forward_batch import handler as forward_batch
from functions.models import handler as models
from functions.rollouts import handler as rollouts
from tests.apigw import Reply, invoke
from tests.lifecycle_data import churn_rows

MODEL = {"model": "churn"}
FEATURES = ("tenure", "charges", "plan", "region")
TRAINING = churn_rows(400)


def features(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in FEATURES}


def churn_model() -> int:
    life = context.lifecycle()
    life.create_model({"name": "churn", "task": "classification", "target": "churned"})
    life.add_frame("churn", pd.DataFrame(TRAINING))
    exp = life.train_now("churn", {"model_class": "logistic_regression", "deploy": "always"})
    assert exp.status.value == "succeeded", exp
    return exp.id


def drift(**query: str) -> Reply:
    return invoke(rollouts.handler, "v2", "GET", "/drift", {**MODEL, **query})


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in report["features"]}


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_EMF", "false")
    context.reset()


def test_psi_is_near_zero_on_training_rows_and_high_on_a_shifted_feature(
        any_store: str, quiet: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every monitoring write persists its counts: what another instance (GET /drift on
    # Lambda) reads from the store, not this process's memory.
    monkeypatch.setenv("MLFN_DRIFT_FLUSH_SECONDS", "0")
    context.reset()
    experiment = churn_model()
    drawn = random.Random(1).choices(TRAINING, k=400)

    # Four clients at once: single forwards and batches; no count is lost.
    def client(rows: list[dict[str, Any]], single: bool) -> None:
        if single:
            for row in rows:
                assert invoke(forward.handler, "v2", "POST", "/forward", MODEL,
                              features(row)).status == 200
        else:
            for start in range(0, len(rows), 25):
                reply = invoke(forward_batch.handler, "v1", "POST", "/forward_batch", MODEL,
                               {"records": [features(r) for r in rows[start:start + 25]]})
                assert reply.status == 200, reply.body

    threads = [threading.Thread(target=client, args=(drawn[i * 100:(i + 1) * 100], i % 2 == 0))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    context.serving().monitor.flush()
    rows, counts = total(context.serving().drift_log(), "churn", experiment,
                         datetime(2000, 1, 1, tzinfo=UTC))
    assert rows == 400
    assert sum(counts["plan"]) == sum(counts["tenure"]) == sum(counts[PREDICTION]) == 400

    reply = drift()
    assert reply.status == 200, reply.body
    report = reply.json()
    assert report["experiment_id"] == experiment and report["rows"] == 400
    assert [f["name"] for f in report["features"]] != [] and set(by_name(report)) == set(FEATURES)
    for feature in report["features"]:
        assert feature["psi"] < 0.1, feature
        assert feature["drifted"] is False
    assert report["prediction"]["psi"] < 0.1
    assert report["drifted"] == [] and report["max_psi"] < 0.1

    # Now tenure moves up by five years and a plan the model never saw appears.
    since = datetime.now(UTC).isoformat()
    shifted = [{**features(r), "tenure": r["tenure"] + 60,
                "plan": "enterprise" if i % 2 else r["plan"]}
               for i, r in enumerate(random.Random(2).choices(TRAINING, k=300))]
    reply = invoke(forward_batch.handler, "v2", "POST", "/forward_batch", MODEL,
                   {"records": shifted})
    assert reply.status == 200, reply.body
    report = drift(since=since).json()
    assert report["rows"] == 300
    psi = {name: f["psi"] for name, f in by_name(report).items()}
    assert psi["tenure"] > 0.25 and psi["plan"] > 0.25, psi
    assert psi["charges"] < 0.1 and psi["region"] < 0.1, psi
    assert set(report["drifted"]) == {"tenure", "plan"}
    assert [f["name"] for f in report["features"]][:2] in (["tenure", "plan"], ["plan", "tenure"])
    assert report["max_psi"] == max(psi.values())

    # The whole window mixes both: 700 rows.
    assert drift().json()["rows"] == 700

    # Deleting the model deletes its counts.
    assert invoke(models.handler, "v2", "DELETE", "/models/churn").status == 204
    assert total(context.serving().drift_log(), "churn", experiment,
                 datetime(2000, 1, 1, tzinfo=UTC)) == (0, {})


def test_drift_counts_wait_for_their_window_and_missing_values_count(
        embedded: Any, quiet: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_DRIFT_FLUSH_SECONDS", "3600")
    monkeypatch.setenv("MLFN_DRIFT_MIN_ROWS", "50")
    context.reset()
    experiment = churn_model()
    for row in TRAINING[:40]:
        record = {**features(row), "charges": None, "region": None}
        assert invoke(forward.handler, "v2", "POST", "/forward", MODEL, record).status == 200
    context.serving().monitor.flush()
    start = datetime(2000, 1, 1, tzinfo=UTC)
    # Not persisted yet: the window is an hour long here ...
    assert total(context.serving().drift_log(), "churn", experiment, start) == (0, {})
    # ... GET /drift persists what this process counted first.
    report = drift().json()
    assert report["rows"] == 40
    features_ = by_name(report)
    assert features_["charges"]["missing_served"] == 1.0 == features_["region"]["missing_served"]
    assert features_["charges"]["missing_train"] == 0.0
    assert features_["charges"]["psi"] > 0.25
    # 40 rows are fewer than MLFN_DRIFT_MIN_ROWS: nothing is called drifted yet.
    assert report["drifted"] == [] and not features_["charges"]["drifted"]
    assert report["min_rows"] == 50 and report["threshold"] == 0.25
    assert total(context.serving().drift_log(), "churn", experiment, start)[0] == 40
    # Refused requests are not counted.
    bad = invoke(forward.handler, "v2", "POST", "/forward", MODEL, {**features(TRAINING[0]), "tenure": "x"})
    assert bad.status == 400
    assert drift().json()["rows"] == 40


def test_a_drift_window_emits_its_largest_psi_as_a_metric(
        embedded: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFN_EMF", "true")
    monkeypatch.setenv("MLFN_DRIFT_MIN_ROWS", "20")
    context.reset()
    experiment = churn_model()
    capfd.readouterr()
    records = [{**features(r), "tenure": r["tenure"] + 60} for r in TRAINING[:30]]
    assert invoke(forward_batch.handler, "v2", "POST", "/forward_batch", MODEL,
                  {"records": records}).status == 200
    report = drift().json()
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines()
             if '"DriftMaxPSI"' in line]
    assert len(lines) == 2, lines
    per_model = next(x for x in lines if "model" in x)
    service_only = next(x for x in lines if "model" not in x)
    assert per_model["experiment"] == str(experiment)
    assert per_model["DriftMaxPSI"] == [pytest.approx(report["max_psi"], abs=1e-5)]
    assert service_only["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert service_only["DriftMaxPSI"][0] > 0.25


def test_bad_drift_requests_name_the_parameter(embedded: Any, quiet: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = churn_model()
    assert invoke(rollouts.handler, "v2", "GET", "/drift", {"model": "nope"}).status == 404
    reply = drift(since="yesterday")
    assert reply.status == 400 and "since" in reply.json()["detail"]
    reply = drift(experiment="abc")
    assert reply.status == 400 and "experiment" in reply.json()["detail"]
    reply = drift(experiment=str(experiment + 100))
    assert reply.status == 404 and "version" in reply.json()["detail"]
    assert drift(experiment=str(experiment)).status == 200

    # A model of another name cannot lend its experiment.
    life = context.lifecycle()
    life.create_model({"name": "other", "task": "classification", "target": "churned"})
    assert invoke(rollouts.handler, "v2", "GET", "/drift",
                  {"model": "other", "experiment": str(experiment)}).status == 404

    monkeypatch.setenv("MLFN_DRIFT", "off")
    context.reset()
    reply = drift()
    assert reply.status == 409 and "MLFN_DRIFT" in reply.json()["detail"]


def test_an_experiment_exported_before_profiles_answers_409(embedded: Any, quiet: None) -> None:
    experiment = churn_model()
    # The model file as an earlier release wrote it: the same graph without a profile.
    store = context.backends().models
    key = context.backends().experiments.get_experiment(experiment).artifact_key or model_key(
        "churn", experiment)
    proto = onnx.load_from_string(store.get(key))
    kept = [p for p in proto.metadata_props if p.key != "profile"]
    assert len(kept) == len(proto.metadata_props) - 1
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    store.put(key, proto.SerializeToString())
    context.reset()
    # It still serves, and is simply not counted.
    assert invoke(forward.handler, "v2", "POST", "/forward", MODEL,
                  features(TRAINING[0])).status == 200
    reply = drift()
    assert reply.status == 409
    assert "no training profile" in reply.json()["detail"] and "retrain" in reply.json()["detail"]


def test_the_profile_rides_in_the_model_file(embedded: Any, quiet: None, tmp_path: Path) -> None:
    experiment = churn_model()
    session = context.serving().load("churn")
    profile = session.metadata["profile"]
    assert session.experiment_id == experiment
    assert set(profile["features"]) == set(FEATURES)
    tenure = profile["features"]["tenure"]
    assert tenure["kind"] == "numeric" and len(tenure["expected"]) == len(tenure["edges"]) + 2
    assert sum(tenure["expected"]) == pytest.approx(1.0)
    plan = profile["features"]["plan"]
    assert sorted(plan["categories"]) == ["basic", "plus", "premium"]
    assert plan["expected"][-2:] == [0.0, 0.0]  # no other category, nothing missing
    assert profile["prediction"]["categories"] == ["no", "yes"]
    assert profile["rows"] == 320  # the training split (80 % of 400)


def test_wide_models_fit_a_dynamodb_item(aws: str) -> None:
    """6000 features of 11 bins: ~0.5 MB of JSON, past DynamoDB's 400 KB item limit unless
    compressed."""
    import boto3
    import numpy as np

    from common.storage.drift import DynamoDrift

    log = DynamoDrift("drift-wide", boto3.client("dynamodb"), timedelta(days=1))
    log.ensure_table()
    rng = np.random.default_rng(0)
    counts = {f"feature_{i}": rng.integers(0, 100_000, 11).tolist() for i in range(6000)}
    assert len(json.dumps(counts)) > 400_000
    at = datetime.now(UTC)
    log.add("wide", 1, at, "w1", 5000, counts, 0.1)
    log.add("wide", 2, at, "w1", 10, {"x": [1]}, None)  # another experiment: not summed
    assert total(log, "wide", 1, at - timedelta(seconds=1)) == (5000, counts)
    assert total(log, "wide", 1, at + timedelta(seconds=1)) == (0, {})
    log.delete("wide")
    assert total(log, "wide", 2, at - timedelta(seconds=1)) == (0, {})


def test_drift_counts_with_every_other_monitoring_off(
        embedded: Any, quiet: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """No EMF, no inference log: the calls still reach the drift counts (and only them)."""
    monkeypatch.setenv("MLFN_INFERENCE_LOG", "off")
    monkeypatch.setenv("MLFN_DRIFT_FLUSH_SECONDS", "0")
    context.reset()
    experiment = churn_model()
    for row in TRAINING[:30]:
        assert invoke(forward.handler, "v2", "POST", "/forward", MODEL, features(row)).status == 200
    assert context.serving().monitor.dropped == 0 and not context.serving().monitor._events
    context.serving().monitor.flush()  # the writer's turn: persisted, being due
    assert total(context.serving().drift_log(), "churn", experiment,
                 datetime(2000, 1, 1, tzinfo=UTC))[0] == 30
    assert drift().json()["rows"] == 30
