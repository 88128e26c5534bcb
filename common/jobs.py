"""The JobQueue port and its adapters: in-process (embedded default) and SQS, and the heartbeat
that keeps an SQS message invisible while its job trains.

A job is an experiment's training, or one grid candidate of a tuned experiment
(``common/tuning.py``): :class:`Job`, ``{"experiment_id": N}`` or ``{"experiment_id": N,
"candidate": I}`` as a message body. Both kinds go through the same queue and the same
workers, so the setting that bounds trainings (the workers' count, the SQS event source's
maximum concurrency) bounds the candidates too."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from common.jobstate import Heartbeat
    from common.settings import Settings

log = logging.getLogger("mlfn.jobs")


class Job(NamedTuple):
    experiment_id: int
    candidate: int | None = None  # a tuning candidate's index; None: the experiment's own job

    def body(self) -> dict[str, int]:
        doc = {"experiment_id": self.experiment_id}
        if self.candidate is not None:
            doc["candidate"] = self.candidate
        return doc

    @classmethod
    def of(cls, body: dict[str, Any]) -> Job:
        """The job a message body names."""
        candidate = body.get("candidate")
        return cls(int(body["experiment_id"]), None if candidate is None else int(candidate))


class JobQueue(Protocol):
    def submit(self, experiment_id: int, candidate: int | None = None) -> None:
        """Queue the training of ``experiment_id`` (or the scoring of its tuning candidate
        ``candidate``); returns at once."""

    def recover(self) -> list[int]:
        """On start-up: have the jobs left behind by a stopped process trained; returns the ids
        this queue will train now."""
        ...


class InProcessQueue:
    """The embedded queue: the experiment store itself. An experiment is recorded ``queued``
    before it is submitted; ``submit`` only wakes this process's worker thread. Every process's
    worker also looks for claimable jobs (``find``: queued ones, and running ones whose lease
    ran out) every ``poll`` seconds, so a job queued through one process of ``mlfn serve
    --workers N`` is seen by all, and a job whose worker died is retried by the next one. Only
    one process trains it: ``run`` claims the job with a conditional write first, and a job
    another worker claimed raises ``Conflict`` here, which is not an error.

    The threads start on the first ``submit`` or on ``start`` (the server calls it), so a
    process that only records jobs (tests, scripts) trains nothing behind their back.
    """

    def __init__(self, find: Callable[[], list[Job]], run: Callable[[Job], Any],
                 poll: float = 1.0, workers: int = 1) -> None:
        self._find, self._run, self._poll = find, run, poll
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._wake = threading.Condition()
        self._signals = 0  # submits not yet seen by a worker
        self._busy = 0
        self._closed = False

    def start(self) -> None:
        with self._wake:
            if self._threads or self._closed:
                return
            self._threads = [threading.Thread(target=self._loop, name=f"mlfn-worker-{i}",
                                              daemon=True) for i in range(self._workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, experiment_id: int, candidate: int | None = None) -> None:
        self.start()
        with self._wake:
            self._signals += 1
            self._wake.notify_all()

    def recover(self) -> list[int]:
        """Start the workers, which train what is queued and retry a ``running`` job once its
        lease lapses (now, or at a later poll); returns the ids of the experiments with a job
        claimable now."""
        jobs = self._find()
        self.start()
        if jobs:
            self.submit(*jobs[0])  # wake a worker: it runs every claimable job
        return sorted({job.experiment_id for job in jobs})

    def _loop(self) -> None:
        from common.errors import Conflict

        while True:
            with self._wake:
                if self._signals == 0 and not self._closed:
                    self._wake.wait(self._poll)
                if self._closed:
                    return
                self._signals = 0
                self._busy += 1
            try:
                for job in self._find():
                    try:
                        self._run(job)
                    except Conflict as exc:  # another worker has it
                        log.debug("job %s: %s", job, exc)
            except Exception:  # the experiment records the failure; the worker lives on
                log.exception("job worker failed")
            finally:
                with self._wake:
                    self._busy -= 1
                    self._wake.notify_all()

    def join(self, timeout: float = 600.0) -> None:
        """Wait until no job is claimable and this process trains none (tests, CLI)."""
        import time

        if not self._threads:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._wake:
                idle = self._busy == 0 and self._signals == 0
            try:
                pending = self._find() if idle else [0]
            except Exception:  # the store is gone (a test tearing down): nothing to wait for
                return
            if not pending:
                with self._wake:
                    if self._busy == 0 and self._signals == 0:
                        return
            with self._wake:
                self._signals += 1  # look again now rather than at the next poll
                self._wake.notify_all()
                self._wake.wait(0.05)
        raise TimeoutError("jobs are still running")

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()


class SqsQueue:
    def __init__(self, queue_url: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("sqs")
        self.queue_url = queue_url
        self._sqs = client

    def submit(self, experiment_id: int, candidate: int | None = None) -> None:
        self._sqs.send_message(
            QueueUrl=self.queue_url, MessageBody=json.dumps(Job(experiment_id, candidate).body())
        )

    def recover(self) -> list[int]:
        """Nothing to do: SQS redelivers the message of a job whose worker stopped once its
        visibility timeout runs out (see :func:`visibility_heartbeat`)."""
        return []


def _queue_arn(queue_arn: str) -> tuple[str, str, str]:
    """(region, account, queue name) of an SQS queue ARN."""
    parts = queue_arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not parts[5]:
        raise ValueError(f"not an SQS queue ARN: {queue_arn!r}")
    return parts[3], parts[4], parts[5]


def queue_url(queue_arn: str, configured: str, client: Any) -> str:
    """The URL of the queue ``queue_arn`` names: ``configured`` (MLFN_QUEUE_URL) if it is that
    queue's, else asked of SQS (which knows the URL an emulator answers on)."""
    _, account, name = _queue_arn(queue_arn)
    if configured and configured.rstrip("/").rsplit("/", 1)[-1] == name:
        return configured
    return str(client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])


def visibility_heartbeat(receipt_handle: str, queue_arn: str, settings: Settings,
                         client: Any = None) -> Heartbeat:
    """Keep one received SQS message invisible while its job trains (a context manager).

    Every ``job_heartbeat_seconds`` its visibility timeout is set to one job lease and one
    heartbeat from now (ChangeMessageVisibility), so SQS hands it to another worker only once
    this one stopped (died, or its invocation timed out), when the job's lease has lapsed too
    and that worker can take the job over. Nothing is extended once the handler returns: a
    message that keeps failing comes back after the queue's visibility timeout each time and
    reaches the dead-letter queue after its maxReceiveCount. SQS keeps a message invisible for
    at most 12 hours after its receipt; past that the heartbeat stops (logged) and the message
    may be redelivered, to a worker that finds the job running under a live lease and hands the
    message back.
    """
    from botocore.exceptions import ClientError

    from common.jobstate import Heartbeat

    timeout = min(math.ceil(settings.job_lease_seconds + settings.job_heartbeat_seconds),
                  43_200)  # SQS's limit: 12 hours
    target: dict[str, Any] = {}  # resolved on the first beat: a short job makes no SQS call

    def extend() -> bool:
        if not target:
            try:
                sqs = client
                if sqs is None:
                    import boto3

                    sqs = boto3.client("sqs", region_name=_queue_arn(queue_arn)[0] or None)
                target.update(sqs=sqs, url=queue_url(queue_arn, settings.queue_url, sqs))
            except (ValueError, ClientError) as exc:  # no such queue here: nothing to extend
                log.warning("message of %s: no visibility heartbeat: %s", queue_arn, exc)
                return False
        try:
            target["sqs"].change_message_visibility(
                QueueUrl=target["url"], ReceiptHandle=receipt_handle, VisibilityTimeout=timeout)
        except ClientError as exc:  # the message is gone, its receipt expired, the 12 h are up
            log.warning("message of %s: the visibility heartbeat stops: %s", queue_arn, exc)
            return False
        return True  # an outage (no answer) is logged by the heartbeat, which tries again

    return Heartbeat(settings.job_heartbeat_seconds, extend, "mlfn-sqs-visibility")
