"""Shadow scoring: the shadow experiment of a rollout scores the requests the champion answered,
after the answer is sent, on a bounded queue and one thread; when the queue is full the work is
dropped and counted (``ShadowDropped``), never waited for. Its predictions go to the monitoring
log beside the champion's (role ``shadow``, same request id); they are never returned.

On Lambda, where nothing runs after the handler returns, the adapter drains the queue at the end
of the invocation (``common.context.flush_monitoring``).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from common.domain import Task
from common.monitoring import REQUEST_ID

if TYPE_CHECKING:
    from common.serving import Serving

log = logging.getLogger("mlfn.shadow")


class ShadowScorer:
    def __init__(self, serving: Serving, capacity: int) -> None:
        self.serving = serving
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, int, str, Any, str]] = queue.Queue(capacity)
        self._lock = threading.Lock()  # one scorer at a time: the thread or a flush
        self._thread = threading.Thread(target=self._loop, name="mlfn-shadow", daemon=True)
        self._thread.start()

    def submit(self, model: str, experiment_id: int, route: str, rows: Any,
               request_id: str) -> None:
        try:
            self._queue.put_nowait((model, experiment_id, route, rows, request_id))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("shadow queue full: %d shadow scorings dropped", self.dropped)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            with self._lock:
                self._score(*job)

    def flush(self) -> None:
        """Score what is queued now (Lambda, tests)."""
        with self._lock:
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    return
                self._score(*job)

    def _score(self, model: str, experiment_id: int, route: str, rows: Any,
               request_id: str) -> None:
        token = REQUEST_ID.set(request_id)
        try:
            with self.serving.monitor.observe(route, model) as obs:
                obs.role = "shadow"
                onnx_model = self.serving.load(model, experiment_id)
                obs.experiment_id = experiment_id
                out = onnx_model.predict(rows)
                obs.rows = len(out.predictions)
                obs.predictions(out.predictions, onnx_model.task is Task.regression)
        except Exception as exc:  # a broken shadow never touches the answers
            log.info("shadow experiment %s of %s failed: %s", experiment_id, model, exc)
        finally:
            REQUEST_ID.reset(token)
