"""ExperimentStore on one DynamoDB table (pk/sk), with conditional writes and transactions.

Items: ``MODEL#name/META`` (schema, deployed pointer, counters), ``MODEL#name/DEPLOY#seq``,
``MODEL#name/PART#version``, ``EXP#id/META`` (indexed by model through the ``by_model`` GSI) and
``COUNTER/experiments`` (the atomic counter that hands out experiment ids).
"""

from __future__ import annotations

import json
from typing import Any

from common.domain import (
    DatasetPart,
    Deployment,
    Experiment,
    ExperimentStatus,
    Feature,
    ModelRecord,
    utcnow,
)
from common.errors import Conflict, NotFound, SchemaConflict

BY_MODEL = "by_model"


def _model_pk(name: str) -> str:
    return f"MODEL#{name}"


def _exp_pk(experiment_id: int) -> str:
    return f"EXP#{int(experiment_id)}"


class DynamoExperimentStore:
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
        item = self._db.get_item(
            TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
        ).get("Item")
        return item

    def _query(self, pk: str, prefix: str, descending: bool = False) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":prefix": {"S": prefix}},
            "ConsistentRead": True,
            "ScanIndexForward": not descending,
        }
        while True:
            page = self._db.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _is_conditional_failure(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("ConditionalCheckFailedException", "TransactionCanceledException")

    # -- models ----------------------------------------------------------------------------
    @staticmethod
    def _model(item: dict[str, Any]) -> ModelRecord:
        return ModelRecord(
            name=item["name"]["S"],
            task=item["task"]["S"],
            target=item["target"]["S"],
            input=item["input"]["S"],
            image=json.loads(item["image"]["S"]) if "image" in item else None,
            features=json.loads(item["features"]["S"]) if "features" in item else None,
            deployed_experiment_id=int(item["deployed"]["N"]) if "deployed" in item else None,
            created_at=item["created_at"]["S"],
        )

    def create_model(self, model: ModelRecord) -> None:
        item: dict[str, Any] = {
            "pk": {"S": _model_pk(model.name)},
            "sk": {"S": "META"},
            "name": {"S": model.name},
            "task": {"S": model.task.value},
            "target": {"S": model.target},
            "input": {"S": model.input},
            "deploy_seq": {"N": "0"},
            "dataset_version": {"N": "0"},
            "created_at": {"S": model.created_at.isoformat()},
        }
        if model.image is not None:
            item["image"] = {"S": model.image.model_dump_json()}
        if model.features is not None:
            item["features"] = {"S": json.dumps([f.model_dump(mode="json") for f in model.features])}
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
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :p) AND sk = :meta",
            "ExpressionAttributeValues": {":p": {"S": "MODEL#"}, ":meta": {"S": "META"}},
            "ConsistentRead": True,
        }
        while True:
            page = self._db.scan(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted((self._model(i) for i in items), key=lambda m: m.name)

    def deployed_experiment(self, name: str) -> int | None:
        item = self._db.get_item(
            TableName=self.table,
            Key={"pk": {"S": _model_pk(name)}, "sk": {"S": "META"}},
            ProjectionExpression="deployed, pk",
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            raise NotFound(f"model {name!r} does not exist")
        return int(item["deployed"]["N"]) if "deployed" in item else None

    def deploy(self, name: str, experiment_id: int, expected_previous: int | None) -> Deployment:
        item = self._get(_model_pk(name))
        if item is None:
            raise NotFound(f"model {name!r} does not exist")
        current = int(item["deployed"]["N"]) if "deployed" in item else None
        if current != expected_previous:
            raise Conflict(f"model {name!r} is now deployed at experiment {current}")
        seq = int(item["deploy_seq"]["N"])
        deployment = Deployment(model=name, seq=seq + 1, experiment_id=experiment_id, previous=current)
        values: dict[str, Any] = {
            ":new": {"N": str(experiment_id)},
            ":seq": {"N": str(seq)},
            ":next": {"N": str(seq + 1)},
        }
        condition = "deploy_seq = :seq"
        if current is None:
            condition += " AND attribute_not_exists(deployed)"
        else:
            condition += " AND deployed = :prev"
            values[":prev"] = {"N": str(current)}
        deploy_item: dict[str, Any] = {
            "pk": {"S": _model_pk(name)},
            "sk": {"S": f"DEPLOY#{deployment.seq:010d}"},
            "experiment_id": {"N": str(experiment_id)},
            "seq": {"N": str(deployment.seq)},
            "deployed_at": {"S": deployment.deployed_at.isoformat()},
        }
        if current is not None:
            deploy_item["previous"] = {"N": str(current)}
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": {"pk": {"S": _model_pk(name)}, "sk": {"S": "META"}},
                            "UpdateExpression": "SET deployed = :new, deploy_seq = :next",
                            "ConditionExpression": condition,
                            "ExpressionAttributeValues": values,
                        }
                    },
                    {
                        "ConditionCheck": {
                            "TableName": self.table,
                            "Key": {"pk": {"S": _exp_pk(experiment_id)}, "sk": {"S": "META"}},
                            "ConditionExpression": "#s = :ok AND model = :model",
                            "ExpressionAttributeNames": {"#s": "status"},
                            "ExpressionAttributeValues": {
                                ":ok": {"S": ExperimentStatus.succeeded.value},
                                ":model": {"S": name},
                            },
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
                seq=int(i["seq"]["N"]),
                experiment_id=int(i["experiment_id"]["N"]),
                previous=int(i["previous"]["N"]) if "previous" in i else None,
                deployed_at=i["deployed_at"]["S"],
            )
            for i in self._query(_model_pk(name), "DEPLOY#", descending=True)
        ]

    # -- experiments -----------------------------------------------------------------------
    def _exp_item(self, exp: Experiment, rev: int) -> dict[str, Any]:
        return {
            "pk": {"S": _exp_pk(exp.id)},
            "sk": {"S": "META"},
            "model": {"S": exp.model},
            "exp_id": {"N": str(exp.id)},
            "status": {"S": exp.status.value},
            "rev": {"N": str(rev)},
            "doc": {"S": exp.model_dump_json()},
        }

    def create_experiment(self, fields: dict[str, Any]) -> Experiment:
        out = self._db.update_item(
            TableName=self.table,
            Key={"pk": {"S": "COUNTER"}, "sk": {"S": "experiments"}},
            UpdateExpression="ADD #v :one",
            ExpressionAttributeNames={"#v": "value"},
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        exp = Experiment(id=int(out["Attributes"]["value"]["N"]), **fields)
        self._db.put_item(
            TableName=self.table,
            Item=self._exp_item(exp, 0),
            ConditionExpression="attribute_not_exists(pk)",
        )
        return exp

    def _read_experiment(self, experiment_id: int) -> tuple[Experiment, int]:
        item = self._get(_exp_pk(experiment_id))
        if item is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        return Experiment.model_validate_json(item["doc"]["S"]), int(item["rev"]["N"])

    def get_experiment(self, experiment_id: int) -> Experiment:
        return self._read_experiment(experiment_id)[0]

    def update_experiment(
        self,
        experiment_id: int,
        fields: dict[str, Any],
        expected_status: ExperimentStatus | None = None,
        expected_attempts: int | None = None,
    ) -> Experiment:
        # Optimistic concurrency on a revision number: retry lost races, never lose a write.
        for _ in range(20):
            current, rev = self._read_experiment(experiment_id)
            if expected_status is not None and current.status is not expected_status:
                raise Conflict(
                    f"experiment {experiment_id} has status {current.status.value}, "
                    f"expected {expected_status.value}"
                )
            if expected_attempts is not None and current.attempts != expected_attempts:
                raise Conflict(
                    f"experiment {experiment_id} is on attempt {current.attempts}, "
                    f"not {expected_attempts}: a later attempt took the job over"
                )
            updated = Experiment.model_validate({**current.model_dump(), **fields})
            try:
                self._db.put_item(
                    TableName=self.table,
                    Item=self._exp_item(updated, rev + 1),
                    ConditionExpression="rev = :rev",
                    ExpressionAttributeValues={":rev": {"N": str(rev)}},
                )
                return updated
            except self._db.exceptions.ConditionalCheckFailedException:
                continue
        raise Conflict(f"experiment {experiment_id} is being updated concurrently; retry")

    def list_experiments(
        self, model: str | None = None, status: ExperimentStatus | None = None
    ) -> list[Experiment]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.table}
        values: dict[str, Any] = {}
        filters = []
        if status is not None:
            filters.append("#s = :status")
            values[":status"] = {"S": status.value}
            kwargs["ExpressionAttributeNames"] = {"#s": "status"}
        if model is not None:
            kwargs.update(IndexName=BY_MODEL, KeyConditionExpression="model = :m", ScanIndexForward=False)
            values[":m"] = {"S": model}
            op = self._db.query
        else:
            filters.append("begins_with(pk, :exp)")
            values[":exp"] = {"S": "EXP#"}
            op = self._db.scan
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        kwargs["ExpressionAttributeValues"] = values
        while True:
            page = op(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        exps = [Experiment.model_validate_json(i["doc"]["S"]) for i in items]
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
                                "Key": {"pk": {"S": _model_pk(exp.model)}, "sk": {"S": "META"}},
                                "ConditionExpression": "attribute_not_exists(deployed) OR deployed <> :id",
                                "ExpressionAttributeValues": {":id": {"N": str(experiment_id)}},
                            }
                        },
                        {
                            "Delete": {
                                "TableName": self.table,
                                "Key": {"pk": {"S": _exp_pk(experiment_id)}, "sk": {"S": "META"}},
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

    # -- datasets --------------------------------------------------------------------------
    def add_dataset_part(
        self, model: str, key: str, rows: int, features: list[Feature] | None = None
    ) -> DatasetPart:
        # One transaction moves the model's version counter (and, for a first upload, fixes the
        # feature schema) and writes the part, so a version never exists without its part nor
        # data without its schema; a lost race re-reads the model and tries again.
        for _ in range(100):
            item = self._get(_model_pk(model))
            if item is None:
                raise NotFound(f"model {model!r} does not exist")
            current = int(item["dataset_version"]["N"])
            update = "SET dataset_version = :next"
            condition = "dataset_version = :current"
            values = {":current": {"N": str(current)}}
            if features is not None:
                if "features" in item:
                    stored = [Feature.model_validate(f) for f in json.loads(item["features"]["S"])]
                    if stored != features:
                        raise SchemaConflict(model, stored)
                else:
                    doc = json.dumps([f.model_dump(mode="json") for f in features])
                    update += ", features = :f"
                    condition += " AND attribute_not_exists(features)"
                    values[":f"] = {"S": doc}
            part = DatasetPart(model=model, version=current + 1, key=key, rows=rows, created_at=utcnow())
            values[":next"] = {"N": str(part.version)}
            try:
                self._db.transact_write_items(
                    TransactItems=[
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": {"pk": {"S": _model_pk(model)}, "sk": {"S": "META"}},
                                "UpdateExpression": update,
                                "ConditionExpression": condition,
                                "ExpressionAttributeValues": values,
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": {
                                    "pk": {"S": _model_pk(model)},
                                    "sk": {"S": f"PART#{part.version:010d}"},
                                    "version": {"N": str(part.version)},
                                    "key": {"S": key},
                                    "rows": {"N": str(rows)},
                                    "created_at": {"S": part.created_at.isoformat()},
                                },
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

    def dataset_parts(self, model: str, up_to_version: int | None = None) -> list[DatasetPart]:
        parts = [
            DatasetPart(
                model=model,
                version=int(i["version"]["N"]),
                key=i["key"]["S"],
                rows=int(i["rows"]["N"]),
                created_at=i["created_at"]["S"],
            )
            for i in self._query(_model_pk(model), "PART#")
        ]
        return [p for p in parts if up_to_version is None or p.version <= up_to_version]
