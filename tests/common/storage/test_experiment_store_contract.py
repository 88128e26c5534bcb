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


# -- dataset versions as sets of parts ------------------------------------------------------------


def versions_of(store: ExperimentStore, name: str = "m1") -> dict[int, list[int]]:
    """Every dataset version -> the parts (by the version that added them) it contains."""
    return {v: [p.version for p in store.dataset_parts(name, v)]
            for v in range(1, store.get_model(name).dataset_version + 1)}


def test_removing_a_part_makes_a_new_version_and_keeps_the_earlier_ones(store: ExperimentStore) -> None:
    store.create_model(model())
    for i in range(3):
        store.add_dataset_part("m1", f"m1/parts/{i}.parquet", 10 * (i + 1))
    removed = store.remove_dataset_part("m1", 2)
    assert (removed.version, removed.key, removed.removed_in) == (2, "m1/parts/1.parquet", 4)
    assert removed.removed_at is not None
    assert store.get_model("m1").dataset_version == 4
    assert [p.version for p in store.dataset_parts("m1")] == [1, 3]
    assert versions_of(store) == {1: [1], 2: [1, 2], 3: [1, 2, 3], 4: [1, 3]}
    # Version 3 as its experiments saw it: part 2 in it, and not yet removed.
    assert [(p.key, p.removed_in) for p in store.dataset_parts("m1", 3)] == [
        ("m1/parts/0.parquet", None), ("m1/parts/1.parquet", None), ("m1/parts/2.parquet", None)]
    history = store.all_dataset_parts("m1")
    assert [(p.version, p.removed_in) for p in history] == [(1, None), (2, 4), (3, None)]
    assert [v for v in range(1, 5) if history[1].in_version(v)] == [2, 3]
    # An upload after the removal: the next version, and part 2 stays out.
    assert store.add_dataset_part("m1", "m1/parts/3.parquet", 1).version == 5
    assert versions_of(store)[5] == [1, 3, 5]


def test_removing_an_unknown_or_removed_part_changes_nothing(store: ExperimentStore) -> None:
    store.create_model(model())
    store.add_dataset_part("m1", "m1/parts/a.parquet", 5)
    store.remove_dataset_part("m1", 1)
    before = (store.get_model("m1").dataset_version, store.all_dataset_parts("m1"))
    with pytest.raises(Conflict, match="removed already, in dataset version 2"):
        store.remove_dataset_part("m1", 1)
    with pytest.raises(NotFound, match="no dataset part 2"):
        store.remove_dataset_part("m1", 2)  # version 2 removed a part, it added none
    with pytest.raises(NotFound, match="no dataset part 7"):
        store.remove_dataset_part("m1", 7)
    with pytest.raises(NotFound):
        store.remove_dataset_part("ghost", 1)
    assert (store.get_model("m1").dataset_version, store.all_dataset_parts("m1")) == before
    assert store.dataset_parts("m1") == [] and store.dataset_parts("ghost") == []
    assert store.all_dataset_parts("ghost") == []


def test_a_part_records_where_it_came_from(store: ExperimentStore) -> None:
    store.create_model(model())
    store.add_dataset_part("m1", "m1/parts/a.parquet", 5)
    store.add_dataset_part("m1", "m1/parts/b.parquet", 5, source="csv")
    store.add_dataset_part("m1", "m1/parts/c.parquet", 5, source="multipart", filename="chürn v2.csv")
    assert [(p.source, p.filename) for p in store.dataset_parts("m1")] == [
        ("unknown", None), ("csv", None), ("multipart", "chürn v2.csv")]


def test_concurrent_removals_and_uploads_never_lose_a_part(store: ExperimentStore) -> None:
    store.create_model(model())
    for i in range(8):
        store.add_dataset_part("m1", f"m1/parts/old{i}.parquet", 1)

    def work(job: tuple[str, int]) -> tuple[str, int, int | None]:
        kind, n = job
        if kind == "add":
            return kind, n, store.add_dataset_part("m1", f"m1/parts/new{n}.parquet", 1).version
        try:  # every old part is removed twice at once: one removal wins
            return kind, n, store.remove_dataset_part("m1", n).removed_in
        except Conflict:
            return kind, n, None

    jobs = [("add", i) for i in range(8)] + [("remove", v) for v in range(1, 9)] * 2
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(work, jobs))
    versions = [v for _, _, v in outcomes if v is not None]
    assert len(versions) == 16 and sorted(versions) == list(range(9, 25))  # one per change
    assert sorted(n for kind, n, v in outcomes if kind == "remove" and v is not None) == list(range(1, 9))
    assert store.get_model("m1").dataset_version == 24
    current = store.dataset_parts("m1")
    assert sorted(p.key for p in current) == sorted(f"m1/parts/new{i}.parquet" for i in range(8))
    # Every version is the set the changes before it make, in the order they were applied.
    members = set(range(1, 9))
    changes = {v: (kind, n) for kind, n, v in outcomes if v is not None}
    for version in range(9, 25):
        kind, n = changes[version]
        members = members | {version} if kind == "add" else members - {n}
        assert [p.version for p in store.dataset_parts("m1", version)] == sorted(members), version
    assert len(store.all_dataset_parts("m1")) == 16


# -- deleting a model ------------------------------------------------------------------------------


def a_model_with_everything(store: ExperimentStore, name: str = "m1", parts: int = 3) -> list[int]:
    store.create_model(model(name))
    for i in range(parts):
        store.add_dataset_part(name, f"{name}/parts/{i}.parquet", 4, None if i else [
            Feature(name="a", kind="numeric")])  # type: ignore[list-item]
    store.remove_dataset_part(name, 1)
    ids = [succeeded(store, name) for _ in range(3)]
    store.deploy(name, ids[0], None)
    store.deploy(name, ids[1], ids[0])
    store.update_experiment(ids[2], {"status": ExperimentStatus.failed})
    return ids


@pytest.mark.parametrize("status", [ExperimentStatus.queued, ExperimentStatus.running])
def test_delete_model_is_refused_while_a_job_is_queued_or_running(
        store: ExperimentStore, status: ExperimentStatus) -> None:
    ids = a_model_with_everything(store)
    job = store.create_experiment({"model": "m1", "model_class": "svm"})
    if status is ExperimentStatus.running:
        store.update_experiment(job.id, {"status": status, "attempts": 1})
    before = (store.get_model("m1"), store.list_experiments("m1"), store.list_deployments("m1"),
              store.all_dataset_parts("m1"))
    with pytest.raises(Conflict, match=f"experiment {job.id} {status.value}"):
        store.delete_model("m1")
    assert (store.get_model("m1"), store.list_experiments("m1"), store.list_deployments("m1"),
            store.all_dataset_parts("m1")) == before
    store.update_experiment(job.id, {"status": ExperimentStatus.failed})
    store.delete_model("m1")
    with pytest.raises(NotFound):
        store.get_model("m1")
    for exp_id in [*ids, job.id]:
        with pytest.raises(NotFound):
            store.get_experiment(exp_id)
    with pytest.raises(NotFound):
        store.delete_model("m1")


def test_a_model_created_again_after_its_deletion_starts_empty(store: ExperimentStore) -> None:
    a_model_with_everything(store)
    a_model_with_everything(store, "m2")  # another model is left alone
    store.delete_model("m1")
    assert [m.name for m in store.list_models()] == ["m2"]
    store.create_model(ModelRecord(name="m1", task=Task.regression, target="z"))
    again = store.get_model("m1")
    assert (again.task, again.target, again.features, again.deployed_experiment_id,
            again.dataset_version) == (Task.regression, "z", None, None, 0)
    assert store.list_experiments("m1") == [] and store.list_deployments("m1") == []
    assert store.dataset_parts("m1") == [] and store.all_dataset_parts("m1") == []
    assert store.add_dataset_part("m1", "m1/parts/new.parquet", 2).version == 1
    assert len(store.list_experiments("m2")) == 3 and len(store.list_deployments("m2")) == 2
    assert versions_of(store, "m2") == {1: [1], 2: [1, 2], 3: [1, 2, 3], 4: [2, 3]}


def test_a_model_with_more_items_than_a_transaction_holds_is_deleted(store: ExperimentStore) -> None:
    """150 parts, 30 experiments and their deployments: more than the 100 items of one DynamoDB
    transaction."""
    store.create_model(model())
    for i in range(150):
        store.add_dataset_part("m1", f"m1/parts/{i}.parquet", 1)
    previous = None
    for _ in range(30):
        exp_id = succeeded(store)
        store.deploy("m1", exp_id, previous)
        previous = exp_id
    store.delete_model("m1")
    assert store.list_models() == [] and store.list_experiments() == []
    assert store.all_dataset_parts("m1") == [] and store.list_deployments("m1") == []
    store.create_model(model())
    assert store.get_model("m1").dataset_version == 0


def test_an_experiment_is_never_created_for_a_model_that_is_gone(store: ExperimentStore) -> None:
    with pytest.raises(NotFound):
        store.create_experiment({"model": "ghost", "model_class": "svm"})
    assert store.list_experiments() == []
    store.create_model(model())

    def retrain(i: int) -> str:
        try:
            store.create_experiment({"model": "m1", "model_class": "svm"})
            return "queued"
        except NotFound:
            return "gone"

    def delete() -> str:
        for _ in range(200):  # until no job is queued at the moment it looks
            try:
                store.delete_model("m1")
                return "deleted"
            except Conflict:
                for exp in store.list_experiments("m1", ExperimentStatus.queued):
                    store.update_experiment(exp.id, {"status": ExperimentStatus.failed})
        return "refused"

    with ThreadPoolExecutor(4) as pool:
        deleted = pool.submit(delete)
        outcomes = list(pool.map(retrain, range(30)))
        assert deleted.result() == "deleted"
    # A retrain either landed before the delete (and was then deleted with the model) or found
    # the model gone: none is left behind.
    assert store.list_experiments() == []
    assert set(outcomes) <= {"queued", "gone"}
    with pytest.raises(NotFound):
        store.get_model("m1")
