"""The bounded worker pool a server runs model work in, with backpressure.

Routes declared ``work="pool"`` (ONNX Runtime, image and archive decoding, body parsing, store
I/O) run on ``threads`` threads (ONNX Runtime, zlib, Pillow and the store clients release the
GIL), so the event loop keeps answering ``/health`` and light requests while models work. At
most ``queue`` more requests wait for a thread; beyond that a request is refused at once with
``503`` and ``Retry-After``, before its body is read, so a refused request did nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from common.errors import ServiceUnavailable

T = TypeVar("T")


# Model threads run a little below the event loop's priority, so that on a busy machine the
# loop (health checks, light requests, answers) gets a core first; where the OS refuses, nothing
# changes.
WORKER_NICENESS = 5


def _yield_to_the_event_loop() -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)


def default_threads(setting: int) -> int:
    """``setting``, or one thread per CPU when it is 0."""
    return setting if setting > 0 else max(1, os.cpu_count() or 1)


class WorkPool:
    def __init__(self, threads: int, queue: int) -> None:
        self.threads = threads
        self.capacity = threads + queue
        self.pending = 0  # admitted and not finished: running or waiting for a thread
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="mlfn-work",
                                            initializer=_yield_to_the_event_loop)

    def reserve(self) -> None:
        """Take a place or refuse with 503 (nothing has been done for the request yet)."""
        with self._lock:
            if self.pending >= self.capacity:
                raise ServiceUnavailable(
                    f"the server is at capacity: {self.pending} requests are running or waiting "
                    f"for one of its {self.threads} worker threads (MLFN_WORK_THREADS, "
                    "MLFN_WORK_QUEUE); retry shortly", retry_after=1)
            self.pending += 1

    def release(self) -> None:
        with self._lock:
            self.pending -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker thread, for a caller that has reserved a place; the
        place is released when ``fn`` returns, even if the caller stopped waiting."""

        def job() -> T:
            try:
                return fn(*args)
            finally:
                self.release()

        try:
            future = self._executor.submit(job)
        except BaseException:
            self.release()
            raise
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
