"""Domain errors. Handlers map each class to one HTTP status; nothing else does."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base class: ``status`` and ``error`` are what the HTTP layer answers with."""

    status = 500
    error = "internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides the JSON body (none by default)."""
        return {}


class BadRequest(ServiceError):
    """Something the caller can fix; the detail names the field, column or row."""

    status = 400
    error = "bad request"


class ObjectChanged(BadRequest):
    """An object read at a version (its ETag) was replaced since: what was read before no
    longer goes with what would be read now."""


class Unauthorized(ServiceError):
    status = 401
    error = "unauthorized"


class NotFound(ServiceError):
    status = 404
    error = "not found"


class Conflict(ServiceError):
    status = 409
    error = "conflict"


class SchemaConflict(Conflict):
    """A first upload lost the race to fix a model's feature schema; ``stored`` is the winner's."""

    def __init__(self, model: str, stored: list[Any]) -> None:
        super().__init__(f"model {model!r} got a different feature schema from another upload")
        self.stored = stored


class PayloadTooLarge(ServiceError):
    status = 413
    error = "payload too large"


class InferenceError(ServiceError):
    """The model failed on input that passed validation (wording fixed by the API contract)."""

    status = 403
    error = "модель не смогла обработать данные"


class HyperparameterError(BadRequest):
    """An unknown or out-of-range hyperparameter; ``parameter`` names it."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"hyperparameter {parameter!r}: {detail}")
        self.parameter = parameter


class ServiceUnavailable(ServiceError):
    """A backend the request needs (queue, store) failed, or the server is at capacity;
    retrying later may succeed (after ``retry_after`` seconds, when given)."""

    status = 503
    error = "service unavailable"

    def __init__(self, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"retry-after": str(self.retry_after)}


class ParityError(ServiceError):
    """The exported ONNX model disagrees with the native model; it is never stored."""

    status = 500
    error = "parity check failed"
