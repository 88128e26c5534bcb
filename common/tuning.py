"""Parallel tuning: the grid candidates of a tuned experiment are jobs of their own.

``PUT /retrain`` with ``tune: true`` records the experiment ``queued`` with its ``grid_size``
and one candidate record per grid point (``common/storage/candidates.py``), and queues one job
per candidate. A candidate job computes the cross-validated score of that one candidate on the
experiment's training split and records it on the candidate's own record. The experiment's own
job — the refit of the best candidate on the training split and its export through the parity
gate — becomes claimable only once every candidate is scored: the worker that records the last
score queues it, and the embedded workers' poll finds it too. The experiment stays ``queued``
until that job claims it; its candidates show the progress.

Crash safety, as for trainings (``common/jobstate.py``): a candidate job is claimed on its next
attempt with a compare-and-set, holds a lease renewed by a heartbeat while it scores, and every
write of an attempt is fenced by its attempt number. A candidate whose worker died is claimable
again once its lease lapsed (the embedded poll, or SQS's redelivery of its message), and fails
after ``MAX_ATTEMPTS`` attempts. A candidate that raises fails, and with it the experiment,
naming the candidate. The final job runs once: its claim is the experiment's, a compare-and-set
on its attempt. A worker that records the last score and dies before queueing the final job
leaves its message to be redelivered: the redelivery finds the candidate scored and queues the
final job then.

This module only decides; it imports no training library (the retrain handler plans the grid).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from common.catalog import model_class
from common.domain import Experiment, ExperimentStatus, Task, utcnow
from common.errors import Conflict, NotFound, ServiceError
from common.jobstate import MAX_ATTEMPTS, Heartbeat, JobState
from common.storage.candidates import Candidate, StaleCandidate, candidate_store

if TYPE_CHECKING:
    from common.storage.ports import ExperimentStore

log = logging.getLogger("mlfn.tuning")

Progress = Literal["pending", "ready", "failed"]
# submit(experiment_id, candidate index or None for the experiment's own job)
Submit = Callable[[int, "int | None"], None]


def grid_candidates(model_class_name: str, task: Task | str, base: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid points of a class for a task, in grid order: the class's declared grid without
    the hyperparameters the request sets (``base``, kept as given). A request that sets all of
    them leaves one candidate, the empty one."""
    grid = {name: values for name, values in model_class(model_class_name).grid_for(Task(task)).items()
            if name not in base}
    names = list(grid)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(grid[n] for n in names))]


class Tuning:
    """The candidate jobs of tuned experiments: plan, claim, lease, record, and when the
    experiment's own job may run."""

    def __init__(self, store: ExperimentStore, job_state: JobState, submit: Submit | None) -> None:
        self.store = store
        self.job_state = job_state
        self.submit = submit
        self.candidates = candidate_store(store)

    # -- plan ------------------------------------------------------------------------------
    def plan(self, exp: Experiment, task: Task) -> list[Candidate]:
        return [Candidate(experiment_id=exp.id, index=i, params=values)
                for i, values in enumerate(grid_candidates(exp.model_class, task, exp.hyperparameters))]

    def start(self, exp: Experiment, task: Task) -> list[Candidate]:
        """Record the experiment's candidates (those not recorded yet; the plan is the same
        every time) and queue a job for each one that is still queued."""
        self.candidates.create(self.plan(exp, task))
        recorded = self.candidates.list(exp.id)
        if self.submit is not None:
            for c in recorded:
                if c.status is ExperimentStatus.queued:
                    self.submit(exp.id, c.index)
        return recorded

    def progress(self, exp: Experiment) -> tuple[Progress, list[Candidate]]:
        """``failed`` once a candidate failed, ``ready`` once all ``grid_size`` are scored."""
        recorded = self.candidates.list(exp.id)
        if any(c.status is ExperimentStatus.failed for c in recorded):
            return "failed", recorded
        done = sum(c.status is ExperimentStatus.succeeded for c in recorded)
        return ("ready" if done >= exp.grid_size else "pending"), recorded

    def claimable(self, exp: Experiment, task: Task) -> list[int]:
        """The candidates of a queued experiment a worker may claim now (queued ones, and
        running ones whose lease lapsed), in grid order. Candidates missing from the store (the
        process that recorded the experiment stopped before it recorded them) are recorded
        now."""
        recorded = self.candidates.list(exp.id)
        if len(recorded) < exp.grid_size:
            self.candidates.create(self.plan(exp, task))
            recorded = self.candidates.list(exp.id)
        now = utcnow()
        return [c.index for c in recorded if c.status is ExperimentStatus.queued
                or (c.status is ExperimentStatus.running and self._lapsed(c, now))]

    # -- claim, run, record ----------------------------------------------------------------
    def _lapsed(self, c: Candidate, now: Any = None) -> bool:
        return c.lease_until is None or (now or utcnow()) >= c.lease_until

    def _get(self, experiment_id: int, index: int) -> Candidate | None:
        return next((c for c in self.candidates.list(experiment_id) if c.index == index), None)

    def claim(self, exp: Experiment, index: int) -> Candidate | None:
        """Move a candidate to ``running`` on its next attempt; None if it is not to be run
        (scored, failed, its experiment no longer queued, or failed here after
        ``MAX_ATTEMPTS``). Conflict if another worker holds it or claims it first."""
        if exp.status is not ExperimentStatus.queued:
            return None  # failed by another candidate, refitting, or finished
        cand = self._get(exp.id, index)
        if cand is None:
            return None
        now = utcnow()
        if cand.status is ExperimentStatus.running:
            if not self._lapsed(cand, now):
                raise Conflict(f"candidate {index} of experiment {exp.id} is scored elsewhere")
            log.warning("experiment %s candidate %s: the lease of attempt %s ran out", exp.id,
                        index, cand.attempts)
            if cand.attempts >= MAX_ATTEMPTS:
                self._write(cand, {"status": ExperimentStatus.failed, "finished_at": now,
                                   "lease_until": None,
                                   "error": f"the worker stopped {cand.attempts} times before "
                                            "scoring it"})
                return None
        elif cand.status is not ExperimentStatus.queued:
            return None  # a duplicate delivery
        return self._write(cand, {"status": ExperimentStatus.running, "attempts": cand.attempts + 1,
                                  "started_at": now, "lease_until": now + self.job_state.lease,
                                  "error": None})

    def _write(self, read: Candidate, fields: dict[str, Any]) -> Candidate:
        """Write on the revision read; Conflict if anything wrote the candidate since."""
        try:
            return self.candidates.put(read.model_copy(update=fields))
        except StaleCandidate:
            raise Conflict(f"candidate {read.index} of experiment {read.experiment_id} was "
                           "claimed by another worker") from None

    def _fenced(self, held: Candidate, fields: dict[str, Any]) -> Candidate:
        """Write ``fields`` if ``held``'s attempt still holds the candidate (else Conflict),
        retrying the compare-and-set a heartbeat raced."""
        for _ in range(20):
            current = self._get(held.experiment_id, held.index)
            if (current is None or current.status is not ExperimentStatus.running
                    or current.attempts != held.attempts):
                raise Conflict(f"candidate {held.index} of experiment {held.experiment_id}: "
                               f"attempt {held.attempts} no longer holds it")
            try:
                return self.candidates.put(current.model_copy(update=fields))
            except StaleCandidate:
                continue
        raise Conflict(f"candidate {held.index} of experiment {held.experiment_id} is being "
                       "written concurrently")

    def _heartbeat(self, held: Candidate) -> Heartbeat:
        def renew() -> bool:
            try:
                self._fenced(held, {"lease_until": utcnow() + self.job_state.lease})
            except Conflict as exc:
                log.info("%s: heartbeat stops", exc)
                return False
            return True

        return Heartbeat(self.job_state.heartbeat_seconds, renew,
                         f"mlfn-lease-{held.experiment_id}-c{held.index}-a{held.attempts}")

    def run(self, experiment_id: int, index: int,
            score: Callable[[Experiment, Candidate], dict[str, Any]]) -> Candidate | None:
        """Claim candidate ``index`` and record ``score(exp, candidate)`` (a dict with
        ``scoring``, ``mean`` and ``std``) on it while a heartbeat renews its lease; an
        exception fails the candidate and the experiment. Then, whoever ran it, queue the
        experiment's own job if every candidate is scored. Returns the candidate as stored."""
        try:
            exp = self.store.get_experiment(experiment_id)
        except NotFound:
            return None  # deleted meanwhile: nothing to score
        held = self.claim(exp, index)
        if held is not None:
            with self._heartbeat(held):
                try:
                    result = score(exp, held)
                    fields = {"status": ExperimentStatus.succeeded, "scoring": result["scoring"],
                              "mean": float(result["mean"]), "std": float(result["std"])}
                except Exception as exc:
                    detail = exc.detail if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
                    log.warning("experiment %s candidate %s failed: %s", experiment_id, index, detail)
                    fields = {"status": ExperimentStatus.failed, "error": detail}
                try:
                    self._fenced(held, {**fields, "finished_at": utcnow(), "lease_until": None})
                except Conflict as exc:  # a later attempt holds it: its outcome stands
                    log.warning("%s: its outcome is not recorded", exc)
        self.after(experiment_id)
        return self._get(experiment_id, index)

    def after(self, experiment_id: int) -> None:
        """After a candidate ended: fail the experiment if a candidate failed, or queue the
        experiment's own job once all are scored (queueing it twice is harmless: its claim
        is a compare-and-set)."""
        try:
            exp = self.store.get_experiment(experiment_id)
        except NotFound:
            return
        if exp.status is not ExperimentStatus.queued:
            return
        state, recorded = self.progress(exp)
        if state == "failed":
            self.fail(exp, recorded)
        elif state == "ready" and self.submit is not None:
            self.submit(exp.id, None)

    def fail(self, exp: Experiment, recorded: list[Candidate]) -> Experiment:
        """Fail a queued experiment whose candidate failed, naming the first that did."""
        first = next(c for c in recorded if c.status is ExperimentStatus.failed)
        detail = (f"tuning candidate {first.index + 1} of {exp.grid_size} "
                  f"({json.dumps(first.params, sort_keys=True)}) failed: {first.error}")
        try:
            failed = self.store.update_experiment(
                exp.id, {"status": ExperimentStatus.failed, "finished_at": utcnow(), "error": detail},
                expected_status=ExperimentStatus.queued)
        except Conflict:  # failed or claimed meanwhile
            return self.store.get_experiment(exp.id)
        # No worker claims a candidate of an experiment that is no longer queued: say so on the
        # ones still queued rather than leave them "queued" for ever (one claimed meanwhile
        # records its own outcome).
        for c in recorded:
            if c.status is ExperimentStatus.queued:
                with contextlib.suppress(StaleCandidate):
                    self.candidates.put(c.model_copy(update={
                        "status": ExperimentStatus.failed, "finished_at": utcnow(),
                        "error": f"not scored: candidate {first.index + 1} failed first"}))
        return failed

    def results(self, exp: Experiment) -> list[dict[str, Any]]:
        """Every candidate's score in grid order, as the sequential grid search returns them;
        ServiceError unless all ``grid_size`` are scored."""
        recorded = self.candidates.list(exp.id)
        scored = [c for c in recorded if c.status is ExperimentStatus.succeeded]
        if len(scored) != exp.grid_size or len(recorded) != exp.grid_size:
            raise ServiceError(f"experiment {exp.id}: {len(scored)} of its {exp.grid_size} tuning "
                               "candidates are scored")
        return [c.result() for c in scored]

    def describe(self, exp: Experiment) -> list[dict[str, Any]]:
        """The candidates as ``GET /metrics/{id}`` shows them."""
        return [c.model_dump(mode="json", exclude={"experiment_id", "lease_until"})
                for c in self.candidates.list(exp.id)]
