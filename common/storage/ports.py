"""Storage ports. Each has a local adapter and a cloud adapter, checked by one contract suite."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from common.domain import (
    DatasetPart,
    Deployment,
    Experiment,
    ExperimentStatus,
    Feature,
    ModelRecord,
    PartSource,
)
from common.storage.expectations import UNSET, LeaseExpectation


class ObjectStore(Protocol):
    """Immutable blobs by key (models, dataset parts, artefacts)."""

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` atomically: readers see the old object or the new one, never a part."""

    def get(self, key: str) -> bytes:
        """Raise :class:`common.errors.NotFound` for an unknown key."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Delete if present; deleting a missing key is not an error."""

    def listing(self, prefix: str) -> list[tuple[str, datetime]]:
        """Keys starting with ``prefix`` with the time each was last written (UTC), sorted."""
        ...

    def remove_temporary(self, older_than: datetime) -> list[str]:
        """Remove what interrupted writes left behind before ``older_than`` (a local store's
        temp files; S3 writes are atomic and leave none) and return what was removed."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        ...

    # Objects larger than memory (uploads, batch outputs, big dataset parts) move through files.
    def put_file(self, key: str, path: Path, move: bool = False) -> None:
        """Write the file at ``path`` as ``key``, atomically like :meth:`put` (S3: a multipart
        upload above its threshold, visible only once complete). ``move``: the caller is done
        with the file, and a local store on its file system renames it into place instead of
        copying it (it may be gone after)."""

    # ``version``: the object's version as :meth:`stat` gave it (S3: its ETag). A read at a
    # version raises ObjectChanged once the object was replaced; None reads what is there. A
    # local store has no versions (the service never replaces an upload it holds).
    def open_read(self, key: str, version: str | None = None) -> BinaryIO:
        """A seekable binary file of the object's bytes (the caller closes it); NotFound for
        an unknown key. A local store opens its file; S3 downloads into a temporary file."""
        ...

    def read_range(self, key: str, start: int, end: int, version: str | None = None) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of the object; NotFound for an unknown key."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes; NotFound for an unknown key."""
        ...

    def stat(self, key: str) -> tuple[int, str | None]:
        """The object's size and version (None where the store has none), read together;
        NotFound for an unknown key."""
        ...


class ExperimentStore(Protocol):
    """Models, experiments, deployments and dataset parts.

    Every state change that can race is a conditional write: it fails with
    :class:`common.errors.Conflict` instead of overwriting.
    """

    def create_model(self, model: ModelRecord) -> None:
        """Conflict if a model of that name exists."""

    def get_model(self, name: str) -> ModelRecord:
        """NotFound for an unknown model."""
        ...

    def list_models(self) -> list[ModelRecord]: ...

    def deployed_experiment(self, name: str) -> int | None:
        """The cheap check warm instances make; NotFound for an unknown model."""
        ...

    def deploy(self, name: str, experiment_id: int, expected_previous: int | None) -> Deployment:
        """Point ``name`` at ``experiment_id`` if it still points at ``expected_previous``."""
        ...

    def list_deployments(self, name: str) -> list[Deployment]:
        """Newest first."""
        ...

    def create_experiment(self, fields: dict[str, Any]) -> Experiment:
        """Allocate a unique integer id and record the experiment; NotFound unless its model
        exists (checked atomically with the write, so an experiment never outlives a model
        deleted meanwhile)."""
        ...

    def get_experiment(self, experiment_id: int) -> Experiment: ...

    def update_experiment(
        self,
        experiment_id: int,
        fields: dict[str, Any],
        expected_status: ExperimentStatus | None = None,
        expected_attempts: int | None = None,
        expected_lease_until: LeaseExpectation = UNSET,
    ) -> Experiment:
        """Conflict if ``expected_status`` is given and the stored status differs, if
        ``expected_attempts`` is given and the stored attempt count differs (a fencing token: a
        worker whose job was taken over by a later attempt can no longer write its outcome), or
        if ``expected_lease_until`` is given and the stored lease differs (a worker taking over
        a lapsed lease loses to a heartbeat that renewed it meanwhile). The checks are
        :class:`common.storage.expectations.Expectation`'s, shared by every adapter."""
        ...

    def renew_lease(self, experiment_id: int, attempt: int, until: datetime) -> Experiment:
        """Extend a running job's lease to ``until``: Conflict unless the experiment is
        ``running`` on ``attempt`` (a worker whose job was taken over cannot renew it)."""
        ...

    def list_experiments(
        self, model: str | None = None, status: ExperimentStatus | None = None
    ) -> list[Experiment]:
        """Newest first."""
        ...

    def delete_experiment(self, experiment_id: int) -> None:
        """Conflict if it is deployed."""

    def delete_model(self, name: str) -> None:
        """Delete the model's rows: the model, its experiments, deployments and dataset parts
        (not their files: the caller deletes those afterwards). Conflict, naming the
        experiment, while one of them is queued or running; NotFound for an unknown model. A
        model created later under the same name starts empty."""

    def add_dataset_part(
        self, model: str, key: str, rows: int, features: list[Feature] | None = None,
        source: PartSource = "unknown", filename: str | None = None,
    ) -> DatasetPart:
        """Register an uploaded part; its version is the new dataset version. With
        ``features`` (a first upload), the model's feature schema is fixed to them in the same
        atomic write; SchemaConflict (carrying the stored schema, nothing written) if the model
        already has a different one. ``source`` and ``filename`` say how it was uploaded."""
        ...

    def remove_dataset_part(self, model: str, version: int) -> DatasetPart:
        """Make a new dataset version without the part added in ``version`` and return the
        part, ``removed_in`` the new version. Earlier versions keep it (its file stays). NotFound
        for an unknown model or part, Conflict if it was removed already."""
        ...

    def dataset_parts(self, model: str, up_to_version: int | None = None) -> list[DatasetPart]:
        """The parts of dataset version ``up_to_version`` (the current one when None), in
        version order: those added in it or before and not removed by it, as that version
        saw them (:meth:`DatasetPart.as_of`). Empty for an unknown model."""
        ...

    def all_dataset_parts(self, model: str) -> list[DatasetPart]:
        """Every part the model has had, removed ones included, in version order (a removed
        part's files are needed while an experiment uses a version in its
        :meth:`DatasetPart.in_version` range). Empty for an unknown model."""
        ...
