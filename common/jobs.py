"""The JobQueue port and its adapters: in-process (embedded default) and SQS."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("mlfn.jobs")


class JobQueue(Protocol):
    def submit(self, experiment_id: int) -> None:
        """Queue the training of ``experiment_id``; returns at once."""


class InProcessQueue:
    """A worker thread in this process. Jobs are recorded in the experiment store before they
    are submitted, so a restart re-enqueues what was left ``queued`` (see ``Lifecycle.recover``)."""

    def __init__(self, run: Callable[[int], Any], workers: int = 1) -> None:
        self._run = run
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"mlfn-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, experiment_id: int) -> None:
        self._queue.put(experiment_id)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._run(item)
            except Exception:  # the experiment records the failure; the worker lives on
                log.exception("job %s failed", item)
            finally:
                self._queue.task_done()

    def join(self) -> None:
        """Wait until every submitted job has finished (tests, shutdown)."""
        self._queue.join()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


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
