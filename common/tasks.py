"""Tasks beyond one request (today: ingesting an upload, ``common/ingestion.py``): claim, lease,
fence and finish on revisioned records (``common/storage/records.py``), and how tasks reach
workers. Apart from the training jobs' machinery (``common/jobs.py``, ``common/jobstate.py``,
which works on experiment rows), but built the same way.

A task's record is claimable when its status is ``queued``, or ``running`` with a lapsed lease
(its worker died). A claim is a compare-and-set that moves the record to ``running`` on the next
attempt number with a lease; the worker renews the lease as it makes progress (``Lease.renew``
between chunks: no heartbeat thread), and every write of an attempt is a compare-and-set on the
revision it last wrote, so an attempt that was taken over (its lease ran out and another worker
claimed it) fails its next write with :class:`Lost` and stops. After ``MAX_ATTEMPTS`` attempts
whose leases lapsed, a task fails.

How tasks reach workers: embedded, a pool of threads per process (``TaskPool``,
``MLFN_TASK_WORKERS``) polls the store for claimable records, so a task whose worker died is
found again; on SQS (``MLFN_JOB_QUEUE=sqs``) every task is a message (``SqsTasks``) on the
ingest queue, whose redelivery after the visibility timeout is the retry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from common.errors import Conflict, ServiceUnavailable
from common.storage.records import Record, RecordStore, StaleRecord

log = logging.getLogger("mlfn.tasks")

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
# Recorded but not yet queued: the request that writes it queues it once what it needs is held
# (an ingestion's upload, a batch job's note on its upload); no worker claims it.
NEW = "new"
FINISHED = (SUCCEEDED, FAILED)
MAX_ATTEMPTS = 3
PROGRESS_SECONDS = 2.0  # how stale a running task's progress (rows read) may get
Task = dict[str, Any]  # {"task": "ingest", "id": ...}


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def epoch(iso: Any) -> float:
    """Seconds since the epoch of a record's ISO time (0 if it has none)."""
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return 0.0


class Lost(Conflict):
    """This attempt no longer holds its task (taken over, or finished elsewhere)."""


@dataclass
class Lease:
    """A claimed task: ``record`` as this attempt last wrote it."""

    records: RecordStore
    record: Record
    lease_seconds: float
    renew_seconds: float
    _renewed: float = 0.0

    @property
    def doc(self) -> dict[str, Any]:
        return self.record.doc

    @property
    def attempt(self) -> int:
        return int(self.record.doc.get("attempts", 0))

    def write(self, **fields: Any) -> Record:
        """Write ``fields`` (and a renewed lease) now; Lost if this attempt was taken over."""
        doc = {**self.record.doc, **fields}
        if doc.get("status") not in FINISHED:
            doc["lease_until"] = time.time() + self.lease_seconds
        try:
            self.record = self.records.update(self.record, doc)
        except StaleRecord:
            raise Lost(f"{self.record.kind} {self.record.id}: attempt {self.attempt} no longer "
                       "holds it (its lease ran out and another worker took over)") from None
        self._renewed = time.monotonic()
        return self.record

    def renew(self, **progress: Any) -> None:
        """Between units of work: renew the lease (with ``progress``) if it is due, and with
        progress to report at least every ``PROGRESS_SECONDS`` (what GET shows while it runs)."""
        due = min(self.renew_seconds, PROGRESS_SECONDS) if progress else self.renew_seconds
        if time.monotonic() - self._renewed >= due:
            self.write(**progress)


class TaskState:
    """Claims and leases on records; ``lease_seconds`` and ``renew_seconds`` are the job lease
    and heartbeat settings the training jobs use."""

    def __init__(self, records: RecordStore, lease_seconds: float, renew_seconds: float) -> None:
        self.records = records
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds

    @staticmethod
    def lapsed(record: Record, now: float | None = None) -> bool:
        return float(record.doc.get("lease_until") or 0) <= (now or time.time())

    def claimable(self, record: Record) -> bool:
        return record.status == QUEUED or (record.status == RUNNING and self.lapsed(record))

    def start_died(self, record: Record) -> bool:
        """A record still ``new`` a lease after it was written: the request that wrote it died
        before it queued it, and nothing ever will."""
        if record.status != NEW:
            return False
        ts = record.doc.get("created_ts")
        since = float(ts) if ts is not None else epoch(record.doc.get("created_at"))
        return time.time() - since >= self.lease_seconds

    def claim(self, record: Record, give_up: Callable[[Record], None]) -> Lease | None:
        """Move ``record`` to ``running`` on its next attempt. None if there is nothing to run
        (finished), or when the attempts are used up (``give_up(record)`` then records the
        failure). Conflict if a live attempt holds it or another worker claimed it first."""
        now = time.time()
        attempts = int(record.doc.get("attempts", 0))
        if record.status == RUNNING:
            if not self.lapsed(record, now):
                raise Conflict(f"{record.kind} {record.id} is running elsewhere")
            log.warning("%s %s: the lease of attempt %s ran out", record.kind, record.id, attempts)
            if attempts >= MAX_ATTEMPTS:
                give_up(record)
                return None
        elif record.status != QUEUED:
            return None
        doc = {**record.doc, "status": RUNNING, "attempts": attempts + 1,
               "lease_until": now + self.lease_seconds}
        doc.setdefault("started_at", iso_now())
        try:
            claimed = self.records.update(record, doc)
        except StaleRecord:
            raise Conflict(f"{record.kind} {record.id} was claimed by another worker") from None
        return Lease(self.records, claimed, self.lease_seconds, self.renew_seconds,
                     time.monotonic())


class TaskQueue(Protocol):
    def submit(self, task: Task) -> None:
        """Hand ``task`` to the workers; returns at once."""

    def start(self) -> None:
        """Start this process's workers, if the queue has any here."""


class SqsTasks:
    """Every task one message on ``url`` (the ingest queue)."""

    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self._sqs = client

    def submit(self, task: Task) -> None:
        if not self.url:
            raise ServiceUnavailable("no ingest queue is configured (MLFN_INGEST_QUEUE_URL)")
        self._sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps(task))

    def start(self) -> None:
        """Nothing: the ingest queue's consumers (the ingest worker, ``mlfn worker``) run
        elsewhere."""


class TaskPool:
    """Embedded workers: ``workers`` threads that each take the claimable tasks (``find``) and
    run them (``run``; Conflict: another worker has it, not an error), waking every ``poll``
    seconds and on ``submit``. The threads start on the first ``submit`` or ``start``, so a
    process that only records tasks runs nothing behind its back."""

    def __init__(self, find: Callable[[], list[Task]], run: Callable[[Task], Any],
                 workers: int, poll: float) -> None:
        self._find, self._run, self._poll = find, run, poll
        self._workers = workers
        self._wake = threading.Condition()
        self._signals = 0
        self._busy = 0
        self._closed = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with self._wake:
            if self._threads or self._closed or not self._workers:
                return
            self._threads = [threading.Thread(target=self._loop, name=f"mlfn-task-{i}",
                                              daemon=True) for i in range(self._workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, task: Task) -> None:
        self.start()
        with self._wake:
            self._signals += 1
            self._wake.notify_all()

    def _loop(self) -> None:
        while True:
            with self._wake:
                if self._signals == 0 and not self._closed:
                    self._wake.wait(self._poll)
                if self._closed:
                    return
                self._signals = max(0, self._signals - 1)
                self._busy += 1
            try:
                self.work_once()
            except Exception:
                log.exception("task worker failed")
            finally:
                with self._wake:
                    self._busy -= 1
                    self._wake.notify_all()

    def work_once(self) -> int:
        """Run what is claimable now; returns how many tasks ran."""
        ran = 0
        for task in self._find():
            if self._closed:
                break
            try:
                self._run(task)
                ran += 1
            except Conflict as exc:
                log.debug("task %s: %s", task, exc)
            except Exception:  # one broken task does not stop the others behind it
                log.exception("task %s", task)
        return ran

    def join(self, timeout: float = 120.0) -> None:
        """Wait until nothing is claimable and no thread works (tests, CLI). Without threads
        (``workers`` 0 or not started) the claimable tasks are run here."""
        if not self._threads:
            while self.work_once():
                pass
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._wake:
                idle = self._busy == 0 and self._signals == 0
            if idle and not self._find():
                return
            with self._wake:
                self._signals += 1
                self._wake.notify_all()
            time.sleep(0.02)
        raise TimeoutError("tasks are still running")

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
