"""Shadow scoring: the shadow experiment of a rollout scores the requests the champion answered,
after the answer is sent, on a bounded queue and one low-priority thread; when the queue is full
the work is dropped and counted, never waited for. What is queued for the same experiment is
scored in one batch (one ONNX run for many requests: less CPU taken from the answers). Its
predictions go to the monitoring log beside the champion's (role ``shadow``, same request id,
the batch's latency); they are never returned.

On Lambda, where nothing runs after the handler returns, the adapter drains the queue at the end
of the invocation (``common.context.flush_monitoring``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from common.domain import Task
from common.monitoring import REQUEST_ID

if TYPE_CHECKING:
    from common.serving import Serving

log = logging.getLogger("mlfn.shadow")
NICENESS = 15  # below the model threads of the server's pool (common/web/pool.py: 5)
MAX_BATCH_ROWS = 1024
# The thread waits this long after the first job before it scores: what arrives meanwhile goes
# into the same batch, so under steady traffic the shadow costs one ONNX run per beat, not per
# request (each wake-up of a Python thread takes the GIL from the answers).
BATCH_WAIT_SECONDS = 0.05
Job = tuple[str, int, str, Any, str]


class ShadowScorer:
    def __init__(self, serving: Serving, capacity: int) -> None:
        self.serving = serving
        self.dropped = 0
        self._queue: queue.Queue[Job] = queue.Queue(capacity)
        self._lock = threading.Lock()  # one scorer at a time: the thread or a flush
        # Set by submit; the thread leaves the work in the queue until it scores it, so a flush
        # always finds everything submitted before it (none is held elsewhere).
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlfn-shadow", daemon=True)
        self._thread.start()

    def submit(self, model: str, experiment_id: int, route: str, rows: Any,
               request_id: str) -> None:
        try:
            self._queue.put_nowait((model, experiment_id, route, rows, request_id))
            self._ready.set()
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("shadow queue full: %d shadow scorings dropped", self.dropped)

    def _loop(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
        while True:
            self._ready.wait()
            time.sleep(BATCH_WAIT_SECONDS)
            with self._lock:
                self._ready.clear()  # before draining: a job put from now on sets it again
                self._drain([])

    def flush(self) -> None:
        """Score what is queued now (Lambda, tests)."""
        with self._lock:
            self._drain([])

    def _drain(self, jobs: list[Job]) -> None:
        while True:
            while len(jobs) < MAX_BATCH_ROWS:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not jobs:
                return
            groups: dict[tuple[str, int], list[Job]] = {}
            for job in jobs:
                groups.setdefault((job[0], job[1]), []).append(job)
            for (model, experiment_id), group in groups.items():
                self._score(model, experiment_id, group)
            jobs = []

    def _score(self, model: str, experiment_id: int, jobs: list[Job]) -> None:
        start = time.perf_counter()
        try:
            onnx_model = self.serving.load(model, experiment_id)
            rows = [row for job in jobs for row in job[3]]
            out = onnx_model.predict(rows)
        except Exception as exc:  # a broken shadow never touches the answers
            log.info("shadow experiment %s of %s failed on %d requests: %s", experiment_id, model,
                     len(jobs), exc)
            return
        seconds = time.perf_counter() - start
        regression = onnx_model.task is Task.regression
        at = 0
        for _, _, route, job_rows, request_id in jobs:
            token = REQUEST_ID.set(request_id)
            try:
                with self.serving.monitor.observe(route, model) as obs:
                    obs.role, obs.experiment_id, obs.rows = "shadow", experiment_id, len(job_rows)
                    obs.predictions(out.predictions[at:at + len(job_rows)], regression)
                    obs.latency_ms = seconds * 1e3
            finally:
                REQUEST_ID.reset(token)
            at += len(job_rows)
