"""Wiring: the one place that turns Settings into store adapters."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from common.settings import Settings
from common.storage.ports import ExperimentStore, ObjectStore


@dataclass
class Backends:
    settings: Settings
    models: ObjectStore
    datasets: ObjectStore
    experiments: ExperimentStore

    @classmethod
    def from_settings(cls, settings: Settings) -> Backends:
        models: ObjectStore
        datasets: ObjectStore
        experiments: ExperimentStore
        if settings.object_store == "s3":
            from common.storage.s3_objects import S3ObjectStore

            client = _boto_client("s3")
            models = S3ObjectStore(settings.models_bucket, client)
            datasets = S3ObjectStore(settings.datasets_bucket, client)
        else:
            from common.storage.local_objects import LocalObjectStore

            models = LocalObjectStore(settings.models_dir)
            datasets = LocalObjectStore(settings.datasets_dir)
        if settings.experiment_store == "dynamodb":
            from common.storage.dynamodb_store import DynamoExperimentStore

            experiments = DynamoExperimentStore(settings.table_name, _boto_client("dynamodb"))
        elif settings.experiment_store == "postgres":
            from common.storage.postgres_store import PostgresExperimentStore

            experiments = PostgresExperimentStore(settings.postgres_dsn)
        else:
            from common.storage.sqlite_store import SqliteExperimentStore

            experiments = SqliteExperimentStore(settings.sqlite_path)
        return cls(settings=settings, models=models, datasets=datasets, experiments=experiments)

    @property
    def inference_log(self) -> Any:
        """The SQL store doubles as the inference log sink; None where there is none."""
        if self.settings.inference_log == "off":
            return None
        return self.experiments if hasattr(self.experiments, "log_inference") else None

    def ensure_cloud_resources(self) -> None:
        """Create buckets and the table on emulators (SAM creates them on AWS)."""
        for store in (self.models, self.datasets):
            ensure = getattr(store, "ensure_bucket", None)
            if ensure:
                ensure()
        ensure_table = getattr(self.experiments, "ensure_table", None)
        if ensure_table:
            ensure_table()
            if self.settings.drift == "on":
                from common.storage.drift import DynamoDrift, drift_log

                log = drift_log(self.experiments, self.settings)
                if isinstance(log, DynamoDrift):
                    log.ensure_table()


def _boto_client(service: Any) -> Any:
    import boto3
    from botocore.config import Config

    # boto3 reads AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> itself (moto, LocalStack).
    return boto3.client(service, config=Config(retries={"max_attempts": 5, "mode": "standard"}))


@cache
def default_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


@cache
def default_backends() -> Backends:
    """The process-wide backends, built once from the environment (one per Lambda instance)."""
    return Backends.from_settings(default_settings())
