"""The JobQueue port and its adapters: in-process (embedded default) and SQS."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("mlfn.jobs")


class JobQueue(Protocol):
    def submit(self, experiment_id: int) -> None:
        """Queue the training of ``experiment_id``; returns at once."""


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

    def __init__(self, find: Callable[[], list[int]], run: Callable[[int], Any],
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

    def submit(self, experiment_id: int) -> None:
        self.start()
        with self._wake:
            self._signals += 1
            self._wake.notify_all()

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
                for experiment_id in self._find():
                    try:
                        self._run(experiment_id)
                    except Conflict as exc:  # another worker has it
                        log.debug("job %s: %s", experiment_id, exc)
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

    def submit(self, experiment_id: int) -> None:
        self._sqs.send_message(
            QueueUrl=self.queue_url, MessageBody=json.dumps({"experiment_id": experiment_id})
        )
