"""The DVC pipeline's stages: extract_data -> train_model -> inference_model.

``dvc repro`` runs them (see dvc.yaml); by hand, from the repository root::

    python -m pipeline.stages extract_data      # or train_model, inference_model
    python -m pipeline.stages deploy            # deploy the experiment train_model registered

Parameters come from params.yaml beside this file, and every path is relative to this
directory whatever the working directory. The stages only wire the service's own code
together: the stores (``common.backends``), the trainer with its ONNX export and parity gate
(``common.training``), and the inference runtime every handler uses
(``common.inference.onnx_model``). DVC itself is never imported.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # relative store paths in params.yaml start here, like `mlfn serve`'s

PARAMS = HERE / "params.yaml"
DATASET = HERE / "data" / "dataset.parquet"
DATASET_INFO = HERE / "data" / "dataset.json"
HOLDOUT = HERE / "data" / "holdout.parquet"
MODEL = HERE / "model" / "model.onnx"
MODEL_INFO = HERE / "model" / "model.json"
METRICS = HERE / "metrics.json"
TENSORBOARD = HERE / "tensorboard"
PLOT_DATA = HERE / "plots" / "data"
PLOT_IMAGES = HERE / "plots" / "images"
PLOT_DEFINITIONS = HERE / "plots" / "dvc.yaml"
PREDICTIONS = HERE / "inference" / "predictions.csv"
INFERENCE_METRICS = HERE / "inference" / "metrics.json"

NOT_REGISTERED = 0  # the experiment id in the metadata of a model the pipeline did not register
TRAIN_KEYS = ("model_class", "hyperparameters", "tune", "seed")
PARAM_KEYS = ("model", "dataset_version", "store", "train", "register")

log = logging.getLogger("mlfn.pipeline")


# -- parameters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """params.yaml, checked."""

    model: str
    dataset_version: int | None  # None: the latest
    store: dict[str, Any]
    model_class: str
    hyperparameters: dict[str, Any]
    tune: bool
    seed: int
    register: bool


def load_params(path: Path = PARAMS) -> Params:
    import yaml

    from common.catalog import model_class
    from common.errors import BadRequest
    from common.names import model_name

    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    where = path.name
    if not isinstance(raw, dict):
        raise BadRequest(f"{where}: expected a mapping of parameters")
    _no_unknown(raw, PARAM_KEYS, where)
    train = raw.get("train") or {}
    if not isinstance(train, dict):
        raise BadRequest(f"{where}: 'train' must be a mapping")
    _no_unknown(train, TRAIN_KEYS, f"{where}: train")
    version = raw.get("dataset_version", "latest")
    if version in (None, "latest"):
        version = None
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BadRequest(f"{where}: dataset_version must be 'latest' or a version number >= 1")
    store = raw.get("store") or {}
    if not isinstance(store, dict):
        raise BadRequest(f"{where}: 'store' must be a mapping of service settings")
    if "model_class" not in train:
        raise BadRequest(f"{where}: train.model_class is missing")
    chosen = model_class(train["model_class"]).name
    per_class = train.get("hyperparameters") or {}
    if not isinstance(per_class, dict) or not all(isinstance(v, dict | None) for v in per_class.values()):
        raise BadRequest(f"{where}: train.hyperparameters must map model classes to their hyperparameters")
    for name in per_class:
        model_class(name)  # a typo in another class's section is still a typo
    hyperparameters = per_class.get(chosen) or {}
    for flag in ("tune", "register"):
        value = (train if flag == "tune" else raw).get(flag, False)
        if not isinstance(value, bool):
            raise BadRequest(f"{where}: {flag} must be true or false")
    seed = train.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BadRequest(f"{where}: train.seed must be a non-negative integer")
    return Params(
        model=model_name(raw.get("model")),
        dataset_version=version,
        store=store,
        model_class=chosen,
        hyperparameters=hyperparameters,
        tune=train.get("tune", False),
        seed=seed,
        register=raw.get("register", False),
    )


def _no_unknown(section: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    from common.errors import BadRequest

    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise BadRequest(f"{where}: unknown parameter {unknown[0]!r}; allowed: {', '.join(allowed)}")


def open_backends(params: Params) -> Any:
    """The service's stores as params.yaml's ``store`` section (Settings fields) configures
    them; what it leaves out comes from the MLFN_* environment, as for the service."""
    from common.backends import Backends
    from common.errors import BadRequest
    from common.settings import Settings

    unknown = sorted(set(params.store) - set(Settings.model_fields))
    if unknown:
        raise BadRequest(f"params.yaml: store: {unknown[0]!r} is not a service setting")
    settings = Settings(**params.store)
    if not settings.data_dir.is_absolute():
        settings = settings.model_copy(update={"data_dir": ROOT / settings.data_dir})
    return Backends.from_settings(settings)


# -- stages --------------------------------------------------------------------------------------


def extract_data(params: Params) -> dict[str, Any]:
    """The model's dataset (every part up to the chosen version) as one Parquet file, and what
    it is (model schema, dataset version, parts) as JSON."""
    from common.errors import NotFound
    from common.training.datasets import load_dataset

    backends = open_backends(params)
    seed_demo_models(backends)
    try:
        record = backends.experiments.get_model(params.model)
    except NotFound as exc:
        raise NotFound(f"{exc.detail}: create it and upload its data through the API (see the "
                       "README), or name an existing model in params.yaml") from None
    # The version is the model's counter (a removal makes a version that adds no part).
    version = record.dataset_version if params.dataset_version is None else params.dataset_version
    if record.dataset_version == 0:
        raise NotFound(f"model {record.name!r} has no data; upload some with add_data")
    if not 1 <= version <= record.dataset_version:
        raise NotFound(
            f"model {record.name!r} has no dataset version {params.dataset_version}; "
            f"the latest is {record.dataset_version}"
        )
    parts = backends.experiments.dataset_parts(record.name, version)
    if not parts:
        raise NotFound(f"model {record.name!r} has no data; upload some with add_data")
    frame = load_dataset(backends.datasets, backends.experiments, record, version)
    DATASET.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(DATASET, index=False)
    info = {
        "model": record.name,
        "task": record.task.value,
        "target": record.target,
        "input": record.input,
        "features": None if record.features is None else [f.model_dump(mode="json") for f in record.features],
        "image": None if record.image is None else record.image.model_dump(mode="json"),
        "dataset_version": version,
        "rows": len(frame),
        "columns": [str(c) for c in frame.columns],
        "parts": [{"version": p.version, "key": p.key, "rows": p.rows} for p in parts],
    }
    write_json(DATASET_INFO, info)
    log.info("model %s: dataset version %d, %d rows from %d part(s)", record.name, version, len(frame),
             len(parts))
    return info


def seed_demo_models(backends: Any) -> list[str]:
    """On a store with no model at all (a fresh clone), train and deploy the demo models as the
    first start of ``mlfn serve`` does (``common.demo``, data that ships with scikit-learn), so
    that the default params.yaml reproduces from a clean checkout and a later ``make serve``
    finds the same store. ``demo_models: false`` (or MLFN_DEMO_MODELS=false) turns it off."""
    if not backends.settings.demo_models:
        return []
    from common.demo import ensure_demo_models
    from common.lifecycle import Lifecycle
    from common.serving import Serving

    created = ensure_demo_models(Lifecycle(backends, Serving(backends)))
    if created:
        log.info("empty store: trained and deployed the demo models %s", ", ".join(created))
    return created


def train_model(params: Params) -> dict[str, Any]:
    """Train with the service's trainer (split, optional grid search, fit, ONNX export through
    the parity gate, holdout metrics) and write the model, metrics, TensorBoard logs and plots;
    with ``register: true`` the run is also an experiment of the service."""
    import pandas as pd

    from common.catalog import model_class
    from common.domain import Feature, ImageSpec, Task
    from common.errors import BadRequest
    from common.training.trainer import TrainingSpec, train

    info = read_json(DATASET_INFO)
    if info["model"] != params.model:
        raise BadRequest(
            f"{DATASET_INFO.relative_to(HERE)} holds model {info['model']!r}, params.yaml names "
            f"{params.model!r}: run extract_data first"
        )
    task = Task(info["task"])
    features = [Feature.model_validate(f) for f in info["features"] or []]
    image = None if info["image"] is None else ImageSpec.model_validate(info["image"])
    model_class(params.model_class).resolve(task, params.hyperparameters)  # before registering
    frame = pd.read_parquet(DATASET)

    registration = Registration.start(params, info) if params.register else None
    experiment_id = NOT_REGISTERED if registration is None else registration.experiment_id
    try:
        # Renew the run's lease while it trains (a long training is never taken over).
        with registration.heartbeat() if registration is not None else contextlib.nullcontext():
            spec = TrainingSpec(
                model=params.model,
                experiment_id=experiment_id,
                model_class=params.model_class,
                task=task,
                target=info["target"],
                features=features,
                image=image,
                hyperparameters=params.hyperparameters,
                tune=params.tune,
                seed=params.seed,
                extra_metadata={"dataset_version": info["dataset_version"], "tune": params.tune,
                                "trained_by": "dvc pipeline"},
            )
            trained = train(frame, spec)
            run = f"{params.model}-{experiment_id}" if registration else f"{params.model}-pipeline"
            events = write_training_outputs(trained, spec, run)
            summary = {
                "model": params.model,
                "experiment_id": None if registration is None else experiment_id,
                "model_class": params.model_class,
                "task": task.value,
                "dataset_version": info["dataset_version"],
                "rows": trained.rows,
                "hyperparameters": trained.hyperparameters,
                "tune": params.tune,
                "grid_scores": trained.grid_scores,
                "classes": trained.classes,
                "split": trained.split,
                "parity": trained.parity,
                "metrics": trained.metrics,
                "onnx": {"bytes": len(trained.onnx_bytes),
                         "sha256": hashlib.sha256(trained.onnx_bytes).hexdigest()},
                "tensorboard": [p.relative_to(HERE).as_posix() for p in events],
            }
            if registration is not None:
                summary["registered"] = registration.finish(trained, TENSORBOARD / run)
    except BaseException as exc:
        if registration is not None:
            registration.fail(exc)
        raise
    write_json(MODEL_INFO, summary)
    log.info("%s %s: %s", params.model, params.model_class,
             ", ".join(f"{k}={v:.4g}" for k, v in trained.metrics.items()))
    return summary


def write_training_outputs(trained: Any, spec: Any, run: str) -> list[Path]:
    """The ONNX model, holdout metrics and rows, TensorBoard events and plots; returns the
    event files."""
    import yaml

    from common.training.plots import holdout_plots, write_plots
    from common.training.tensorboard import write_events

    MODEL.parent.mkdir(parents=True, exist_ok=True)
    MODEL.write_bytes(trained.onnx_bytes)
    write_json(METRICS, trained.metrics)
    trained.holdout.to_parquet(HOLDOUT)  # the index keeps each row's number in the dataset
    for directory in (TENSORBOARD, PLOT_DATA, PLOT_IMAGES):
        shutil.rmtree(directory, ignore_errors=True)  # by hand, DVC does not clear them first
    events = write_events(trained, TENSORBOARD / run, run)
    plots = holdout_plots(trained, spec.task, spec.features, spec.image)
    definitions = write_plots(plots, PLOT_DATA, PLOT_IMAGES, PLOT_DEFINITIONS.parent)
    PLOT_DEFINITIONS.write_text(
        "# Written by train_model (pipeline/stages.py): which plots exist depends on the task and\n"
        "# the model class, so their DVC definitions are written with them. Commit it with dvc.lock.\n"
        + yaml.safe_dump({"plots": definitions}, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return events


def inference_model(params: Params) -> dict[str, Any]:
    """Predict the holdout with the exported ONNX model through the service's runtime (the
    JSON records a client would send, validated as /forward_batch validates them) and score
    the predictions with the metrics /evaluate uses."""
    import numpy as np
    import pandas as pd

    from common.domain import Task
    from common.images import INPUT_NAME
    from common.inference.metrics import classification_metrics, regression_metrics
    from common.inference.onnx_model import OnnxModel
    from common.training.frames import frame_records, pixel_columns

    model = OnnxModel(MODEL.read_bytes())
    holdout = pd.read_parquet(HOLDOUT)
    target = model.metadata["target"]
    if model.image is None:
        served = model.predict(frame_records(holdout, model.features))
        out = holdout[[f.name for f in model.features] + [target]].copy()
    else:
        pixels = holdout[pixel_columns(model.image)].to_numpy(np.float32)
        served = model.predict_feeds({INPUT_NAME: pixels})
        out = holdout[[target]].copy()
    out.index.name = "dataset_row"
    out["prediction"] = served.predictions
    if model.task is Task.regression:
        actual = holdout[target].to_numpy(np.float64)
        predicted = np.asarray(served.predictions, dtype=np.float64)
        out["residual"] = actual - predicted
        metrics = regression_metrics(actual, predicted)
    else:
        keys = [str(c) for c in model.classes]
        index = {k: i for i, k in enumerate(keys)}
        actual_idx = np.array([index[_label_key(v)] for v in holdout[target]])
        predicted_idx = np.array([index[str(p)] for p in served.predictions])
        proba = np.array([[row[k] for k in keys] for row in served.probabilities or []])
        for i, key in enumerate(keys):
            out[f"probability_{key}"] = proba[:, i]
        metrics = classification_metrics(actual_idx, predicted_idx, proba)
    PREDICTIONS.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(PREDICTIONS)
    result = {**metrics, "rows": len(out)}
    write_json(INFERENCE_METRICS, result)
    log.info("inference on %d holdout rows: %s", len(out),
             ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return result


def deploy(params: Params) -> dict[str, Any]:
    """Deploy the experiment train_model registered (``POST /deploy/{id}`` does the same)."""
    from common.errors import BadRequest
    from common.lifecycle import Lifecycle
    from common.serving import Serving

    registered = read_json(MODEL_INFO).get("registered")
    if not registered:
        raise BadRequest("the last train_model run registered nothing: set register: true and run dvc repro")
    backends = open_backends(params)
    answer = Lifecycle(backends, Serving(backends)).deploy(int(registered["experiment_id"]))
    log.info("model %s now serves experiment %s (previously %s)", answer["model"], answer["deployed"],
             answer["previous"])
    return answer


def _label_key(value: Any) -> str:
    """A target value as the model's class key (integral floats read back from Parquet as ints)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- registration --------------------------------------------------------------------------------


class Registration:
    """The pipeline's training run as an experiment of the service.

    The experiment exists (queued, then running) before training, so its id is in the ONNX
    metadata; afterwards the model goes to ``model_key`` and the TensorBoard events under
    ``artifact_prefix + "tensorboard/"`` in the models store, and the experiment succeeds with
    its metrics, after which ``/metrics/{id}`` and ``/deploy/{id}`` work on it. On any failure
    the files are removed and the experiment fails with the error.
    """

    def __init__(self, backends: Any, experiment: Any) -> None:
        self.backends = backends
        self.experiment = experiment

    @classmethod
    def start(cls, params: Params, info: dict[str, Any]) -> Registration:
        from common.catalog import PRIMARY_METRIC
        from common.domain import Task
        from common.errors import BadRequest
        from common.jobstate import JobState

        backends = open_backends(params)
        store = backends.experiments
        record = store.get_model(params.model)
        if record.task.value != info["task"] or record.target != info["target"]:
            raise BadRequest(
                f"the extracted data does not match model {record.name!r} in the store: run extract_data"
            )
        # Recorded already claimed (running, attempt 1, leased), as the service's train_now
        # does: no job worker can take it between two writes, and its heartbeat keeps it ours.
        running = store.create_experiment(
            {
                "model": record.name,
                "model_class": params.model_class,
                "hyperparameters": params.hyperparameters,
                "tune": params.tune,
                "deploy": "never",
                "primary_metric": PRIMARY_METRIC[Task(info["task"])],
                "dataset_version": info["dataset_version"],
                "rows": info["rows"],
                **JobState(store, backends.settings).claimed(),
            }
        )
        log.info("registered as experiment %d of model %s", running.id, record.name)
        return cls(backends, running)

    def heartbeat(self) -> Any:
        """The lease renewal of the run while it trains (a context manager)."""
        from common.jobstate import JobState

        return JobState(self.backends.experiments, self.backends.settings).heartbeat(self.experiment)

    @property
    def experiment_id(self) -> int:
        return int(self.experiment.id)

    def finish(self, trained: Any, events_dir: Path) -> dict[str, Any]:
        """Store the model and its TensorBoard files and mark the experiment succeeded, exactly
        as an experiment trained through the API is recorded."""
        from common.lifecycle import Lifecycle
        from common.serving import Serving

        lifecycle = Lifecycle(self.backends, Serving(self.backends))
        self.experiment = lifecycle.record_trained(self.experiment, trained, events_dir)
        experiment_id = self.experiment_id
        return {
            "experiment_id": experiment_id,
            "model_key": self.experiment.artifact_key,
            "artifacts": [a["key"] for a in lifecycle.artifacts(self.experiment)
                          if a["name"] != "model.onnx"],
            "metrics_url": f"/metrics/{experiment_id}",
            "deploy_url": f"/deploy/{experiment_id}",
        }

    def fail(self, exc: BaseException) -> None:
        from common.errors import ServiceError
        from common.jobstate import JobState

        detail = exc.detail if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
        try:
            JobState(self.backends.experiments, self.backends.settings).fail(self.experiment, detail)
        except Exception:
            log.exception("could not mark experiment %d failed", self.experiment_id)


# -- files and command line ----------------------------------------------------------------------


def write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    from common.errors import NotFound

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"{path.relative_to(HERE)} does not exist: run the stage that writes it") from None


STAGES: dict[str, Callable[[Params], dict[str, Any]]] = {
    "extract_data": extract_data,
    "train_model": train_model,
    "inference_model": inference_model,
    "deploy": deploy,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stages", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--params", type=Path, default=PARAMS, help="parameters file (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    from common.errors import ServiceError

    try:
        STAGES[args.stage](load_params(args.params))
    except ServiceError as exc:
        print(f"{args.stage} failed: {exc.detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
