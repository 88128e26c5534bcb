"""One settings object for the whole service, read once from the environment (prefix MLFN_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.archives import ArchiveLimits


class Settings(BaseSettings):
    """Backends and limits. Defaults are the embedded, nothing-to-install configuration."""

    model_config = SettingsConfigDict(env_prefix="MLFN_", extra="ignore")

    data_dir: Path = Field(default=Path(".mlfn"), description="Root of the embedded stores.")

    object_store: Literal["local", "s3"] = "local"
    models_bucket: str = "mlfn-models"
    datasets_bucket: str = "mlfn-datasets"

    experiment_store: Literal["sqlite", "dynamodb", "postgres"] = "sqlite"
    table_name: str = "mlfn"
    postgres_dsn: str = "postgresql://127.0.0.1:5432/postgres"

    job_queue: Literal["inprocess", "sqs"] = "inprocess"
    queue_url: str = ""
    # A running job holds its experiment for this long after its last heartbeat; its worker
    # renews the lease every job_heartbeat_seconds while it trains. A job whose lease ran out
    # (its worker died) is retried by the next worker, so about one lease after a crash.
    job_lease_seconds: float = Field(default=60.0, gt=0)
    job_heartbeat_seconds: float = Field(default=20.0, gt=0)

    ort_intra_op_threads: int = Field(default=1, ge=1)
    # How long a warm instance trusts its cached "which experiment is deployed" answer.
    deploy_check_seconds: float = Field(default=1.0, ge=0.0)
    session_cache_size: int = Field(default=16, ge=1)
    # Models whose deployed experiment a serving process loads when it starts (Lambda init,
    # so SnapStart snapshots and provisioned concurrency hold them): comma-separated names, or
    # "*" for every model with a deployment (at most session_cache_size of them).
    preload_models: str = ""

    max_body_bytes: int = Field(default=6 * 1024 * 1024, ge=1024)
    max_batch_rows: int = Field(default=10_000, ge=1)
    # Zip archives of images: refused beyond these (zip-bomb guards).
    archive_max_entries: int = Field(default=10_000, ge=1)
    archive_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    archive_max_ratio: float = Field(default=100.0, ge=1.0)

    # Monitoring: EMF metrics + JSON logs on stdout (CloudWatch picks them up on Lambda), and the
    # inference_log table where the experiment store is SQL ("auto": SQLite or PostgreSQL).
    emf: bool = True
    inference_log: Literal["auto", "off"] = "auto"
    inference_log_retention_days: float = Field(default=7.0, gt=0)
    inference_log_max_rows: int = Field(default=1_000_000, ge=1)

    # The server's bounded pool for model work (0: one thread per CPU) and how many more
    # requests may wait for a thread before the server answers 503 with Retry-After.
    work_threads: int = Field(default=0, ge=0)
    work_queue: int = Field(default=64, ge=0)
    # Monitoring events (EMF lines, inference_log rows) waiting to be written; beyond this they
    # are dropped and counted, never waited for.
    monitor_queue: int = Field(default=10_000, ge=1)
    # How often an embedded job worker looks for experiments queued by other processes.
    job_poll_seconds: float = Field(default=1.0, gt=0)

    # The local server's gRPC side (mlfn serve --grpc-port; 0 turns it off). The processes of
    # `mlfn serve --workers N` share the port (the CLI sets MLFN_GRPC_SHARED_PORT).
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    grpc_shared_port: bool = False

    # Shadow scoring waits here after the answer; beyond, it is dropped and counted.
    shadow_queue: int = Field(default=1000, ge=1)
    # Auto-rollback of a guarded canary: after this many canary requests, worse than the
    # champion by more than the margins (error rate and primary metric in points, relative
    # MAE for regression; p99 latency above ratio x the champion's and by more than the floor).
    # Checked by the monitoring writer at most every guard_check_seconds per model.
    guard_min_requests: int = Field(default=200, ge=1)
    guard_error_margin: float = Field(default=0.05, ge=0)
    guard_latency_ratio: float = Field(default=2.0, ge=1)
    guard_latency_floor_ms: float = Field(default=20.0, ge=0)
    guard_metric_margin: float = Field(default=0.05, ge=0)
    guard_check_seconds: float = Field(default=5.0, ge=0)

    # Drift (GET /drift): the monitoring writer counts served rows into each experiment's
    # training profile and persists the counts at most every drift_flush_seconds per process
    # (drift="off": not at all); a feature drifted when its PSI exceeds drift_psi_threshold
    # over at least drift_min_rows rows; GET /drift looks back drift_window_hours by default.
    drift: Literal["on", "off"] = "on"
    drift_flush_seconds: float = Field(default=60.0, ge=0)
    drift_psi_threshold: float = Field(default=0.25, gt=0)
    drift_min_rows: int = Field(default=100, ge=1)
    drift_window_hours: float = Field(default=24.0, gt=0)
    drift_table: str = ""  # DynamoDB: the drift counts' table (default: "<table_name>-drift")

    # How long an Idempotency-Key is remembered (add_data, retrain, POST /models, deploy).
    idempotency_ttl_seconds: float = Field(default=86_400.0, gt=0)

    # Uploads of any size (POST /uploads, common/uploads.py): at most upload_max_bytes; an
    # upload not ingested within upload_expiry_seconds is removed (mlfn gc and start-up; on S3
    # also the bucket's lifecycle rule on _uploads/); its URLs are valid for upload_url_seconds;
    # on S3 an upload declared above upload_multipart_bytes goes up in presigned parts of
    # upload_part_bytes (S3's minimum part is 5 MiB).
    upload_max_bytes: int = Field(default=5 * 1024**3, ge=1)
    upload_expiry_seconds: float = Field(default=86_400.0, gt=0)
    upload_url_seconds: int = Field(default=3600, ge=1, le=604_800)
    upload_multipart_bytes: int = Field(default=100 * 1024**2, ge=5 * 1024**2)
    upload_part_bytes: int = Field(default=64 * 1024**2, ge=5 * 1024**2)
    # A zip of images ingested from an upload is read entry by entry, but its central
    # directory is held (about 1 KB per entry): at most this many entries, and this many bytes
    # once inflated (add_data's archive_max_* guard a request's archive; the ratio is shared).
    upload_archive_max_entries: int = Field(default=250_000, ge=1)
    upload_archive_max_bytes: int = Field(default=20 * 1024**3, ge=1024)
    # Presigned S3 URLs (uploads, batch results) are signed for this endpoint instead of the
    # one the service reaches S3 through: an emulator's in-network name (docker-compose's
    # http://moto:5000) is not what a client outside that network can reach. Empty: the same.
    presign_endpoint_url: str = ""
    # Ingestion of an upload (PUT /add_data?upload=, common/ingestion.py) reads this many rows
    # at a time (one Parquet row group each). Ingestions run on task_workers threads per
    # server process (0: none here; `mlfn worker` processes take them), or, with
    # job_queue=sqs, as messages on ingest_queue_url (the ingest worker function on AWS).
    ingest_chunk_rows: int = Field(default=50_000, ge=1)
    task_workers: int = Field(default=1, ge=0)
    ingest_queue_url: str = ""
    # Batch scoring jobs (POST /batch_jobs, common/batch_jobs.py): the upload is scored in
    # chunks of about batch_chunk_bytes (cut at row boundaries), on the task workers above or,
    # with job_queue=sqs, as messages on batch_queue_url (the score worker function on AWS).
    batch_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    batch_queue_url: str = ""

    api_key: str = ""
    cors_origins: str = ""

    demo_models: bool = True

    @model_validator(mode="after")
    def _heartbeat_inside_the_lease(self) -> Settings:
        if self.job_heartbeat_seconds >= self.job_lease_seconds:
            raise ValueError(
                f"MLFN_JOB_HEARTBEAT_SECONDS ({self.job_heartbeat_seconds}) must be shorter than "
                f"MLFN_JOB_LEASE_SECONDS ({self.job_lease_seconds}): a lease must be renewed "
                "before it runs out (a third of it is a good heartbeat)")
        return self

    @property
    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(self.archive_max_entries, self.archive_max_bytes, self.archive_max_ratio)

    @property
    def upload_archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(self.upload_archive_max_entries, self.upload_archive_max_bytes,
                             self.archive_max_ratio, "MLFN_UPLOAD_ARCHIVE")

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "experiments.sqlite3"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"
