"""The model life cycle: create, add and remove data, retrain (queued), train (worker), deploy,
evaluate, delete.

Training libraries are imported inside the methods that need them, so the handlers that only
record or queue work stay light.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast, get_args

from common.backends import Backends
from common.catalog import (
    CATALOG,
    HIGHER_IS_BETTER,
    MIN_TRAINING_ROWS,
    PRIMARY_METRIC,
    TASK_METRICS,
    model_class,
)
from common.domain import (
    DatasetPart,
    Experiment,
    ExperimentStatus,
    Feature,
    ImageSpec,
    ModelRecord,
    PartSource,
    Task,
    utcnow,
)
from common.errors import (
    BadRequest,
    Conflict,
    NotFound,
    SchemaConflict,
    ServiceError,
    ServiceUnavailable,
)
from common.jobs import Job, JobQueue
from common.jobstate import JobState
from common.names import (
    artifact_prefix,
    check_text,
    experiment_files_prefix,
    is_experiment_file,
    model_key,
    model_name,
    recorded_artifact_prefix,
)
from common.serving import Serving

if TYPE_CHECKING:
    from common.rollouts import Rollouts
    from common.storage.candidates import Candidate
    from common.tuning import Tuning

log = logging.getLogger("mlfn.lifecycle")

# Lifecycle.deploy(expected_previous=ANY): whatever is deployed now may be replaced.
ANY: Any = object()
DEPLOY_RETRIES = 10
PART_SOURCES = get_args(PartSource)
MAX_FILENAME = 255  # characters of an upload's file name kept with its part


def image_spec(body: dict[str, Any]) -> ImageSpec:
    """``image_size`` (an int or [width, height]) and ``color`` ("grayscale" or "rgb")."""
    size = body.get("image_size", 28)
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 512 for v in size)):
        raise BadRequest("image_size must be an integer or [width, height], each between 1 and 512")
    color = body.get("color", "grayscale")
    if color not in ("grayscale", "rgb"):
        raise BadRequest("color must be 'grayscale' or 'rgb'")
    return ImageSpec(width=size[0], height=size[1], mode="L" if color == "grayscale" else "RGB")


class Lifecycle:
    def __init__(self, backends: Backends, serving: Serving, jobs: JobQueue | None = None) -> None:
        self.backends = backends
        self.store = backends.experiments
        self.serving = serving
        self.jobs = jobs
        self.job_state = JobState(self.store, backends.settings)
        self._rollouts: Rollouts | None = None
        self._tuning: Tuning | None = None
        serving.guard = self._check_guard

    def _check_guard(self, model: str) -> Any:
        return self.rollouts().check_guard(model)

    def rollouts(self) -> Rollouts:
        """Canary, shadow, feedback and live metrics of this life cycle's models."""
        if self._rollouts is None:
            from common.rollouts import Rollouts

            self._rollouts = Rollouts(self)
        return self._rollouts

    def tuning(self) -> Tuning:
        """The candidate jobs of tuned experiments (``common/tuning.py``)."""
        if self._tuning is None:
            from common.tuning import Tuning

            self._tuning = Tuning(self.store, self.job_state, self._submit)
        return self._tuning

    def _submit(self, experiment_id: int, candidate: int | None = None) -> None:
        if self.jobs is None:  # a worker elsewhere polls the store (or nothing runs)
            return
        if candidate is None:
            self.jobs.submit(experiment_id)
        else:
            self.jobs.submit(experiment_id, candidate)

    def close(self) -> None:
        """Release what this object holds (nothing today: the job worker belongs to the queue,
        which ``common.context.reset`` closes)."""

    # -- models ----------------------------------------------------------------------------
    def create_model(self, body: Any) -> ModelRecord:
        if not isinstance(body, dict):
            raise BadRequest('body must be {"name", "task", "target"}')
        unknown = sorted(set(body) - {"name", "task", "target", "input", "image_size", "color"})
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}")
        kind = body.get("input", "tabular")
        if kind not in ("tabular", "image"):
            raise BadRequest(f"input must be 'tabular' or 'image', not {kind!r}")
        if kind == "image":
            body = {"target": "label", **body}
        for field in ("name", "task", "target"):
            if field not in body:
                raise BadRequest(f"missing field {field!r}")
        name = model_name(body["name"])
        if body["task"] not in ("classification", "regression"):
            raise BadRequest(f"task must be 'classification' or 'regression', not {body['task']!r}")
        target = body["target"]
        if not isinstance(target, str) or not target or len(target) > 256:
            raise BadRequest("target must be a non-empty column name")
        check_text("field 'target'", target, "a column name")  # the rule add_data applies
        image = image_spec(body) if kind == "image" else None
        if kind == "tabular" and ("image_size" in body or "color" in body):
            raise BadRequest("image_size and color apply to models with \"input\": \"image\"")
        record = ModelRecord(name=name, task=Task(body["task"]), target=target, input=kind, image=image)
        self.store.create_model(record)
        return record

    def add_images(self, name: str, archive: bytes, source: PartSource = "zip",
                   filename: str | None = None) -> dict[str, Any]:
        """Append a labelled zip of images to an image model's dataset; all or nothing."""
        from common.archives import read_images
        from common.images import preprocess
        from common.training import datasets

        model = self.store.get_model(model_name(name))
        if model.image is None:
            raise BadRequest(f"model {model.name!r} is tabular: upload CSV or JSON records, not a zip")
        spec = model.image
        # Each entry is decoded as it is read, so only its pixels stay in memory.
        images = read_images(archive, self.backends.settings.archive_limits, labelled=True,
                             decode=lambda name, blob: preprocess(blob, spec, name=name))
        frame = datasets.image_frame(
            [i.data for i in images],
            [i.label for i in images],
            [i.name for i in images],
            model,
        )
        return self._store_part(model, datasets.part_bytes(frame), len(frame), None, source,
                                filename)

    def add_frame_or_archive(self, name: str, kind: str, data: bytes, source: PartSource | None = None,
                             filename: str | None = None) -> dict[str, Any]:
        """An add_data upload: a zip for image models, CSV or JSON records for tabular ones.
        ``source`` (``kind`` by default; ``multipart`` for a multipart file, with its
        ``filename``) is recorded with the part."""
        from common.payloads import records_of
        from common.training.datasets import frame_from_csv, frame_from_records

        if kind not in ("csv", "json", "zip"):
            raise BadRequest(f"unknown upload format {kind!r}")
        source = source or cast(PartSource, kind)
        if kind == "zip":
            return self.add_images(name, data, source, filename)
        model = self.store.get_model(model_name(name))
        if model.image is not None:
            raise BadRequest(
                f"model {model.name!r} takes images: upload a zip archive (application/zip or "
                "multipart field 'file')"
            )
        frame = frame_from_csv(data) if kind == "csv" else frame_from_records(records_of(data))
        return self.add_frame(name, frame, source, filename)

    def _store_part(self, model: ModelRecord, data: bytes, rows: int,
                    features: list[Feature] | None = None, source: PartSource = "unknown",
                    filename: str | None = None) -> dict[str, Any]:
        """Store the part's bytes, then register it (fixing ``features`` as the schema of a
        first upload in the same write); on any failure the bytes are removed again."""
        from common.training import datasets

        if source not in PART_SOURCES:
            raise ValueError(f"a part's source is one of {PART_SOURCES}, not {source!r}")
        filename = None if filename is None else filename[:MAX_FILENAME]
        key = datasets.new_part_key(model.name)
        self.backends.datasets.put(key, data)
        try:
            registered = self.store.add_dataset_part(model.name, key, rows, features, source,
                                                     filename)
        except ServiceError:  # refused (unknown model, schema conflict): nothing registered
            self.backends.datasets.delete(key)
            raise
        except BaseException:
            # An outage can strike after the store applied the write: remove the bytes only if
            # the part is known not to be registered (an orphan file is harmless, a registered
            # part without its file would break every later training).
            with contextlib.suppress(Exception):
                if all(p.key != key for p in self.store.all_dataset_parts(model.name)):
                    self.backends.datasets.delete(key)
            raise
        total = sum(p.rows for p in self.store.dataset_parts(model.name, registered.version))
        return {
            "model": model.name,
            "rows_added": rows,
            "rows_total": total,
            "dataset_version": registered.version,
        }

    def model_classes(self) -> list[dict[str, Any]]:
        return [c.describe() for c in CATALOG.values()]

    def delete_model(self, name: str) -> None:
        """Delete a model with its data, experiments, deployments and files; Conflict (nothing
        deleted) while one of its jobs is queued or running.

        The rows go first, then the files, so a crash in between leaves only files without
        rows (``common/gc.py`` removes them), never a row without its file. The files are
        listed before the rows go: once they have, the name may be created again, and that new
        model's files must not be touched. A file written in between (an upload racing the
        delete, refused once the model is gone) is an orphan for the collector too.
        """
        from common.batch_jobs import BatchJobs
        from common.ingestion import Ingestions
        from common.uploads import Uploads

        name = model_name(name)
        self.store.get_model(name)  # a clear 404 before anything else is looked at
        batch_jobs, ingestions = BatchJobs(self.backends, None), Ingestions(self.backends, None)
        if running := ingestions.unfinished(name):
            raise Conflict(f"model {name!r} has an unfinished ingestion, {running[0]} (GET "
                           f"/ingestions/{running[0]}); delete the model once it has ended")
        if running := batch_jobs.unfinished(name):
            raise Conflict(f"model {name!r} has an unfinished batch job, {running[0]} (GET "
                           f"/batch_jobs/{running[0]}); delete the model once it has ended, or "
                           f"cancel it (POST /batch_jobs/{running[0]}/cancel)")
        stores = (self.backends.models, self.backends.datasets)
        files = [(store, key) for store in stores for key in store.list(f"{name}/")]
        tuned = [e.id for e in self.store.list_experiments(name) if e.grid_size]
        self.store.delete_model(name)
        for experiment_id in tuned:  # a tuned experiment's candidates (an orphan is harmless)
            with contextlib.suppress(Exception):
                self.tuning().candidates.delete(experiment_id)
        self.rollouts().store.delete(name)
        try:  # its monitoring: a model created later under the name starts afresh
            self.serving.drift_log().delete(name)
            if hasattr(self.store, "delete_inference"):
                from common.storage.feedback_sql import SqlFeedback

                self.serving.monitor.flush()  # calls served just before: logged, then deleted
                self.store.delete_inference(name)
                SqlFeedback(self.store).delete(name)
        except Exception as exc:  # statistics only: the model itself is gone already
            log.warning("could not delete the monitoring of model %r: %s", name, exc)
        self.serving.forget_pointer(name)
        for store, key in files:
            store.delete(key)
        # Its uploads, ingestions and batch jobs (results included): a model created later
        # under the name starts empty. Records first, then objects, as above. What a failure
        # here leaves (or a request racing the delete adds) belongs to the deleted model: they
        # keep its creation time (uploads.incarnation), so a model created later under the
        # name neither lists nor uses them; they expire with their records.
        for what, remove in (("uploads", Uploads(self.backends).remove_of_model),
                             ("ingestions", ingestions.remove_of_model),
                             ("batch jobs", batch_jobs.remove_of_model)):
            try:
                remove(name)
            except Exception as exc:
                log.warning("model %r: could not remove its %s: %s", name, what, exc)

    # -- data ------------------------------------------------------------------------------
    def add_frame(self, name: str, frame: Any, source: PartSource | None = None,
                  filename: str | None = None) -> dict[str, Any]:
        """Append ``frame`` (a pandas DataFrame) as one immutable part; all or nothing.
        ``source``: how it was uploaded (by default what parsed it: ``frame.attrs["source"]``,
        csv or json, else unknown)."""
        from common.training import datasets

        origin: PartSource = source or frame.attrs.get("source", "unknown")
        model = self.store.get_model(model_name(name))
        if model.image is not None:
            raise BadRequest(f"model {model.name!r} takes images: upload a zip archive")
        features = datasets.schema_for(frame, model)
        first = model.features is None  # this upload proposes the schema, fixed with its part
        for _ in range(3):
            part = datasets.conform(frame, model, features)
            data = datasets.part_bytes(part)
            try:
                return self._store_part(model, data, len(part), features if first else None,
                                        origin, filename)
            except SchemaConflict as exc:  # another first upload fixed a different schema
                features, first = exc.stored, False
        raise Conflict(f"model {model.name!r}: the feature schema is being set concurrently; retry")

    def datasets(self, name: str) -> dict[str, Any]:
        """The model's dataset versions and their parts: every part with where it came from
        and, if it was removed, the version that removed it; every version with the parts it
        contains, its rows and the experiments trained on it (both in version order)."""
        model = self.store.get_model(model_name(name))
        current = model.dataset_version
        # Read after the model: what was added or removed since belongs to a later version.
        parts = [p.as_of(current) for p in self.store.all_dataset_parts(model.name)
                 if p.version <= current]
        trained: dict[int, list[int]] = {}
        for exp in self.store.list_experiments(model.name):
            trained.setdefault(exp.dataset_version, []).append(exp.id)
        docs = {p.version: p.model_dump(mode="json", exclude={"model", "key"}) for p in parts}
        added = {p.version: p for p in parts}
        removed = {p.removed_in: p for p in parts if p.removed_in is not None}
        members: list[DatasetPart] = []
        versions = []
        for version in range(1, current + 1):
            change: dict[str, Any] = {"change": None, "part": None, "created_at": None}
            if version in added:
                members.append(added[version])
                change = {"change": "added", "part": version,
                          "created_at": docs[version]["created_at"]}
            elif version in removed:
                gone = removed[version].version
                members = [p for p in members if p.version != gone]
                change = {"change": "removed", "part": gone,
                          "created_at": docs[gone]["removed_at"]}
            versions.append({"version": version, **change, "parts": [p.version for p in members],
                             "rows": sum(p.rows for p in members),
                             "experiments": sorted(trained.get(version, []))})
        return {
            "model": model.name,
            "dataset_version": current,
            "rows_total": sum(p.rows for p in members),
            "parts": list(docs.values()),
            "versions": versions,
        }

    def remove_part(self, name: str, version: int) -> dict[str, Any]:
        """Remove the part added in dataset version ``version``: a new dataset version without
        it. Earlier versions keep it, and its file stays, so the experiments trained on them
        stay reproducible. NotFound for an unknown part, Conflict if it was removed already."""
        model = self.store.get_model(model_name(name))
        removed = self.store.remove_dataset_part(model.name, version)
        assert removed.removed_in is not None
        parts = self.store.dataset_parts(model.name, removed.removed_in)
        return {
            "model": model.name,
            "removed": version,
            "dataset_version": removed.removed_in,
            "rows_total": sum(p.rows for p in parts),
            "parts": [p.version for p in parts],
        }

    # -- experiments -----------------------------------------------------------------------
    def retrain(self, name: str, body: Any) -> Experiment:
        """Validate and record the experiment as ``queued``, then hand it to the job queue."""
        exp = self.new_experiment(name, body)
        if self.jobs is not None or exp.grid_size:
            try:
                if exp.grid_size:  # one job per grid candidate; they queue the refit
                    self.tuning().start(exp, self.store.get_model(exp.model).task)
                else:
                    self._submit(exp.id)
            except Exception as exc:
                detail = f"could not queue the job: {type(exc).__name__}: {exc}"
                self.store.update_experiment(
                    exp.id, {"status": ExperimentStatus.failed, "finished_at": utcnow(), "error": detail}
                )
                raise ServiceUnavailable(f"experiment {exp.id} {detail}; retry the request") from exc
        return exp

    def train_now(self, name: str, body: Any) -> Experiment:
        """Record and train an experiment in this process (demo models, benchmarks, scripts).

        It is recorded already claimed (``running``, attempt 1, leased and then heartbeating
        like any job), so no job worker of this or another process can take it in between. A
        tuned one searches its grid in this process, one candidate after another."""
        exp = self.new_experiment(name, body, claimed=True)
        return self._run_claimed(exp)

    def new_experiment(self, name: str, body: Any, claimed: bool = False) -> Experiment:
        """A validated retrain request recorded as a ``queued`` experiment on the current data
        (``running`` on its first attempt with ``claimed``)."""
        from common.tuning import grid_candidates

        model = self.store.get_model(model_name(name))
        if not isinstance(body, dict):
            raise BadRequest('body must be {"model_class", "hyperparameters", "tune", "deploy"}')
        allowed = {"model_class", "hyperparameters", "tune", "deploy", "primary_metric"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}; allowed: {sorted(allowed)}")
        if "model_class" not in body:
            raise BadRequest(f"missing field 'model_class'; choose one of {', '.join(CATALOG)}")
        cls = model_class(body["model_class"])
        params = body.get("hyperparameters") or {}
        cls.resolve(model.task, params)  # validates before anything is queued
        tune = body.get("tune", False)
        if not isinstance(tune, bool):
            raise BadRequest("tune must be true or false")
        deploy = body.get("deploy", "never")
        if deploy not in ("never", "if_better", "always"):
            raise BadRequest("deploy must be 'never', 'if_better' or 'always'")
        metric = body.get("primary_metric") or PRIMARY_METRIC[model.task]
        if metric not in TASK_METRICS[model.task]:
            raise BadRequest(
                f"primary_metric {metric!r} is not a {model.task.value} metric; "
                f"choose one of {', '.join(TASK_METRICS[model.task])}"
            )
        # The model's counter is its current version (a removal makes one without adding a
        # part); the experiment trains on exactly the parts of that version.
        version = model.dataset_version
        parts = self.store.dataset_parts(model.name, version)
        if not parts:
            detail = "no data yet" if version == 0 else (
                f"no data in its dataset version {version} (every part was removed)")
            raise BadRequest(f"model {model.name!r} has {detail}; upload some with add_data")
        rows = sum(p.rows for p in parts)
        # Tuned on a queue: the grid's candidates are scored as jobs of their own.
        grid_size = 0 if not tune or claimed else len(
            grid_candidates(cls.name, model.task, params))
        if rows < MIN_TRAINING_ROWS:
            raise BadRequest(
                f"model {model.name!r} has {rows} rows; at least {MIN_TRAINING_ROWS} are needed to "
                "train: upload more with add_data"
            )
        return self.store.create_experiment(
            {
                "model": model.name,
                "model_class": cls.name,
                "hyperparameters": params,
                "tune": tune,
                "deploy": deploy,
                "primary_metric": metric,
                "dataset_version": version,
                "rows": rows,
                "grid_size": grid_size,
                **(self.job_state.claimed() if claimed else {}),
            }
        )

    # The job state machine (common.jobstate) runs the jobs; these are its entry points.
    def _claim(self, experiment_id: int) -> Experiment | None:
        """Move a job to ``running`` (retrying one whose worker died); None if not ours to run."""
        return self.job_state.claim(experiment_id)

    def run_experiment(self, experiment_id: int) -> Experiment:
        """Train a queued experiment to ``succeeded`` or ``failed``. Called by the workers.
        A tuned experiment's candidates are scored first: Conflict while some are not, and a
        failed one fails the experiment."""
        exp = self.store.get_experiment(experiment_id)
        if exp.grid_size and exp.status is ExperimentStatus.queued:
            state, recorded = self.tuning().progress(exp)
            if state == "failed":
                return self.tuning().fail(exp, recorded)
            if state == "pending":
                done = sum(c.status is ExperimentStatus.succeeded for c in recorded)
                raise Conflict(f"experiment {experiment_id} waits for its tuning candidates "
                               f"({done} of {exp.grid_size} scored)")
        return self.job_state.run(experiment_id, self._train)

    def run_job(self, job: Job) -> Any:
        """Run one job of the queue: an experiment's training or one tuning candidate."""
        if job.candidate is None:
            return self.run_experiment(job.experiment_id)
        return self.tuning().run(job.experiment_id, job.candidate, self._score_candidate)

    def claimable_jobs(self) -> list[Job]:
        """The jobs a worker may claim now, oldest experiment first: :meth:`claimable`'s, with
        a tuned experiment's candidates in its place until they are all scored."""
        jobs: list[Job] = []
        for exp in self.job_state.claimable_experiments():
            if exp.grid_size and exp.status is ExperimentStatus.queued:
                state, _ = self.tuning().progress(exp)
                if state == "pending":
                    task = self.store.get_model(exp.model).task
                    jobs += [Job(exp.id, i) for i in self.tuning().claimable(exp, task)]
                    continue
            jobs.append(Job(exp.id))
        return jobs

    def _run_claimed(self, exp: Experiment) -> Experiment:
        return self.job_state.run_claimed(exp, self._train)

    def _training_data(self, exp: Experiment) -> tuple[ModelRecord, Any, Any]:
        """The experiment's model, its dataset version as a frame, and its TrainingSpec."""
        from common.training.datasets import load_dataset
        from common.training.trainer import TrainingSpec

        model = self.store.get_model(exp.model)
        if model.features is None and model.image is None:
            raise BadRequest(f"model {model.name!r} has no feature schema yet")
        frame = load_dataset(self.backends.datasets, self.store, model, exp.dataset_version)
        spec = TrainingSpec(
            model=model.name,
            experiment_id=exp.id,
            model_class=exp.model_class,
            task=model.task,
            target=model.target,
            features=model.features or [],
            image=model.image,
            hyperparameters=exp.hyperparameters,
            tune=exp.tune,
            extra_metadata={"dataset_version": exp.dataset_version, "tune": exp.tune,
                            "primary_metric": exp.primary_metric},
        )
        return model, frame, spec

    def _score_candidate(self, exp: Experiment, candidate: Candidate) -> dict[str, Any]:
        """A tuning candidate's job: its cross-validated score on the training split."""
        from common.training.trainer import score_candidate

        _, frame, spec = self._training_data(exp)
        return score_candidate(frame, spec, candidate.params)

    def _train(self, exp: Experiment) -> Experiment:
        from common.training.trainer import train

        model, frame, spec = self._training_data(exp)
        # A tuned experiment's candidates were scored by jobs of their own: refit the best.
        grid_scores = self.tuning().results(exp) if exp.grid_size else None
        trained = train(frame, spec, grid_scores)
        done = self.record_trained(exp, trained)
        try:
            kept_back = self._apply_policy(done, model, trained)
        except Exception as exc:  # the model is trained and stored; only the promotion failed
            detail = exc.detail if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
            log.warning("experiment %s: deploy policy %r failed: %s", exp.id, exp.deploy, detail)
            kept_back = detail
        if kept_back is not None:  # why an if_better (or failed) promotion did not happen
            done = self.store.update_experiment(exp.id, {"error": f"not deployed: {kept_back}"})
        return done

    def record_trained(self, exp: Experiment, trained: Any, tensorboard_dir: Any = None) -> Experiment:
        """Store a trained model and its TensorBoard logs, then mark the experiment succeeded.

        ``tensorboard_dir`` holds event files already written for this run (the DVC pipeline keeps
        them as outputs); otherwise they are written here. The files go under keys of this
        attempt's own, so an attempt whose job was taken over cannot overwrite a later attempt's;
        on failure (also when its outcome is refused) this attempt's files are removed.
        """
        import tempfile
        from pathlib import Path

        from common.training.tensorboard import write_events

        key = model_key(exp.model, exp.id, exp.attempts)
        written: list[str] = []
        self.job_state.check(exp)  # no use writing files if a later attempt holds the job
        try:
            written.append(key)  # before the write: a put that fails midway may have landed
            self.backends.models.put(key, trained.onnx_bytes)
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tensorboard_dir or tmp)
                files = (sorted(p for p in root.rglob("*") if p.is_file()) if tensorboard_dir
                         else write_events(trained, root, f"{exp.model}-{exp.id}"))
                prefix = artifact_prefix(exp.model, exp.id, exp.attempts) + "tensorboard/"
                for path in files:
                    name = prefix + path.relative_to(root).as_posix()
                    written.append(name)
                    self.backends.models.put(name, path.read_bytes())
            return self.job_state.succeed(exp, {
                "metrics": trained.metrics,
                "hyperparameters": trained.hyperparameters,
                "artifact_key": key,
                "rows": trained.rows,
            })
        except BaseException:
            if not self._recorded(exp, key):
                for name in written:
                    with contextlib.suppress(Exception):  # a leftover is harmless; report the cause
                        self.backends.models.delete(name)
            raise

    def _recorded(self, exp: Experiment, key: str) -> bool:
        """Whether ``key`` is the recorded model of ``exp`` (a success write that failed after
        the store applied it), or that cannot be told now: its files are then kept."""
        try:
            current = self.store.get_experiment(exp.id)
        except NotFound:
            return False
        except Exception:
            return True
        return current.status is ExperimentStatus.succeeded and current.artifact_key == key

    def _holds_attempt(self, exp: Experiment) -> bool:
        return self.job_state.holds(exp)

    def _check_attempt(self, exp: Experiment) -> None:
        self.job_state.check(exp)

    def artifacts(self, exp: Experiment) -> list[dict[str, Any]]:
        """The experiment's files: the ONNX model of the attempt that succeeded and that
        attempt's other artefacts (TensorBoard logs)."""
        out = []
        if exp.artifact_key:
            out.append({"name": "model.onnx", "key": exp.artifact_key})
        prefix = recorded_artifact_prefix(exp.model, exp.id, exp.artifact_key)
        if prefix is not None:
            out.extend({"name": key[len(prefix):], "key": key}
                       for key in self.backends.models.list(prefix))
        for item in out:
            item["url"] = f"/artifacts/{exp.id}/{item['name']}"
        return out

    def artifact(self, experiment_id: int, name: str) -> bytes:
        exp = self.store.get_experiment(experiment_id)
        for item in self.artifacts(exp):
            if item["name"] == name:
                return self.backends.models.get(item["key"])
        raise NotFound(f"experiment {experiment_id} has no artefact {name!r}")

    def _apply_policy(self, exp: Experiment, model: ModelRecord, trained: Any) -> str | None:
        """Deploy by the experiment's policy; returns why an ``if_better`` experiment was not
        deployed. The comparison is made against the experiment deployed when training started:
        the pointer only moves if it still names that one."""
        if exp.deploy == "never":
            return None
        champion_id = model.deployed_experiment_id
        if exp.deploy == "if_better" and champion_id is not None:
            champion = self._score_champion(model, trained)
            metric = exp.primary_metric or PRIMARY_METRIC[model.task]
            mine, theirs = trained.metrics.get(metric), champion.get(metric)
            if not champion:
                return (f"the deployed experiment {champion_id} cannot be compared: its classes "
                        "differ from this data's")
            if mine is None or theirs is None:
                return (f"{metric} could not be computed on this holdout (e.g. a class is missing "
                        f"from it), so it was not compared with experiment {champion_id}")
            better = mine > theirs if HIGHER_IS_BETTER[metric] else mine < theirs
            log.info("experiment %s %s=%s vs champion %s", exp.id, metric, mine, theirs)
            if not better:
                return (f"{metric} {mine:.4g} does not beat {theirs:.4g}, the deployed experiment "
                        f"{champion_id}'s on the same holdout")
        if exp.deploy == "if_better":
            self.deploy(exp.id, expected_previous=champion_id)
        else:
            self.deploy(exp.id)
        return None

    def _score_champion(self, model: ModelRecord, trained: Any) -> dict[str, float]:
        """The deployed model's metrics on the challenger's holdout (empty if incomparable)."""
        from common.training.scoring import score

        champion = self.serving.load(model.name, model.deployed_experiment_id)
        if model.task is Task.classification and list(champion.classes) != list(trained.classes):
            log.info("champion of %s knows classes %s, the data now has %s: not comparable",
                     model.name, champion.classes, trained.classes)
            return {}
        served = champion.predict_feeds(trained.holdout_feeds)
        return score(model.task, trained.holdout_target, served, trained.classes)

    def claimable(self) -> list[int]:
        """Jobs a worker may claim now, oldest first: ``queued`` ones, and ``running`` ones whose
        lease lapsed (their worker died: they are retried, or failed after ``MAX_ATTEMPTS``)."""
        return self.job_state.claimable()

    def recover(self) -> list[int]:
        """On start-up: start the embedded job worker, which trains what is queued and retries
        a ``running`` job once its lease lapses. Returns the ids claimable now."""
        return self.jobs.recover() if self.jobs is not None else []

    # -- deployments -----------------------------------------------------------------------
    def experiment(self, experiment_id: int, model: str | None = None) -> Experiment:
        """The experiment; with ``model``, NotFound unless it is one of that model's."""
        exp = self.store.get_experiment(experiment_id)
        if model is not None and exp.model != model_name(model):
            raise NotFound(
                f"experiment {experiment_id} belongs to model {exp.model!r}, not {model!r}"
            )
        return exp

    def deploy(self, experiment_id: int, expected_previous: Any = ANY,
               model: str | None = None) -> dict[str, Any]:
        """Point the experiment's model at it. With ``expected_previous``, only if the model's
        deployed experiment is still that one (Conflict otherwise)."""
        exp = self.experiment(experiment_id, model)
        if exp.status is not ExperimentStatus.succeeded:
            raise Conflict(
                f"experiment {experiment_id} has status {exp.status.value}; "
                "only a succeeded experiment can be deployed"
            )
        for _ in range(DEPLOY_RETRIES):
            previous = self.store.deployed_experiment(exp.model)
            if expected_previous is not ANY and previous != expected_previous:
                compared = ("nothing was deployed when it started" if expected_previous is None
                            else f"it was compared with experiment {expected_previous}")
                raise Conflict(
                    f"experiment {previous} was deployed for model {exp.model!r} while experiment "
                    f"{experiment_id} trained; {compared}"
                )
            try:
                deployment = self.store.deploy(exp.model, experiment_id, previous)
                break
            except Conflict:
                if self.store.get_experiment(experiment_id).status is not ExperimentStatus.succeeded:
                    raise
                continue  # another deploy won the race: re-read the pointer and go again
        else:
            raise Conflict(f"model {exp.model!r} is being deployed concurrently; retry")
        self.serving.forget_pointer(exp.model)
        self.rollouts().promoted(exp.model, experiment_id)
        return {"model": exp.model, "deployed": experiment_id, "previous": deployment.previous}

    def deployments(self, name: str) -> list[dict[str, Any]]:
        """The deploy history, newest first: every deploy (``"event": "deploy"``) and the
        canary and shadow events between them (started, ended, with the reason: promoted,
        replaced, ended by request, auto-rollback: ...)."""
        name = model_name(name)
        self.store.get_model(name)
        deploys = [(d.deployed_at, {"event": "deploy", **d.model_dump(mode="json")})
                   for d in self.store.list_deployments(name)]
        events = [(datetime.fromisoformat(e["at"]), e) for e in self.rollouts().store.get(name).history
                  if "at" in e]
        merged = sorted(deploys + events, key=lambda pair: pair[0], reverse=True)  # stable
        return [row for _, row in merged]

    def experiments(self, name: str, status: str | None) -> list[dict[str, Any]]:
        self.store.get_model(model_name(name))
        wanted = None
        if status:
            try:
                wanted = ExperimentStatus(status)
            except ValueError:
                raise BadRequest(
                    f"status must be one of {', '.join(s.value for s in ExperimentStatus)}"
                ) from None
        return [self.describe(e) for e in self.store.list_experiments(name, wanted)]

    def describe(self, exp: Experiment) -> dict[str, Any]:
        doc = exp.model_dump(mode="json")
        doc["experiment_id"] = doc.pop("id")
        if exp.grid_size:  # every grid candidate with its cross-validated score
            doc["candidates"] = self.tuning().describe(exp)
        return doc

    def metrics(self, experiment_id: int, model: str | None = None) -> dict[str, Any]:
        exp = self.experiment(experiment_id, model)
        return {**self.describe(exp), "artifacts": self.artifacts(exp)}

    def delete_experiment(self, experiment_id: int, model: str | None = None) -> None:
        exp = self.experiment(experiment_id, model)
        if exp.status in (ExperimentStatus.queued, ExperimentStatus.running):
            raise Conflict(f"experiment {experiment_id} is {exp.status.value}; wait until it ends")
        role = self.rollouts().involved(exp.model, experiment_id)
        if role is not None:
            raise Conflict(f"experiment {experiment_id} is model {exp.model!r}'s {role}; end it "
                           f"first (DELETE /{role}?model={exp.model})")
        from common.batch_jobs import BatchJobs

        if scoring := BatchJobs(self.backends, None).unfinished(exp.model, experiment_id):
            raise Conflict(f"experiment {experiment_id} scores batch job {scoring[0]}, which has "
                           f"not ended (GET /batch_jobs/{scoring[0]}); delete the experiment once "
                           f"it has, or cancel it (POST /batch_jobs/{scoring[0]}/cancel)")
        self.store.delete_experiment(experiment_id)
        if exp.grid_size:
            with contextlib.suppress(Exception):  # an orphan candidate is harmless
                self.tuning().candidates.delete(experiment_id)
        # Every attempt's files (a stale attempt's may have landed after it was taken over).
        keys = {item["key"] for item in self.artifacts(exp)}
        keys.update(k for k in self.backends.models.list(experiment_files_prefix(exp.model, exp.id))
                    if is_experiment_file(k, exp.model, exp.id))
        for key in sorted(keys):
            self.backends.models.delete(key)
