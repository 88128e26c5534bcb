"""ExperimentStore on one DynamoDB table (pk/sk), with conditional writes and transactions.

Items: ``MODEL#name/META`` (schema, deployed pointer, counters), ``MODEL#name/DEPLOY#seq``,
``MODEL#name/PART#version``, ``MODEL#name/EXP#id`` (a pointer to each experiment created since
pointers exist, so a model's experiments can be read consistently), ``EXP#id/META`` (indexed by
model through the ``by_model`` GSI) and ``COUNTER/experiments`` (the atomic counter that hands
out experiment ids).

Every write that depends on a model changes a counter of its META item in the same transaction
(``deploy_seq``, ``dataset_version``, ``exp_seq``), so deleting a model is one conditional delete
of its META item on the counters it read: whatever was written meanwhile makes it read again,
and whatever comes after finds the model gone. The model's other items are deleted after it, in
batches; until they are all gone, its name cannot be created again (and a delete that a crash
interrupted is finished by deleting the model again).

Values go through boto3's ``TypeSerializer``/``TypeDeserializer`` (strings as ``S``, integers as
``N``; JSON documents are strings) and reads through boto3's paginators; the conditional
experiment writes check their expectations in :mod:`common.storage.expectations`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from common.domain import (
    DatasetPart,
    Deployment,
    Experiment,
    ExperimentStatus,
    Feature,
    ModelRecord,
    PartSource,
    utcnow,
)
from common.errors import Conflict, NotFound, SchemaConflict
from common.storage.expectations import (
    ConditionalExperimentWrites,
    check_deletable,
    check_removable,
)

BY_MODEL = "by_model"
RACE_ATTEMPTS = 50
BATCH_GET = 100  # keys per BatchGetItem
BATCH_WRITE = 25  # requests per BatchWriteItem
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Python values as DynamoDB attribute values; a None value leaves its attribute out."""
    return {name: _SERIALIZER.serialize(v) for name, v in values.items() if v is not None}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item as Python values; numbers as int (the table holds no other)."""
    values = {name: _DESERIALIZER.deserialize(v) for name, v in item.items()}
    return {name: int(v) if isinstance(v, Decimal) else v for name, v in values.items()}


def _key(pk: str, sk: str = "META") -> dict[str, Any]:
    return _attrs({"pk": pk, "sk": sk})


def _model_pk(name: str) -> str:
    return f"MODEL#{name}"


def _exp_pk(experiment_id: int) -> str:
    return f"EXP#{int(experiment_id)}"


def _part_sk(version: int) -> str:
    return f"PART#{int(version):010d}"


def _pointer_sk(experiment_id: int) -> str:
    return f"EXP#{int(experiment_id):020d}"


def _reasons(exc: Exception) -> list[str]:
    """The cancellation reason of each item of a cancelled transaction, in order."""
    return [r.get("Code", "") for r in getattr(exc, "response", {}).get("CancellationReasons", [])]


def _backoff(attempt: int) -> None:
    """A short, jittered pause before trying a lost race again."""
    time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** min(attempt, 6))))


class DynamoExperimentStore(ConditionalExperimentWrites):
    def __init__(self, table: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self.table = table
        self._db = client

    # -- plumbing --------------------------------------------------------------------------
    def ensure_table(self) -> None:
        """Create the table if missing (emulators and local runs; SAM creates it on AWS)."""
        try:
            self._db.describe_table(TableName=self.table)
            return
        except self._db.exceptions.ResourceNotFoundException:
            pass
        self._db.create_table(
            TableName=self.table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "model", "AttributeType": "S"},
                {"AttributeName": "exp_id", "AttributeType": "N"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": BY_MODEL,
                    "KeySchema": [
                        {"AttributeName": "model", "KeyType": "HASH"},
                        {"AttributeName": "exp_id", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        self._db.get_waiter("table_exists").wait(TableName=self.table)

    def _get(self, pk: str, sk: str = "META") -> dict[str, Any] | None:
        item = self._db.get_item(TableName=self.table, Key=_key(pk, sk), ConsistentRead=True).get("Item")
        return None if item is None else _plain(item)

    def _pages(self, operation: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item a query or scan returns, as Python values."""
        pages = self._db.get_paginator(operation).paginate(TableName=self.table, **kwargs)
        return [_plain(item) for page in pages for item in page.get("Items", [])]

    def _query(self, pk: str, prefix: str, descending: bool = False) -> list[dict[str, Any]]:
        return self._pages(
            "query",
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=_attrs({":pk": pk, ":prefix": prefix}),
            ConsistentRead=True,
            ScanIndexForward=not descending,
        )

    def _partition(self, pk: str) -> list[dict[str, Any]]:
        """Every item of one partition (a model's META and the rest), read consistently."""
        return self._pages(
            "query",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=_attrs({":pk": pk}),
            ConsistentRead=True,
        )

    def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items of ``keys`` that exist, read consistently."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), BATCH_GET):
            pending: dict[str, Any] = {self.table: {"Keys": keys[start:start + BATCH_GET],
                                                    "ConsistentRead": True}}
            attempt = 0
            while pending:
                out = self._db.batch_get_item(RequestItems=pending)
                found.extend(_plain(i) for i in out.get("Responses", {}).get(self.table, []))
                pending = out.get("UnprocessedKeys") or {}
                if pending:
                    _backoff(attempt)
                    attempt += 1
        return found

    def _batch_delete(self, keys: Iterable[dict[str, Any]]) -> None:
        requests = [{"DeleteRequest": {"Key": key}} for key in keys]
        for start in range(0, len(requests), BATCH_WRITE):
            pending: dict[str, Any] = {self.table: requests[start:start + BATCH_WRITE]}
            attempt = 0
            while pending:
                pending = self._db.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
                if pending:
                    _backoff(attempt)
                    attempt += 1

    def _is_conditional_failure(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("ConditionalCheckFailedException", "TransactionCanceledException")

    # -- models ----------------------------------------------------------------------------
    @staticmethod
    def _model(item: dict[str, Any]) -> ModelRecord:
        return ModelRecord(
            name=item["name"],
            task=item["task"],
            target=item["target"],
            input=item["input"],
            image=json.loads(item["image"]) if "image" in item else None,
            features=json.loads(item["features"]) if "features" in item else None,
            deployed_experiment_id=item.get("deployed"),
            created_at=item["created_at"],
            dataset_version=item.get("dataset_version", 0),
        )

    def create_model(self, model: ModelRecord) -> None:
        item = _attrs({
            "pk": _model_pk(model.name),
            "sk": "META",
            "name": model.name,
            "task": model.task.value,
            "target": model.target,
            "input": model.input,
            "deploy_seq": 0,
            "dataset_version": 0,
            "created_at": model.created_at.isoformat(),
            "image": None if model.image is None else model.image.model_dump_json(),
            "features": None if model.features is None
            else json.dumps([f.model_dump(mode="json") for f in model.features]),
        })
        # A deleted model's items go after its META item: a name is free again once they have.
        if self._get(_model_pk(model.name)) is not None:
            raise Conflict(f"model {model.name!r} already exists")
        leftover = self._db.query(
            TableName=self.table, KeyConditionExpression="pk = :pk", Limit=1, ConsistentRead=True,
            ExpressionAttributeValues=_attrs({":pk": _model_pk(model.name)}),
        ).get("Items", [])
        if leftover and _plain(leftover[0])["sk"] != "META":
            raise Conflict(f"model {model.name!r} is still being deleted; retry in a moment (or "
                           "delete it again to finish a deletion that was interrupted)")
        try:
            self._db.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except self._db.exceptions.ConditionalCheckFailedException:
            raise Conflict(f"model {model.name!r} already exists") from None

    def get_model(self, name: str) -> ModelRecord:
        item = self._get(_model_pk(name))
        if item is None:
            raise NotFound(f"model {name!r} does not exist")
        return self._model(item)

    def list_models(self) -> list[ModelRecord]:
        items = self._pages(
            "scan",
            FilterExpression="begins_with(pk, :p) AND sk = :meta",
            ExpressionAttributeValues=_attrs({":p": "MODEL#", ":meta": "META"}),
            ConsistentRead=True,
        )
        return sorted((self._model(i) for i in items), key=lambda m: m.name)

    def deployed_experiment(self, name: str) -> int | None:
        item = self._db.get_item(
            TableName=self.table,
            Key=_key(_model_pk(name)),
            ProjectionExpression="deployed, pk",
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            raise NotFound(f"model {name!r} does not exist")
        deployed: int | None = _plain(item).get("deployed")
        return deployed

    def deploy(self, name: str, experiment_id: int, expected_previous: int | None) -> Deployment:
        item = self._get(_model_pk(name))
        if item is None:
            raise NotFound(f"model {name!r} does not exist")
        current = item.get("deployed")
        if current != expected_previous:
            raise Conflict(f"model {name!r} is now deployed at experiment {current}")
        seq = item["deploy_seq"]
        deployment = Deployment(model=name, seq=seq + 1, experiment_id=experiment_id, previous=current)
        values: dict[str, Any] = {":new": experiment_id, ":seq": seq, ":next": seq + 1}
        condition = "deploy_seq = :seq"
        if current is None:
            condition += " AND attribute_not_exists(deployed)"
        else:
            condition += " AND deployed = :prev"
            values[":prev"] = current
        deploy_item = _attrs({
            "pk": _model_pk(name),
            "sk": f"DEPLOY#{deployment.seq:010d}",
            "experiment_id": experiment_id,
            "seq": deployment.seq,
            "deployed_at": deployment.deployed_at.isoformat(),
            "previous": current,
        })
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": _key(_model_pk(name)),
                            "UpdateExpression": "SET deployed = :new, deploy_seq = :next",
                            "ConditionExpression": condition,
                            "ExpressionAttributeValues": _attrs(values),
                        }
                    },
                    {
                        "ConditionCheck": {
                            "TableName": self.table,
                            "Key": _key(_exp_pk(experiment_id)),
                            "ConditionExpression": "#s = :ok AND model = :model",
                            "ExpressionAttributeNames": {"#s": "status"},
                            "ExpressionAttributeValues": _attrs(
                                {":ok": ExperimentStatus.succeeded.value, ":model": name}),
                        }
                    },
                    {"Put": {"TableName": self.table, "Item": deploy_item}},
                ]
            )
        except Exception as exc:
            if not self._is_conditional_failure(exc):
                raise
            exp = self.get_experiment(experiment_id)  # NotFound if it is gone
            if exp.model != name:
                raise NotFound(f"experiment {experiment_id} does not belong to model {name!r}") from None
            if exp.status is not ExperimentStatus.succeeded:
                raise Conflict(f"experiment {experiment_id} has status {exp.status.value}") from None
            raise Conflict(f"model {name!r} was deployed by another request; retry") from None
        return deployment

    def list_deployments(self, name: str) -> list[Deployment]:
        return [
            Deployment(
                model=name,
                seq=i["seq"],
                experiment_id=i["experiment_id"],
                previous=i.get("previous"),
                deployed_at=i["deployed_at"],
            )
            for i in self._query(_model_pk(name), "DEPLOY#", descending=True)
        ]

    # -- experiments -----------------------------------------------------------------------
    def _exp_item(self, exp: Experiment, rev: int) -> dict[str, Any]:
        return _attrs({
            "pk": _exp_pk(exp.id),
            "sk": "META",
            "model": exp.model,
            "exp_id": exp.id,
            "status": exp.status.value,
            "rev": rev,
            "doc": exp.model_dump_json(),
        })

    def create_experiment(self, fields: dict[str, Any]) -> Experiment:
        out = self._db.update_item(
            TableName=self.table,
            Key=_key("COUNTER", "experiments"),
            UpdateExpression="ADD #v :one",
            ExpressionAttributeNames={"#v": "value"},
            ExpressionAttributeValues=_attrs({":one": 1}),
            ReturnValues="UPDATED_NEW",
        )
        exp = Experiment(id=_plain(out["Attributes"])["value"], **fields)
        # With its model's exp_seq counter and its pointer: a model being deleted either sees
        # this experiment or is gone first, and then this write is refused.
        for attempt in range(RACE_ATTEMPTS):
            try:
                self._db.transact_write_items(TransactItems=[
                    {"Update": {
                        "TableName": self.table,
                        "Key": _key(_model_pk(exp.model)),
                        "UpdateExpression": "ADD exp_seq :one",
                        "ConditionExpression": "attribute_exists(pk)",
                        "ExpressionAttributeValues": _attrs({":one": 1}),
                    }},
                    {"Put": {
                        "TableName": self.table,
                        "Item": self._exp_item(exp, 0),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }},
                    {"Put": {
                        "TableName": self.table,
                        "Item": _attrs({"pk": _model_pk(exp.model), "sk": _pointer_sk(exp.id),
                                        "experiment_id": exp.id}),
                    }},
                ])
                return exp
            except Exception as exc:
                if not self._is_conditional_failure(exc):
                    raise
                reasons = _reasons(exc)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    raise NotFound(f"model {exp.model!r} does not exist") from None
                _backoff(attempt)  # a concurrent write on the model: try again
        raise Conflict(f"model {exp.model!r} is being changed concurrently; retry")

    def _read_experiment(self, experiment_id: int) -> tuple[Experiment, int]:
        item = self._get(_exp_pk(experiment_id))
        if item is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        return Experiment.model_validate_json(item["doc"]), item["rev"]

    def get_experiment(self, experiment_id: int) -> Experiment:
        return self._read_experiment(experiment_id)[0]

    def _change_experiment(
        self, experiment_id: int, change: Callable[[Experiment], Experiment]
    ) -> Experiment:
        # Optimistic concurrency on a revision number: retry lost races, never lose a write.
        for _ in range(20):
            current, rev = self._read_experiment(experiment_id)
            updated = change(current)
            try:
                self._db.put_item(
                    TableName=self.table,
                    Item=self._exp_item(updated, rev + 1),
                    ConditionExpression="rev = :rev",
                    ExpressionAttributeValues=_attrs({":rev": rev}),
                )
                return updated
            except self._db.exceptions.ConditionalCheckFailedException:
                continue
        raise Conflict(f"experiment {experiment_id} is being updated concurrently; retry")

    def list_experiments(
        self, model: str | None = None, status: ExperimentStatus | None = None
    ) -> list[Experiment]:
        kwargs: dict[str, Any] = {}
        values: dict[str, Any] = {}
        filters = []
        if status is not None:
            filters.append("#s = :status")
            values[":status"] = status.value
            kwargs["ExpressionAttributeNames"] = {"#s": "status"}
        if model is not None:
            kwargs.update(IndexName=BY_MODEL, KeyConditionExpression="model = :m", ScanIndexForward=False)
            values[":m"] = model
            operation = "query"
        else:
            filters.append("begins_with(pk, :exp)")
            values[":exp"] = "EXP#"
            operation = "scan"
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        items = self._pages(operation, ExpressionAttributeValues=_attrs(values), **kwargs)
        exps = [Experiment.model_validate_json(i["doc"]) for i in items]
        return sorted(exps, key=lambda e: e.id, reverse=True)

    def delete_experiment(self, experiment_id: int) -> None:
        exp = self.get_experiment(experiment_id)
        for _ in range(5):
            try:
                self._db.transact_write_items(
                    TransactItems=[
                        {
                            "ConditionCheck": {
                                "TableName": self.table,
                                "Key": _key(_model_pk(exp.model)),
                                "ConditionExpression": "attribute_not_exists(deployed) OR deployed <> :id",
                                "ExpressionAttributeValues": _attrs({":id": experiment_id}),
                            }
                        },
                        {
                            "Delete": {
                                "TableName": self.table,
                                "Key": _key(_exp_pk(experiment_id)),
                            }
                        },
                        {
                            "Delete": {
                                "TableName": self.table,
                                "Key": _key(_model_pk(exp.model), _pointer_sk(experiment_id)),
                            }
                        },
                    ]
                )
                return
            except Exception as exc:
                if not self._is_conditional_failure(exc):
                    raise
                reasons = {r.get("Code") for r in getattr(exc, "response", {}).get(
                    "CancellationReasons", [])}
                if "TransactionConflict" in reasons and "ConditionalCheckFailed" not in reasons:
                    continue  # a concurrent write on the model (e.g. a deploy): try again
                raise Conflict(
                    f"experiment {experiment_id} is deployed for model {exp.model!r}; "
                    "deploy another experiment first"
                ) from None
        raise Conflict(f"model {exp.model!r} is being changed concurrently; retry the delete")

    def delete_model(self, name: str) -> None:
        pk = _model_pk(name)
        for attempt in range(RACE_ATTEMPTS):
            meta = self._get(pk)
            if meta is None:
                if not self._partition(pk):
                    raise NotFound(f"model {name!r} does not exist")
                break  # a deletion interrupted after its META item went: finish it
            check_deletable(name, self._experiments_of(name))
            # Nothing written since the counters were read (an experiment, a part, a removal,
            # a deployment), else read again. succeeded and failed are final, so the
            # experiments just read cannot become unfinished before this applies.
            values: dict[str, Any] = {":deploy": meta["deploy_seq"],
                                      ":data": meta["dataset_version"]}
            condition = "deploy_seq = :deploy AND dataset_version = :data AND "
            if "exp_seq" in meta:
                condition += "exp_seq = :exps"
                values[":exps"] = meta["exp_seq"]
            else:
                condition += "attribute_not_exists(exp_seq)"
            try:
                self._db.delete_item(TableName=self.table, Key=_key(pk),
                                     ConditionExpression=condition,
                                     ExpressionAttributeValues=_attrs(values))
                break
            except self._db.exceptions.ConditionalCheckFailedException:
                _backoff(attempt)
        else:
            raise Conflict(f"model {name!r} is being changed concurrently; retry the delete")
        # The experiments first, then the model's own items: while any of those is left the
        # name cannot be created again, so a crash here leaves nothing a new model would see.
        self._batch_delete(_key(_exp_pk(e.id)) for e in self._experiments_of(name))
        self._batch_delete(_key(pk, i["sk"]) for i in self._partition(pk))

    def _experiments_of(self, name: str) -> list[Experiment]:
        """The model's experiments as stored now: those its pointers name (read consistently)
        and, for experiments created before pointers, those the by_model index lists."""
        ids = {i["experiment_id"] for i in self._query(_model_pk(name), "EXP#")}
        ids.update(e.id for e in self.list_experiments(name))
        items = self._batch_get([_key(_exp_pk(i)) for i in sorted(ids)])
        return [e for e in (Experiment.model_validate_json(i["doc"]) for i in items) if e.model == name]

    # -- datasets --------------------------------------------------------------------------
    @staticmethod
    def _part(model: str, item: dict[str, Any]) -> DatasetPart:
        return DatasetPart(
            model=model, version=item["version"], key=item["key"], rows=item["rows"],
            created_at=item["created_at"], source=item.get("source", "unknown"),
            filename=item.get("filename"), removed_in=item.get("removed_in"),
            removed_at=item.get("removed_at"),
        )

    def add_dataset_part(
        self, model: str, key: str, rows: int, features: list[Feature] | None = None,
        source: PartSource = "unknown", filename: str | None = None,
    ) -> DatasetPart:
        # One transaction moves the model's version counter (and, for a first upload, fixes the
        # feature schema) and writes the part, so a version never exists without its part nor
        # data without its schema; a lost race re-reads the model and tries again.
        for _ in range(100):
            item = self._get(_model_pk(model))
            if item is None:
                raise NotFound(f"model {model!r} does not exist")
            current = item["dataset_version"]
            update = "SET dataset_version = :next"
            condition = "dataset_version = :current"
            values: dict[str, Any] = {":current": current}
            if features is not None:
                if "features" in item:
                    stored = [Feature.model_validate(f) for f in json.loads(item["features"])]
                    if stored != features:
                        raise SchemaConflict(model, stored)
                else:
                    doc = json.dumps([f.model_dump(mode="json") for f in features])
                    update += ", features = :f"
                    condition += " AND attribute_not_exists(features)"
                    values[":f"] = doc
            part = DatasetPart(model=model, version=current + 1, key=key, rows=rows,
                               created_at=utcnow(), source=source, filename=filename)
            values[":next"] = part.version
            try:
                self._db.transact_write_items(
                    TransactItems=[
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": _key(_model_pk(model)),
                                "UpdateExpression": update,
                                "ConditionExpression": condition,
                                "ExpressionAttributeValues": _attrs(values),
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": _attrs({
                                    "pk": _model_pk(model),
                                    "sk": _part_sk(part.version),
                                    "version": part.version,
                                    "key": key,
                                    "rows": rows,
                                    "created_at": part.created_at.isoformat(),
                                    "source": source,
                                    "filename": filename,
                                }),
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                    ]
                )
                return part
            except Exception as exc:
                if not self._is_conditional_failure(exc):
                    raise
        raise Conflict(f"model {model!r} is receiving too many uploads at once; retry")

    def remove_dataset_part(self, model: str, version: int) -> DatasetPart:
        # One transaction moves the version counter and marks the part removed in the new
        # version: a lost race (an upload, another removal) reads both again.
        for _ in range(100):
            meta = self._get(_model_pk(model))
            if meta is None:
                raise NotFound(f"model {model!r} does not exist")
            item = self._get(_model_pk(model), _part_sk(version))
            part = check_removable(model, version, None if item is None else self._part(model, item))
            current, at = meta["dataset_version"], utcnow()
            removed = part.model_copy(update={"removed_in": current + 1, "removed_at": at})
            try:
                self._db.transact_write_items(TransactItems=[
                    {"Update": {
                        "TableName": self.table,
                        "Key": _key(_model_pk(model)),
                        "UpdateExpression": "SET dataset_version = :next",
                        "ConditionExpression": "dataset_version = :current",
                        "ExpressionAttributeValues": _attrs({":current": current,
                                                             ":next": removed.removed_in}),
                    }},
                    {"Update": {
                        "TableName": self.table,
                        "Key": _key(_model_pk(model), _part_sk(version)),
                        "UpdateExpression": "SET removed_in = :next, removed_at = :at",
                        "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(removed_in)",
                        "ExpressionAttributeValues": _attrs({":next": removed.removed_in,
                                                             ":at": at.isoformat()}),
                    }},
                ])
                return removed
            except Exception as exc:
                if not self._is_conditional_failure(exc):
                    raise
        raise Conflict(f"model {model!r} is receiving too many changes at once; retry")

    def dataset_parts(self, model: str, up_to_version: int | None = None) -> list[DatasetPart]:
        version = up_to_version
        if version is None:
            item = self._db.get_item(
                TableName=self.table, Key=_key(_model_pk(model)),
                ProjectionExpression="dataset_version", ConsistentRead=True,
            ).get("Item")
            if item is None:
                return []
            version = int(_plain(item).get("dataset_version", 0))
        # Read after the version: a part added or removed since has a later version, so what is
        # read here is exactly that version's set.
        return [p.as_of(version) for p in self.all_dataset_parts(model) if p.in_version(version)]

    def all_dataset_parts(self, model: str) -> list[DatasetPart]:
        return [self._part(model, i) for i in self._query(_model_pk(model), "PART#")]
