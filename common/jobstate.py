"""The state machine of training jobs: claim, lease, heartbeat, fence, recover, record the outcome.

An experiment is ``queued`` until a worker claims it: the claim moves it to ``running`` on the
next attempt number, leased until ``lease_until`` (``job_lease_seconds`` ahead). While the
attempt trains, a heartbeat thread renews the lease every ``job_heartbeat_seconds``. A job whose
lease lapsed — its worker died — is claimable again (the embedded queue's poll loop and its
start-up look for such jobs, SQS redelivers their message): the next attempt takes it over, or
it fails once ``MAX_ATTEMPTS`` attempts have started. A training that outlasts the lease is never
taken over while its worker lives.

The attempt number fences every write an attempt makes: once a later attempt has taken the job
over, the earlier one can neither renew the lease nor record an outcome (conditional writes on
the stored attempt), and it writes its files under keys of its own (``common.names``), so it
cannot overwrite what the later attempt wrote either.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from common.domain import Experiment, ExperimentStatus, utcnow
from common.errors import Conflict, NotFound, ServiceError

if TYPE_CHECKING:
    from common.settings import Settings
    from common.storage.ports import ExperimentStore

log = logging.getLogger("mlfn.jobs")

MAX_ATTEMPTS = 2
# A running job without lease_until was claimed by something that does not heartbeat (a worker
# of a version before heartbeats, the DVC pipeline's registration): it keeps the lease such
# claims always had, counted from started_at.
UNRENEWED_LEASE_SECONDS = 900.0


class Heartbeat:
    """Calls ``beat`` every ``interval`` seconds on a daemon thread while the ``with`` block
    runs; it stops early when ``beat`` returns False. An exception in ``beat`` (an outage) is
    logged and the next beat tries again."""

    def __init__(self, interval: float, beat: Callable[[], bool], name: str) -> None:
        self._interval, self._beat = interval, beat
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Not joined: a beat still in flight is refused by the store once the outcome is
        # written (it expects a running job), so the training need not wait for it.
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                if not self._beat():
                    return
            except Exception:
                log.exception("%s: heartbeat failed; trying again in %ss", self._thread.name,
                              self._interval)


class JobState:
    """Claims, leases and fences the training jobs recorded in an ExperimentStore."""

    def __init__(self, store: ExperimentStore, settings: Settings) -> None:
        self.store = store
        self.lease = timedelta(seconds=settings.job_lease_seconds)
        self.heartbeat_seconds = settings.job_heartbeat_seconds
        self._unrenewed = timedelta(seconds=max(settings.job_lease_seconds,
                                                UNRENEWED_LEASE_SECONDS))

    # -- leases ----------------------------------------------------------------------------
    def claimed(self) -> dict[str, Any]:
        """The fields of an experiment recorded already claimed by its first attempt."""
        now = utcnow()
        return {"status": ExperimentStatus.running, "attempts": 1, "started_at": now,
                "lease_until": now + self.lease}

    def lease_expiry(self, exp: Experiment) -> datetime | None:
        """When the running attempt's lease runs out; None if it has none (claimable now)."""
        if exp.lease_until is not None:
            return exp.lease_until
        if exp.started_at is not None:
            return exp.started_at + self._unrenewed
        return None

    def lapsed(self, exp: Experiment, now: datetime | None = None) -> bool:
        expiry = self.lease_expiry(exp)
        return expiry is None or (now or utcnow()) >= expiry

    def claimable(self) -> list[int]:
        """Jobs a worker may claim now, oldest first: ``queued`` ones, and ``running`` ones whose
        lease lapsed (their worker died: they are retried, or failed after ``MAX_ATTEMPTS``)."""
        return [e.id for e in self.claimable_experiments()]

    def claimable_experiments(self) -> list[Experiment]:
        """The experiments of :meth:`claimable`, oldest first."""
        now = utcnow()
        exps = self.store.list_experiments(status=ExperimentStatus.queued)
        exps += [e for e in self.store.list_experiments(status=ExperimentStatus.running)
                 if self.lapsed(e, now)]
        return sorted(exps, key=lambda e: e.id)

    # -- claim, run, heartbeat -------------------------------------------------------------
    def claim(self, experiment_id: int) -> Experiment | None:
        """Move a job to ``running`` on its next attempt (taking over one whose lease lapsed);
        None if it is not to be run (finished, or failed here after ``MAX_ATTEMPTS``). Conflict
        if another worker holds it or claims it first."""
        exp = self.store.get_experiment(experiment_id)
        now = utcnow()
        if exp.status is ExperimentStatus.running:
            if not self.lapsed(exp, now):
                raise Conflict(f"experiment {experiment_id} is running elsewhere")
            log.warning("experiment %s: the lease of attempt %s ran out at %s", experiment_id,
                        exp.attempts, self.lease_expiry(exp))
            if exp.attempts >= MAX_ATTEMPTS:
                self.store.update_experiment(
                    experiment_id,
                    {"status": ExperimentStatus.failed, "finished_at": now, "lease_until": None,
                     "error": f"the worker stopped {exp.attempts} times before finishing"},
                    expected_status=ExperimentStatus.running,
                    expected_attempts=exp.attempts,
                    expected_lease_until=exp.lease_until,
                )
                return None
        elif exp.status is not ExperimentStatus.queued:
            return None  # already finished: a duplicate delivery
        return self.store.update_experiment(
            experiment_id,
            {"status": ExperimentStatus.running, "started_at": now, "attempts": exp.attempts + 1,
             "lease_until": now + self.lease, "error": None},
            # Two workers taking over the same lapsed lease: only one gets the next attempt; and
            # none does if the holder's heartbeat renewed the lease since it was read.
            expected_status=exp.status,
            expected_attempts=exp.attempts,
            expected_lease_until=exp.lease_until,
        )

    def run(self, experiment_id: int, work: Callable[[Experiment], Experiment]) -> Experiment:
        """Claim the job and run it (see :meth:`run_claimed`); the stored experiment if it is
        not to be run."""
        exp = self.claim(experiment_id)
        if exp is None:
            return self.store.get_experiment(experiment_id)
        return self.run_claimed(exp, work)

    def run_claimed(self, exp: Experiment, work: Callable[[Experiment], Experiment]) -> Experiment:
        """``work(exp)`` (which records success) while a heartbeat renews the lease; an
        exception fails the experiment with its reason, unless a later attempt holds it."""
        with self.heartbeat(exp):
            try:
                return work(exp)
            except Exception as exc:
                detail = exc.detail if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
                log.warning("experiment %s failed: %s", exp.id, detail)
                return self.fail(exp, detail)

    def heartbeat(self, exp: Experiment) -> Heartbeat:
        """The lease renewal of ``exp``'s attempt, as a context manager."""

        def renew() -> bool:
            try:
                self.store.renew_lease(exp.id, exp.attempts, utcnow() + self.lease)
            except (Conflict, NotFound) as exc:
                # Taken over, finished or deleted: this attempt's outcome will be refused.
                log.info("experiment %s attempt %s: heartbeat stops: %s", exp.id, exp.attempts, exc)
                return False
            return True

        return Heartbeat(self.heartbeat_seconds, renew, f"mlfn-lease-{exp.id}-a{exp.attempts}")

    # -- fence and outcome -----------------------------------------------------------------
    def holds(self, exp: Experiment) -> bool:
        """Whether ``exp``'s attempt still holds its job."""
        try:
            current = self.store.get_experiment(exp.id)
        except NotFound:
            return False
        return current.status is ExperimentStatus.running and current.attempts == exp.attempts

    def check(self, exp: Experiment) -> None:
        if not self.holds(exp):
            raise Conflict(
                f"experiment {exp.id}: attempt {exp.attempts} no longer holds the job (its lease "
                "ran out and a later attempt took over, or it was finished or deleted)"
            )

    def succeed(self, exp: Experiment, fields: dict[str, Any]) -> Experiment:
        """Record the attempt's success; Conflict if it no longer holds the job."""
        return self.store.update_experiment(
            exp.id,
            {**fields, "status": ExperimentStatus.succeeded, "finished_at": utcnow(),
             "lease_until": None},
            expected_status=ExperimentStatus.running,
            expected_attempts=exp.attempts,
        )

    def fail(self, exp: Experiment, detail: str) -> Experiment:
        """Record the attempt's failure; if a later attempt took the job over, its outcome
        stands and is returned."""
        try:
            return self.store.update_experiment(
                exp.id,
                {"status": ExperimentStatus.failed, "finished_at": utcnow(), "error": detail,
                 "lease_until": None},
                expected_status=ExperimentStatus.running,
                expected_attempts=exp.attempts,
            )
        except Conflict:
            return self.store.get_experiment(exp.id)
