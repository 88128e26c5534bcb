"""One contract for every ExperimentStore adapter: SQLite, DynamoDB (moto server), PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from common.domain import Experiment, ExperimentStatus, Feature, ModelRecord, Task, utcnow
from common.errors import Conflict, NotFound, SchemaConflict
from common.storage.ports import ExperimentStore


@pytest.fixture(params=["sqlite", "dynamodb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExperimentStore]:
    if request.param == "sqlite":
        from common.storage.sqlite_store import SqliteExperimentStore

        yield SqliteExperimentStore(tmp_path / "e.sqlite3")
    elif request.param == "dynamodb":
        request.getfixturevalue("aws")
        import boto3

        from common.storage.dynamodb_store import DynamoExperimentStore

        db = DynamoExperimentStore("contract", boto3.client("dynamodb"))
        db.ensure_table()
        yield db
    else:
        from common.storage.postgres_store import PostgresExperimentStore

        yield PostgresExperimentStore(request.getfixturevalue("pg_dsn"))


def model(name: str = "m1", **kw: object) -> ModelRecord:
    return ModelRecord(name=name, task=Task.classification, target="y", **kw)  # type: ignore[arg-type]


def succeeded(store: ExperimentStore, name: str = "m1") -> int:
    exp = store.create_experiment({"model": name, "model_class": "svm"})
    store.update_experiment(exp.id, {"status": ExperimentStatus.succeeded, "metrics": {"accuracy": 0.9}})
    return exp.id


def test_create_and_get_model(store: ExperimentStore) -> None:
    store.create_model(model())
    got = store.get_model("m1")
    assert (got.name, got.task, got.target, got.features, got.deployed_experiment_id) == (
        "m1", Task.classification, "y", None, None)
    assert [m.name for m in store.list_models()] == ["m1"]


def test_duplicate_model_conflicts_and_keeps_original(store: ExperimentStore) -> None:
    store.create_model(model())
    with pytest.raises(Conflict):
        store.create_model(ModelRecord(name="m1", task=Task.regression, target="other"))
    assert store.get_model("m1").target == "y"


def test_concurrent_creates_of_one_name_give_one_model_and_conflicts(store: ExperimentStore) -> None:
    def create(i: int) -> str:
        try:
            store.create_model(ModelRecord(name="race", task=Task.regression, target=f"t{i}"))
            return "created"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create, range(40)))
    assert outcomes.count("created") == 1 and outcomes.count("conflict") == 39
    assert store.get_model("race").target == f"t{outcomes.index('created')}"


def test_unknown_model_not_found(store: ExperimentStore) -> None:
    with pytest.raises(NotFound):
        store.get_model("ghost")
    with pytest.raises(NotFound):
        store.deployed_experiment("ghost")


def test_features_are_fixed_once_with_the_first_part(store: ExperimentStore) -> None:
    store.create_model(model())
    first = [Feature(name="a", kind="numeric"), Feature(name="b", kind="categorical")]  # type: ignore[arg-type]
    part = store.add_dataset_part("m1", "m1/parts/1.parquet", 5, first)
    assert part.version == 1 and store.get_model("m1").features == first
    # The same schema again is fine; a different one is refused and writes nothing.
    assert store.add_dataset_part("m1", "m1/parts/2.parquet", 2, first).version == 2
    second = [Feature(name="z", kind="numeric")]  # type: ignore[arg-type]
    with pytest.raises(SchemaConflict) as raised:
        store.add_dataset_part("m1", "m1/parts/3.parquet", 1, second)
    assert raised.value.stored == first
    assert store.get_model("m1").features == first
    assert [p.version for p in store.dataset_parts("m1")] == [1, 2]


def test_concurrent_first_parts_fix_one_schema(store: ExperimentStore) -> None:
    store.create_model(model())
    schemas = [[Feature(name=f"x{i}", kind="numeric")] for i in range(6)]  # type: ignore[arg-type]

    def upload(i: int) -> object:
        try:
            return store.add_dataset_part("m1", f"m1/parts/{i}.parquet", 1, schemas[i])
        except SchemaConflict as exc:
            return exc.stored

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(upload, range(6)))
    fixed = store.get_model("m1").features
    assert fixed in schemas
    assert len(store.dataset_parts("m1")) == 1
    assert all(o == fixed for o in outcomes if isinstance(o, list))


def test_experiment_ids_unique_under_concurrency(store: ExperimentStore) -> None:
    store.create_model(model())
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: store.create_experiment({"model": "m1", "model_class": "svm"}).id,
                            range(24)))
    assert len(set(ids)) == 24
    assert all(isinstance(i, int) for i in ids)
    listed = store.list_experiments("m1")
    assert [e.id for e in listed] == sorted(ids, reverse=True)


def test_update_experiment_is_conditional(store: ExperimentStore) -> None:
    store.create_model(model())
    exp = store.create_experiment({"model": "m1", "model_class": "svm", "hyperparameters": {"C": 2.0}})
    assert exp.status is ExperimentStatus.queued
    running = store.update_experiment(exp.id, {"status": ExperimentStatus.running},
                                      expected_status=ExperimentStatus.queued)
    assert running.status is ExperimentStatus.running
    with pytest.raises(Conflict):
        store.update_experiment(exp.id, {"status": ExperimentStatus.running},
                                expected_status=ExperimentStatus.queued)
    got = store.get_experiment(exp.id)
    assert got.status is ExperimentStatus.running and got.hyperparameters == {"C": 2.0}


def test_update_experiment_is_fenced_by_the_attempt(store: ExperimentStore) -> None:
    store.create_model(model())
    exp = store.create_experiment({"model": "m1", "model_class": "svm"})
    first = store.update_experiment(exp.id, {"status": ExperimentStatus.running, "attempts": 1},
                                    expected_status=ExperimentStatus.queued)
    # The lease ran out; a second attempt takes the job over.
    store.update_experiment(exp.id, {"attempts": 2}, expected_status=ExperimentStatus.running,
                            expected_attempts=first.attempts)
    with pytest.raises(Conflict, match="later attempt"):
        store.update_experiment(exp.id, {"status": ExperimentStatus.succeeded},
                                expected_status=ExperimentStatus.running, expected_attempts=1)
    done = store.update_experiment(exp.id, {"status": ExperimentStatus.succeeded},
                                   expected_status=ExperimentStatus.running, expected_attempts=2)
    assert done.status is ExperimentStatus.succeeded and done.attempts == 2


def running(store: ExperimentStore, attempt: int = 1, lease_seconds: float = 60.0) -> Experiment:
    exp = store.create_experiment({"model": "m1", "model_class": "svm"})
    return store.update_experiment(
        exp.id, {"status": ExperimentStatus.running, "attempts": attempt, "started_at": utcnow(),
                 "lease_until": utcnow() + timedelta(seconds=lease_seconds)},
        expected_status=ExperimentStatus.queued)


def test_renew_lease_is_fenced_by_the_attempt(store: ExperimentStore) -> None:
    store.create_model(model())
    first = running(store)
    later = utcnow() + timedelta(seconds=120)
    renewed = store.renew_lease(first.id, 1, later)
    assert renewed.lease_until == later and store.get_experiment(first.id).lease_until == later
    assert renewed.status is ExperimentStatus.running and renewed.attempts == 1
    # The lease ran out and a second attempt took the job over: the first can no longer renew.
    store.update_experiment(first.id, {"attempts": 2}, expected_status=ExperimentStatus.running,
                            expected_attempts=1, expected_lease_until=later)
    with pytest.raises(Conflict, match="later attempt"):
        store.renew_lease(first.id, 1, later + timedelta(seconds=60))
    assert store.get_experiment(first.id).lease_until == later
    store.update_experiment(first.id, {"status": ExperimentStatus.succeeded})
    with pytest.raises(Conflict, match="status succeeded"):
        store.renew_lease(first.id, 2, later)  # a finished job is never leased again
    with pytest.raises(NotFound):
        store.renew_lease(999_999, 1, later)


def test_a_takeover_loses_to_a_heartbeat_that_renewed_the_lease(store: ExperimentStore) -> None:
    """Two workers read a lapsed lease; the holder's heartbeat renews it before either takes
    over: both takeovers, conditional on the lease they read, are refused."""
    store.create_model(model())
    exp = running(store, lease_seconds=-1)  # lapsed
    seen = exp.lease_until
    store.renew_lease(exp.id, 1, utcnow() + timedelta(seconds=60))
    for _ in range(2):
        with pytest.raises(Conflict, match="lease was renewed"):
            store.update_experiment(exp.id, {"attempts": 2}, expected_status=ExperimentStatus.running,
                                    expected_attempts=1, expected_lease_until=seen)
    assert store.get_experiment(exp.id).attempts == 1
    queued = store.create_experiment({"model": "m1", "model_class": "svm"})
    claimed = store.update_experiment(queued.id, {"status": ExperimentStatus.running},
                                      expected_status=ExperimentStatus.queued,
                                      expected_lease_until=None)  # no lease yet
    assert claimed.status is ExperimentStatus.running


def test_concurrent_takeovers_of_a_lapsed_lease_give_one_attempt(store: ExperimentStore) -> None:
    store.create_model(model())
    exp = running(store, lease_seconds=-1)

    def take_over(i: int) -> str:
        try:
            store.update_experiment(
                exp.id, {"attempts": 2, "lease_until": utcnow() + timedelta(seconds=60),
                         "error": f"taker {i}"},
                expected_status=ExperimentStatus.running, expected_attempts=1,
                expected_lease_until=exp.lease_until)
            return "took"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(take_over, range(8)))
    assert outcomes.count("took") == 1
    got = store.get_experiment(exp.id)
    assert got.attempts == 2 and got.error == f"taker {outcomes.index('took')}"


def test_list_experiments_filters_by_status(store: ExperimentStore) -> None:
    store.create_model(model())
    store.create_model(model("m2"))
    done = succeeded(store)
    queued = store.create_experiment({"model": "m1", "model_class": "svm"}).id
    store.create_experiment({"model": "m2", "model_class": "svm"})
    assert [e.id for e in store.list_experiments("m1", ExperimentStatus.succeeded)] == [done]
    assert [e.id for e in store.list_experiments("m1", ExperimentStatus.queued)] == [queued]
    assert len(store.list_experiments(status=ExperimentStatus.queued)) == 2


def test_deploy_records_history(store: ExperimentStore) -> None:
    store.create_model(model())
    a, b = succeeded(store), succeeded(store)
    d1 = store.deploy("m1", a, None)
    d2 = store.deploy("m1", b, a)
    d3 = store.deploy("m1", a, b)
    assert (d1.previous, d2.previous, d3.previous) == (None, a, b)
    assert store.deployed_experiment("m1") == a
    assert store.get_model("m1").deployed_experiment_id == a
    history = store.list_deployments("m1")
    assert [(h.experiment_id, h.previous) for h in history] == [(a, b), (b, a), (a, None)]


def test_deploy_with_stale_expectation_conflicts(store: ExperimentStore) -> None:
    store.create_model(model())
    a, b = succeeded(store), succeeded(store)
    store.deploy("m1", a, None)
    with pytest.raises(Conflict):
        store.deploy("m1", b, None)
    assert store.deployed_experiment("m1") == a
    assert len(store.list_deployments("m1")) == 1


def test_deploy_refuses_unfinished_or_foreign_experiment(store: ExperimentStore) -> None:
    store.create_model(model())
    store.create_model(model("m2"))
    queued = store.create_experiment({"model": "m1", "model_class": "svm"}).id
    with pytest.raises(Conflict):
        store.deploy("m1", queued, None)
    other = succeeded(store, "m2")
    with pytest.raises(NotFound):
        store.deploy("m1", other, None)
    with pytest.raises(NotFound):
        store.deploy("m1", 999_999, None)
    assert store.deployed_experiment("m1") is None
    assert store.list_deployments("m1") == []


def test_concurrent_deploys_leave_one_consistent_pointer(store: ExperimentStore) -> None:
    store.create_model(model())
    ids = [succeeded(store) for _ in range(6)]

    def attempt(i: int) -> int | None:
        try:
            return store.deploy("m1", i, None).experiment_id
        except Conflict:
            return None

    with ThreadPoolExecutor(6) as pool:
        winners = [w for w in pool.map(attempt, ids) if w is not None]
    assert len(winners) == 1
    assert store.deployed_experiment("m1") == winners[0]
    assert [d.experiment_id for d in store.list_deployments("m1")] == winners


def test_delete_experiment_refuses_the_deployed_one(store: ExperimentStore) -> None:
    store.create_model(model())
    a, b = succeeded(store), succeeded(store)
    store.deploy("m1", a, None)
    with pytest.raises(Conflict):
        store.delete_experiment(a)
    store.delete_experiment(b)
    with pytest.raises(NotFound):
        store.get_experiment(b)
    assert store.get_experiment(a).id == a


def test_dataset_parts_versioned_and_concurrent(store: ExperimentStore) -> None:
    store.create_model(model())
    with ThreadPoolExecutor(8) as pool:
        parts = list(pool.map(lambda i: store.add_dataset_part("m1", f"m1/parts/{i}.parquet", i + 1),
                              range(16)))
    assert sorted(p.version for p in parts) == list(range(1, 17))
    listed = store.dataset_parts("m1")
    assert [p.version for p in listed] == list(range(1, 17))
    assert sum(p.rows for p in listed) == sum(range(1, 17))
    assert [p.version for p in store.dataset_parts("m1", 5)] == [1, 2, 3, 4, 5]
    with pytest.raises(NotFound):
        store.add_dataset_part("ghost", "ghost/parts/x.parquet", 1)
