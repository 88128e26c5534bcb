"""Domain types shared by training, serving and the stores."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


# The life-cycle records build their validators on first use, not at import: the serving
# handlers import this module on every cold start and never validate them.
LAZY = ConfigDict(defer_build=True)


class Task(StrEnum):
    classification = "classification"
    regression = "regression"


class FeatureKind(StrEnum):
    numeric = "numeric"
    categorical = "categorical"


class Feature(BaseModel):
    name: str
    kind: FeatureKind


class ImageSpec(BaseModel):
    """How an image model sees its input: decoded, converted, resized, scaled to [0, 1]."""

    width: int = Field(ge=1, le=512)
    height: int = Field(ge=1, le=512)
    mode: Literal["L", "RGB"] = "L"

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def n_pixels(self) -> int:
        return self.width * self.height * self.channels


class ModelRecord(BaseModel):
    """A named model: what it predicts, its feature schema and which experiment serves it."""

    model_config = LAZY

    name: str
    task: Task
    target: str
    input: Literal["tabular", "image"] = "tabular"
    image: ImageSpec | None = None
    features: list[Feature] | None = None
    deployed_experiment_id: int | None = None
    # The current dataset version, kept by the store: every upload and every removal of a part
    # makes a new one (0: no data yet). Ignored when a model is created.
    dataset_version: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class ExperimentStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


DeployPolicy = Literal["never", "if_better", "always"]


class Experiment(BaseModel):
    model_config = LAZY

    id: int
    model: str
    status: ExperimentStatus = ExperimentStatus.queued
    model_class: str
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    tune: bool = False
    deploy: DeployPolicy = "never"
    primary_metric: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    dataset_version: int = 0
    rows: int = 0
    artifact_key: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    attempts: int = 0
    # While running: the attempt holds the job until then, renewed by its heartbeat (None on
    # records claimed by something that does not heartbeat).
    lease_until: datetime | None = None
    # A tuned experiment whose grid candidates are scored as jobs of their own
    # (common/tuning.py): how many there are; 0 when it is not tuned or searches in one job.
    grid_size: int = 0


class Deployment(BaseModel):
    model_config = LAZY

    model: str
    seq: int
    experiment_id: int
    previous: int | None
    deployed_at: datetime = Field(default_factory=utcnow)


PartSource = Literal["csv", "json", "zip", "multipart", "upload", "unknown"]


class DatasetPart(BaseModel):
    """One upload, stored as an immutable Parquet file. A dataset version is a set of parts:
    the part added in ``version`` belongs to every version from it on until the one that
    removed it (``removed_in``, exclusive), so an experiment's version stays reproducible after
    a removal. ``version`` also names the part (``DELETE /datasets/parts/{version}``)."""

    model_config = LAZY

    model: str
    version: int
    key: str
    rows: int
    created_at: datetime = Field(default_factory=utcnow)
    # How it was uploaded: a CSV, JSON or zip body, or a multipart file (``filename``, when
    # the upload named one); parts registered before this was recorded are "unknown".
    source: PartSource = "unknown"
    filename: str | None = None
    removed_in: int | None = None
    removed_at: datetime | None = None

    def in_version(self, version: int) -> bool:
        """Whether dataset version ``version`` contains this part."""
        return self.version <= version and (self.removed_in is None or version < self.removed_in)

    def as_of(self, version: int) -> DatasetPart:
        """The part as dataset version ``version`` saw it: not yet removed if the removal came
        later."""
        if self.removed_in is not None and self.removed_in > version:
            return self.model_copy(update={"removed_in": None, "removed_at": None})
        return self
