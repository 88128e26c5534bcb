"""The DynamoDB item layout is unchanged by going through boto3's TypeSerializer: items written
by earlier versions (hand-built attribute values) read back, and new items have the same
attribute names and types."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from common.domain import Experiment, ExperimentStatus, ModelRecord, Task
from common.storage.dynamodb_store import DynamoExperimentStore


@pytest.fixture
def dynamo(aws: str) -> Iterator[tuple[DynamoExperimentStore, object]]:
    client = boto3.client("dynamodb")
    store = DynamoExperimentStore("layout", client)
    store.ensure_table()
    yield store, client


def test_items_written_by_the_earlier_layout_are_read(dynamo: tuple) -> None:
    store, client = dynamo
    doc = Experiment(id=7, model="old", model_class="svm", status=ExperimentStatus.succeeded,
                     artifact_key="old/0000000007.onnx", attempts=2)
    items = [
        {"pk": {"S": "MODEL#old"}, "sk": {"S": "META"}, "name": {"S": "old"},
         "task": {"S": "regression"}, "target": {"S": "y"}, "input": {"S": "tabular"},
         "deploy_seq": {"N": "1"}, "dataset_version": {"N": "1"}, "deployed": {"N": "7"},
         "created_at": {"S": "2025-01-01T00:00:00+00:00"},
         "features": {"S": '[{"name": "x", "kind": "numeric"}]'}},
        {"pk": {"S": "MODEL#old"}, "sk": {"S": "DEPLOY#0000000001"}, "experiment_id": {"N": "7"},
         "seq": {"N": "1"}, "deployed_at": {"S": "2025-01-02T00:00:00+00:00"}},
        {"pk": {"S": "MODEL#old"}, "sk": {"S": "PART#0000000001"}, "version": {"N": "1"},
         "key": {"S": "old/parts/p1.parquet"}, "rows": {"N": "40"},
         "created_at": {"S": "2025-01-01T00:00:00+00:00"}},
        {"pk": {"S": "EXP#7"}, "sk": {"S": "META"}, "model": {"S": "old"}, "exp_id": {"N": "7"},
         "status": {"S": "succeeded"}, "rev": {"N": "3"}, "doc": {"S": doc.model_dump_json()}},
    ]
    for item in items:
        client.put_item(TableName="layout", Item=item)

    model = store.get_model("old")
    assert (model.task, model.deployed_experiment_id, [f.name for f in model.features or []]) == (
        Task.regression, 7, ["x"])
    assert store.deployed_experiment("old") == 7
    (deployment,) = store.list_deployments("old")
    assert (deployment.seq, deployment.experiment_id, deployment.previous) == (1, 7, None)
    (part,) = store.dataset_parts("old")
    assert (part.version, part.key, part.rows) == (1, "old/parts/p1.parquet", 40)
    assert (part.source, part.filename, part.removed_in) == ("unknown", None, None)
    assert store.get_model("old").dataset_version == 1
    exp = store.get_experiment(7)
    assert exp.artifact_key == "old/0000000007.onnx" and exp.lease_until is None
    assert [e.id for e in store.list_experiments("old")] == [7]
    # The revision counter carries on from the old item.
    store.update_experiment(7, {"error": "x"}, expected_status=ExperimentStatus.succeeded)
    raw = client.get_item(TableName="layout", Key={"pk": {"S": "EXP#7"}, "sk": {"S": "META"}})
    assert raw["Item"]["rev"] == {"N": "4"}
    # A model without exp_seq and whose experiment has no pointer item (both came later) is
    # deleted with all its items.
    store.delete_model("old")
    assert client.scan(TableName="layout")["Items"] == []


def test_new_items_keep_the_attribute_names_and_types(dynamo: tuple) -> None:
    store, client = dynamo
    store.create_model(ModelRecord(name="new", task=Task.classification, target="y"))
    exp = store.create_experiment({"model": "new", "model_class": "svm"})
    store.update_experiment(exp.id, {"status": ExperimentStatus.succeeded})
    store.deploy("new", exp.id, None)
    store.add_dataset_part("new", "new/parts/p.parquet", 12)
    store.add_dataset_part("new", "new/parts/q.parquet", 3, source="multipart", filename="q.csv")
    store.remove_dataset_part("new", 2)

    def types(sk: str, pk: str = "MODEL#new") -> dict[str, str]:
        item = client.get_item(TableName="layout", Key={"pk": {"S": pk}, "sk": {"S": sk}})["Item"]
        return {name: next(iter(value)) for name, value in item.items()}

    assert types("META") == {"pk": "S", "sk": "S", "name": "S", "task": "S", "target": "S",
                             "input": "S", "deploy_seq": "N", "dataset_version": "N",
                             "created_at": "S", "deployed": "N", "exp_seq": "N"}
    assert types("DEPLOY#0000000001") == {"pk": "S", "sk": "S", "experiment_id": "N", "seq": "N",
                                          "deployed_at": "S"}
    assert types("PART#0000000001") == {"pk": "S", "sk": "S", "version": "N", "key": "S",
                                        "rows": "N", "created_at": "S", "source": "S"}
    assert types("PART#0000000002") == {"pk": "S", "sk": "S", "version": "N", "key": "S",
                                        "rows": "N", "created_at": "S", "source": "S",
                                        "filename": "S", "removed_in": "N", "removed_at": "S"}
    assert types(f"EXP#{exp.id:020d}") == {"pk": "S", "sk": "S", "experiment_id": "N"}
    assert types("META", f"EXP#{exp.id}") == {"pk": "S", "sk": "S", "model": "S", "exp_id": "N",
                                              "status": "S", "rev": "N", "doc": "S"}


def test_a_deletion_a_crash_interrupted_is_finished_by_deleting_again(dynamo: tuple) -> None:
    """Deleting a model removes its META item first, then the rest in batches: a crash in
    between leaves items without a model, which keep the name from being created again until
    another delete of it removes them."""
    from common.errors import Conflict, NotFound

    store, client = dynamo
    store.create_model(ModelRecord(name="m", task=Task.classification, target="y"))
    exp = store.create_experiment({"model": "m", "model_class": "svm"})
    store.update_experiment(exp.id, {"status": ExperimentStatus.succeeded})
    store.deploy("m", exp.id, None)
    store.add_dataset_part("m", "m/parts/p.parquet", 3)
    client.delete_item(TableName="layout", Key={"pk": {"S": "MODEL#m"}, "sk": {"S": "META"}})
    with pytest.raises(NotFound):
        store.get_model("m")
    with pytest.raises(Conflict, match="still being deleted"):
        store.create_model(ModelRecord(name="m", task=Task.regression, target="z"))
    store.delete_model("m")  # finishes it
    items = client.scan(TableName="layout")["Items"]
    assert [i["pk"]["S"] for i in items] == ["COUNTER"]
    with pytest.raises(NotFound):
        store.delete_model("m")
    store.create_model(ModelRecord(name="m", task=Task.regression, target="z"))
    assert store.list_experiments("m") == [] and store.list_deployments("m") == []
    assert store.all_dataset_parts("m") == []


def test_a_write_racing_the_delete_makes_it_read_again(dynamo: tuple,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The META item goes only if its counters are still those read: an experiment queued
    between the read and the delete is seen on the second read, and refuses the delete."""
    from common.errors import Conflict

    store, _ = dynamo
    store.create_model(ModelRecord(name="m", task=Task.classification, target="y"))
    read = store._experiments_of
    sneaked: list[int] = []

    def racing(name: str) -> list[Experiment]:
        seen = read(name)
        if not sneaked:  # a retrain lands right after the delete looked
            sneaked.append(store.create_experiment({"model": "m", "model_class": "svm"}).id)
        return seen

    monkeypatch.setattr(store, "_experiments_of", racing)
    with pytest.raises(Conflict) as refused:
        store.delete_model("m")
    assert f"experiment {sneaked[0]} queued" in refused.value.detail
    assert store.get_model("m").name == "m"
    assert [e.id for e in store.list_experiments("m")] == sneaked
