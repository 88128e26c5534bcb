"""SessionCache: one load per key, even when the first requests arrive together."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from common.inference.onnx_model import SessionCache


def test_concurrent_first_requests_share_one_load() -> None:
    cache = SessionCache(4)
    calls: list[int] = []
    started = threading.Event()

    def load() -> Any:
        calls.append(1)
        started.set()
        time.sleep(0.2)
        return object()

    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(("m", 1), load)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(calls) == 1 and len(results) == 6
    assert all(r is results[0] for r in results)
    assert ("m", 1) in cache


def test_a_failed_load_reaches_every_waiter_and_is_retried() -> None:
    cache = SessionCache(4)
    gate = threading.Event()
    calls: list[int] = []

    def failing() -> Any:
        calls.append(1)
        gate.wait(5)
        raise RuntimeError("broken model")

    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def worker() -> None:
        barrier.wait(5)
        try:
            cache.get(("m", 1), failing)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # all three are in get(): one loading, two waiting
    gate.set()
    for t in threads:
        t.join(5)
    assert len(errors) == 3 and len(calls) == 1
    assert ("m", 1) not in cache
    fixed = object()
    assert cache.get(("m", 1), lambda: fixed) is fixed  # type: ignore[arg-type,return-value]


def test_least_recently_used_is_evicted() -> None:
    cache = SessionCache(2)
    a, b, c = object(), object(), object()
    cache.get(("a", 1), lambda: a)  # type: ignore[arg-type,return-value]
    cache.get(("b", 1), lambda: b)  # type: ignore[arg-type,return-value]
    cache.get(("a", 1), lambda: pytest.fail("cached"))  # a is now the most recent
    cache.get(("c", 1), lambda: c)  # type: ignore[arg-type,return-value]
    assert ("a", 1) in cache and ("c", 1) in cache and ("b", 1) not in cache
