"""A small typed client of the mlfn HTTP API: the UI's only way to the service.

Every failure becomes an :class:`ApiError` whose ``message`` is fit to show a user: the API's
``{"error", "detail"}`` body with a hint for the status, API Gateway's ``{"message"}`` body, or
"unreachable" for connection problems (:class:`ApiUnreachable`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, cast
from urllib.parse import quote

import requests

DEFAULT_API_URL = "http://127.0.0.1:3000"
DEFAULT_TIMEOUT = 60.0
# The most bytes add_data takes when /health does not say (the server's MLFN_MAX_BODY_BYTES
# default); a larger file goes up as an upload (POST /uploads), and so does one refused with 413.
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024

Task = Literal["classification", "regression"]
DeployPolicy = Literal["never", "if_better", "always"]

# What a status means for the user, added after the API's own detail.
HINTS = {
    401: "the API requires a key: set MLFN_UI_API_KEY to the value of its MLFN_API_KEY",
    403: "the model could not process this input although it passed validation",
    413: "the request is larger than the API accepts (MLFN_MAX_BODY_BYTES, 6 MiB by default)",
}


class Feature(TypedDict):
    name: str
    kind: Literal["numeric", "categorical"]


class Model(TypedDict):
    name: str
    task: Task
    target: str
    input: Literal["tabular", "image"]
    features: list[Feature]
    deployed_experiment_id: int | None
    image: NotRequired[dict[str, Any] | None]


class Experiment(TypedDict):
    experiment_id: int
    model: str
    status: Literal["queued", "running", "succeeded", "failed"]
    model_class: str
    hyperparameters: dict[str, Any]
    tune: bool
    deploy: NotRequired[str]
    primary_metric: NotRequired[str | None]
    metrics: dict[str, float] | None
    dataset_version: int | None
    rows: int | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    error: str | None


class Deployment(TypedDict):
    """A deploy row of ``GET /deployments`` (``"event": "deploy"``; older servers send none)."""

    event: NotRequired[Literal["deploy"]]
    model: str
    seq: int
    experiment_id: int
    previous: int | None
    deployed_at: str


class RolloutEvent(TypedDict):
    """A canary or shadow starting or ending: in ``GET /rollout``'s history and between the
    deploys of ``GET /deployments``."""

    event: Literal["canary started", "canary ended", "shadow started", "shadow ended",
                   "shadow sample changed"]
    experiment_id: int
    at: str
    share: NotRequired[float]
    guard: NotRequired[bool]
    sample: NotRequired[float]
    previous_sample: NotRequired[float]  # of "shadow sample changed": the sample before
    since: NotRequired[str | None]
    reason: NotRequired[str]  # why it ended: promoted, replaced, ended by request, auto-rollback: ...


HistoryRow = Deployment | RolloutEvent


class Canary(TypedDict):
    experiment_id: int
    share: float
    guard: bool
    since: str | None


class Shadow(TypedDict):
    experiment_id: int
    since: str | None
    sample: NotRequired[float]  # the percent of the requests it scores (100 when absent)


class Rollout(TypedDict):
    model: str
    deployed: int | None
    canary: Canary | None
    shadow: Shadow | None
    history: list[RolloutEvent]


class LiveExperiment(TypedDict):
    experiment_id: int
    role: Literal["champion", "canary", "shadow"]
    requests: int
    with_outcome: int
    metrics: dict[str, float]
    p99_latency_ms: float | None


class Agreement(TypedDict):
    requests: int
    shadow_agrees: float | None


class LiveMetrics(TypedDict):
    experiments: list[LiveExperiment]
    agreement: Agreement | None


class FeatureDrift(TypedDict):
    name: str
    kind: Literal["numeric", "categorical"]
    psi: float | None
    missing_train: float | None
    missing_served: float | None
    drifted: bool


class Drift(TypedDict):
    model: str
    experiment_id: int
    since: str | None
    rows: int
    threshold: float
    min_rows: int
    features: list[FeatureDrift]  # largest PSI first
    prediction: dict[str, Any] | None  # {"psi", "drifted"}
    max_psi: float | None
    drifted: list[str]


class Hyperparameter(TypedDict):
    name: str
    type: Literal["int", "float", "choice", "bool", "str"]
    default: Any
    nullable: bool
    tasks: list[str]
    minimum: NotRequired[float]
    maximum: NotRequired[float]
    choices: NotRequired[list[Any]]
    doc: NotRequired[str]


class ModelClass(TypedDict):
    name: str
    description: str
    tasks: list[str]
    hyperparameters: list[Hyperparameter]
    grid: dict[str, list[Any]]


class Prediction(TypedDict):
    model: str
    experiment_id: int
    prediction: Any
    probabilities: NotRequired[dict[str, float] | None]
    image: NotRequired[str]


class BatchPrediction(TypedDict):
    model: str
    experiment_id: int
    predictions: list[Any]
    probabilities: NotRequired[list[dict[str, float]] | None]
    files: NotRequired[list[str]]  # zip archives: the entry of each prediction


class Evaluation(TypedDict):
    model: str
    experiment_id: int
    n: int
    metrics: dict[str, float]
    predictions: list[Any]
    files: NotRequired[list[str]]  # zip archives: the entry of each prediction


class DataAdded(TypedDict):
    model: str
    rows_added: int
    rows_total: int
    dataset_version: int


class UploadPart(TypedDict):
    part: int  # from 1
    url: str  # presigned: PUT the part's bytes there


class Multipart(TypedDict):
    part_bytes: int  # every part but the last has this many bytes
    parts: list[UploadPart]
    complete: str  # POST it (the service's path) once every part is there


class Upload(TypedDict):
    """``POST /uploads`` / ``GET /uploads/{id}``: where and how to send a file's bytes."""

    upload_id: str
    model: str
    status: Literal["pending", "received", "ingesting", "ingested"]
    filename: str | None
    expires_at: str
    max_bytes: int
    method: NotRequired[str]
    url: NotRequired[str]  # the service's own path, or a presigned S3 URL
    headers: NotRequired[dict[str, str]]
    multipart: NotRequired[Multipart]
    size: NotRequired[int]


class Ingestion(TypedDict):
    """``GET /ingestions/{id}``: an upload's rows becoming one dataset version, all or nothing."""

    ingestion_id: str
    model: str
    upload_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    attempts: int
    rows_read: int
    url: str
    rows_added: NotRequired[int]
    dataset_version: NotRequired[int]
    error: NotRequired[str]
    row: NotRequired[int]  # the failing row, from 0 among the data rows


class DatasetPart(TypedDict):
    version: int  # the dataset version that added it: the part's name
    rows: int
    source: Literal["csv", "json", "zip", "multipart", "upload", "unknown"]
    filename: str | None
    created_at: str
    removed_in: int | None
    removed_at: str | None


class DatasetVersion(TypedDict):
    version: int
    change: Literal["added", "removed"] | None
    part: int | None
    created_at: str | None
    parts: list[int]
    rows: int
    experiments: list[int]


class Datasets(TypedDict):
    model: str
    dataset_version: int
    rows_total: int
    parts: list[DatasetPart]
    versions: list[DatasetVersion]


class PartRemoved(TypedDict):
    model: str
    removed: int
    dataset_version: int
    rows_total: int
    parts: list[int]


class InferenceLogRow(TypedDict):
    time: str
    model: str
    experiment_id: int | None
    route: str
    rows: int
    latency_ms: float
    status: int
    prediction_summary: Any


class ApiError(Exception):
    """A request the API refused or could not answer; ``message`` is for the user."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.error}: {self.detail}" if self.detail else self.error
        hint = HINTS.get(self.status)
        return f"{text} (HTTP {self.status}; {hint})" if hint else f"{text} (HTTP {self.status})"


class ApiUnreachable(ApiError):
    """No HTTP answer at all: wrong URL, server down, timeout."""

    def __init__(self, base_url: str, reason: str) -> None:
        self.base_url = base_url
        super().__init__(0, "unreachable", reason)

    @property
    def message(self) -> str:
        return (
            f"The API at {self.base_url} is unreachable ({self.detail}). Is the server running? "
            "Set MLFN_UI_API_URL to its address."
        )


def _error_from(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        detail = body.get("detail")
        text = detail if isinstance(detail, str) else json.dumps(detail)
        return ApiError(response.status_code, str(body["error"]), text if detail is not None else "")
    if isinstance(body, dict) and "message" in body:  # API Gateway's own answers
        return ApiError(response.status_code, str(body["message"]), "")
    snippet = " ".join(response.text.split())[:200]
    return ApiError(response.status_code, response.reason or "error", snippet)


@dataclass(frozen=True)
class ClientConfig:
    """Where the API is and how to authenticate: ``MLFN_UI_API_URL``, ``MLFN_UI_API_KEY``."""

    base_url: str = DEFAULT_API_URL
    api_key: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_env(cls) -> ClientConfig:
        url = os.environ.get("MLFN_UI_API_URL", "").strip() or DEFAULT_API_URL
        key = os.environ.get("MLFN_UI_API_KEY", "").strip() or None
        return cls(base_url=url.rstrip("/"), api_key=key)


class MlfnClient:
    """One method per route of the API contract (README.md, "The API")."""

    def __init__(self, config: ClientConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self.session = session or requests.Session()
        if config.api_key:
            self.session.headers["x-api-key"] = config.api_key

    @classmethod
    def from_env(cls) -> MlfnClient:
        return cls(ClientConfig.from_env())

    @property
    def base_url(self) -> str:
        return self.config.base_url

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.config.timeout)
        try:
            response = self.session.request(method, f"{self.base_url}{path}", **kwargs)
        except requests.Timeout:
            raise ApiUnreachable(self.base_url, f"no answer within {kwargs['timeout']:g} s") from None
        except requests.RequestException as exc:
            raise ApiUnreachable(self.base_url, type(exc).__name__) from None
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "not JSON", response.text[:200]) from None

    # -- models ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._request("GET", "/health"))

    def list_models(self) -> list[Model]:
        return cast(list[Model], self._request("GET", "/models"))

    def create_model(self, name: str, task: Task, target: str, input: str = "tabular",
                     image_size: int | list[int] | None = None, color: str | None = None) -> Model:
        """``image_size`` (pixels, or [width, height]) and ``color`` ("grayscale" or "rgb") are
        for ``input="image"`` only."""
        body: dict[str, Any] = {"name": name, "task": task, "target": target}
        if input != "tabular":
            body["input"] = input
        if image_size is not None:
            body["image_size"] = image_size
        if color is not None:
            body["color"] = color
        return cast(Model, self._request("POST", "/models", json=body))

    def delete_model(self, name: str) -> None:
        """Delete a model with its data, experiments, deployments and files."""
        self._request("DELETE", f"/models/{quote(name, safe='')}")

    def model_classes(self) -> list[ModelClass]:
        return cast(list[ModelClass], self._request("GET", "/model_classes"))

    def metadata(self, model: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._request("GET", "/metadata", params={"model": model}))

    # -- data and training -----------------------------------------------------------------
    def add_data(self, model: str, filename: str, content: bytes) -> DataAdded:
        """Upload a labelled CSV or zip as the multipart field ``file``."""
        files = {"file": (filename, content, _content_type(filename))}
        return cast(DataAdded, self._request("PUT", "/add_data", params={"model": model}, files=files))

    def body_limit(self) -> int:
        """The most bytes one request may carry: ``max_body_bytes`` of ``GET /health`` where the
        server says, else :data:`DEFAULT_MAX_BODY_BYTES`."""
        given = self.health().get("max_body_bytes")
        return given if isinstance(given, int) and given > 0 else DEFAULT_MAX_BODY_BYTES

    def add_file(self, model: str, filename: str, content: bytes,
                 limit: int | None = None) -> DataAdded | Ingestion:
        """Add a labelled file (a CSV, or a zip of images): in one request (:meth:`add_data`)
        up to ``limit`` bytes (by default :meth:`body_limit`), a larger one as an upload whose
        ingestion is answered (follow it with :meth:`ingestion`). A file the API refuses as too
        large (413: the server's limit is lower than it says, or a gateway's) goes up as an
        upload too."""
        if len(content) > (self.body_limit() if limit is None else limit):
            return self.upload_data(model, filename, content)
        try:
            return self.add_data(model, filename, content)
        except ApiError as exc:
            if exc.status != 413:
                raise
        return self.upload_data(model, filename, content)

    def upload_data(self, model: str, filename: str, content: bytes) -> Ingestion:
        """A CSV or zip of any size: announce it, send its bytes where the answer says, ingest
        it (202); the ingestion runs in the background."""
        upload = self.create_upload(model, len(content), filename)
        self.send_upload(upload, content)
        return self.ingest_upload(model, upload["upload_id"])

    def create_upload(self, model: str, size: int | None = None, filename: str | None = None) -> Upload:
        params: dict[str, Any] = {"model": model}
        if size is not None:
            params["size"] = int(size)
        if filename:
            params["filename"] = filename
        return cast(Upload, self._request("POST", "/uploads", params=params))

    def send_upload(self, upload: Upload, content: bytes) -> None:
        """PUT ``content`` where ``upload`` says: the service's own path, a presigned URL, or
        each part to its presigned URL and then ``POST .../complete``."""
        headers = upload.get("headers") or {}
        multipart = upload.get("multipart")
        if multipart is None:
            self._put_bytes(upload["url"], content, headers)
            return
        size = int(multipart["part_bytes"])
        for part in multipart["parts"]:
            start = (int(part["part"]) - 1) * size
            self._put_bytes(part["url"], content[start:start + size], headers)
        self._request("POST", multipart["complete"])

    def _put_bytes(self, url: str, data: bytes, headers: dict[str, str]) -> None:
        if url.startswith("/"):  # the service's own URL: with the API key
            self._request("PUT", url, data=data, headers=headers)
            return
        # A presigned URL (S3): the signature is the credential; the API key stays home.
        host = url.split("?", 1)[0]
        try:
            response = requests.put(url, data=data, headers=headers, timeout=self.config.timeout)
        except requests.RequestException as exc:
            raise ApiUnreachable(host, type(exc).__name__) from None
        if response.status_code >= 400:
            code = re.search(r"<Code>(.*?)</Code>", response.text)
            text = re.search(r"<Message>(.*?)</Message>", response.text)
            raise ApiError(response.status_code, "the object store refused the upload",
                           ": ".join(m.group(1) for m in (code, text) if m))

    def ingest_upload(self, model: str, upload_id: str) -> Ingestion:
        """``PUT /add_data?upload=``: start ingesting an upload that has arrived (202)."""
        return cast(Ingestion, self._request("PUT", "/add_data",
                                             params={"model": model, "upload": upload_id}))

    def ingestion(self, ingestion_id: str, model: str | None = None) -> Ingestion:
        params = {"model": model} if model else {}
        return cast(Ingestion, self._request("GET", f"/ingestions/{quote(ingestion_id, safe='')}",
                                             params=params))

    def datasets(self, model: str) -> Datasets:
        """The model's dataset versions and parts."""
        return cast(Datasets, self._request("GET", "/datasets", params={"model": model}))

    def remove_part(self, model: str, version: int) -> PartRemoved:
        """Remove the part added in dataset version ``version`` (a new version without it)."""
        return cast(PartRemoved, self._request("DELETE", f"/datasets/parts/{int(version)}",
                                               params={"model": model}))

    def retrain(
        self,
        model: str,
        model_class: str,
        hyperparameters: dict[str, Any] | None = None,
        tune: bool = False,
        deploy: DeployPolicy = "never",
        primary_metric: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model_class": model_class,
            "hyperparameters": hyperparameters or {},
            "tune": tune,
            "deploy": deploy,
        }
        if primary_metric:
            body["primary_metric"] = primary_metric
        return cast(dict[str, Any], self._request("PUT", "/retrain", params={"model": model}, json=body))

    def metrics(self, experiment_id: int) -> Experiment:
        return cast(Experiment, self._request("GET", f"/metrics/{int(experiment_id)}"))

    def experiments(self, model: str, status: str | None = None) -> list[Experiment]:
        params = {"model": model, **({"status": status} if status else {})}
        return cast(list[Experiment], self._request("GET", "/experiments", params=params))

    def delete_experiment(self, experiment_id: int) -> None:
        self._request("DELETE", f"/experiments/{int(experiment_id)}")

    def deploy(self, experiment_id: int) -> dict[str, Any]:
        return cast(dict[str, Any], self._request("POST", f"/deploy/{int(experiment_id)}"))

    def deployments(self, model: str) -> list[HistoryRow]:
        """The deploys, newest first, with the canary and shadow events between them."""
        return cast(list[HistoryRow], self._request("GET", "/deployments", params={"model": model}))

    # -- rollouts --------------------------------------------------------------------------
    def rollout(self, model: str) -> Rollout:
        return cast(Rollout, self._request("GET", "/rollout", params={"model": model}))

    def start_canary(self, experiment_id: int, model: str, share: int, guard: bool) -> Rollout:
        """The experiment answers ``share`` percent (1-99) of the requests; ``guard`` ends it
        when it does worse than the champion."""
        params = {"model": model, "canary": int(share), "guard": "true" if guard else "false"}
        return cast(Rollout, self._request("POST", f"/deploy/{int(experiment_id)}", params=params))

    def start_shadow(self, experiment_id: int, model: str, sample: int = 100) -> Rollout:
        """The experiment scores ``sample`` percent (1-100) of the requests after they are
        answered; its answers are only logged. Again for the shadow: changes its sample."""
        params: dict[str, Any] = {"model": model, "shadow": "true"}
        if sample != 100:  # the default; servers from before samples refuse the parameter
            params["sample"] = int(sample)
        return cast(Rollout, self._request("POST", f"/deploy/{int(experiment_id)}", params=params))

    def end_canary(self, model: str) -> Rollout:
        return cast(Rollout, self._request("DELETE", "/canary", params={"model": model}))

    def end_shadow(self, model: str) -> Rollout:
        return cast(Rollout, self._request("DELETE", "/shadow", params={"model": model}))

    def live_metrics(self, model: str, since: str | None = None) -> LiveMetrics:
        """Each side's requests, p99 latency and metrics on the feedback; 404 where the server
        keeps no inference log (DynamoDB)."""
        params = {"model": model, **({"since": since} if since else {})}
        return cast(LiveMetrics, self._request("GET", "/live_metrics", params=params))

    def drift(self, model: str, experiment_id: int | None = None, since: str | None = None) -> Drift:
        """PSI per feature of the served rows against the experiment's training profile (the
        deployed experiment's by default); 409 for an experiment trained without a profile."""
        params: dict[str, Any] = {"model": model}
        if experiment_id is not None:
            params["experiment"] = int(experiment_id)
        if since:
            params["since"] = since
        return cast(Drift, self._request("GET", "/drift", params=params))

    # -- serving ---------------------------------------------------------------------------
    def forward(self, model: str, record: dict[str, Any]) -> Prediction:
        return cast(Prediction, self._request("POST", "/forward", params={"model": model}, json=record))

    def forward_image(self, model: str, filename: str, content: bytes, top_k: int = 3) -> Prediction:
        files = {"image": (filename, content, _content_type(filename))}
        return cast(Prediction, self._request(
            "POST", "/forward", params={"model": model}, files=files, headers={"X-Top-K": str(int(top_k))},
        ))

    def forward_batch(self, model: str, filename: str, content: bytes) -> BatchPrediction:
        """Predict a CSV (``text/csv``) or a zip of images (``application/zip``)."""
        return cast(BatchPrediction, self._request(
            "POST", "/forward_batch", params={"model": model}, data=content,
            headers={"Content-Type": _content_type(filename)},
        ))

    def evaluate(self, model: str, filename: str, content: bytes) -> Evaluation:
        """Score the deployed experiment on a labelled CSV or zip."""
        return cast(Evaluation, self._request(
            "POST", "/evaluate", params={"model": model}, data=content,
            headers={"Content-Type": _content_type(filename)},
        ))

    def inference_log(self, model: str | None, limit: int = 500) -> list[InferenceLogRow]:
        """Recent monitored calls, newest first; every model's when ``model`` is None."""
        params: dict[str, Any] = {"limit": int(limit), **({"model": model} if model else {})}
        return cast(list[InferenceLogRow], self._request("GET", "/inference_log", params=params))


def _content_type(filename: str) -> str:
    lower = filename.lower()
    if lower.endswith(".zip"):
        return "application/zip"
    if lower.endswith(".png"):
        return "image/png"
    if lower.endswith((".jpg", ".jpeg")):
        return "image/jpeg"
    if lower.endswith(".webp"):
        return "image/webp"
    return "text/csv"
