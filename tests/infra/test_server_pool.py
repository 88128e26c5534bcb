"""The local server keeps answering while models work: model work runs in a bounded pool, and a
full pool answers 503 with Retry-After before anything is done."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from common import context

IRIS = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


class Held:
    """Holds every prediction of one model inside the model until released."""

    def __init__(self, model: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inside = threading.Semaphore(0)
        self.release = threading.Event()
        loaded = context.serving().load(model)
        real = loaded.predict

        def held_predict(*args: Any, **kwargs: Any) -> Any:
            self.inside.release()
            assert self.release.wait(60), "never released"
            return real(*args, **kwargs)

        monkeypatch.setattr(loaded, "predict", held_predict)

    def wait_inside(self, n: int = 1) -> None:
        for _ in range(n):
            assert self.inside.acquire(timeout=30), "the request never reached the model"


@pytest.fixture
def server(demo_env: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
           ) -> Iterator[str]:
    """The local server with a pool of ``threads`` threads and ``queue`` waiting places."""
    threads, queue = request.param
    monkeypatch.setenv("MLFN_WORK_THREADS", str(threads))
    monkeypatch.setenv("MLFN_WORK_QUEUE", str(queue))
    url, app = request.getfixturevalue("live_app")
    request.node.pool = app.state.pool
    yield url


@pytest.mark.parametrize("server", [(2, 4)], indirect=True)
def test_health_and_another_model_answer_while_one_request_is_held(
        server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    held = Held("iris", monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(requests.post, f"{server}/forward?model=iris", json=IRIS, timeout=60)
        held.wait_inside()
        # The event loop is free: /health, a light route, answers at once...
        assert requests.get(f"{server}/health", timeout=5).status_code == 200
        # ...and another model's forward runs on the pool's other thread.
        other = requests.post(f"{server}/forward_batch?model=breast-cancer",
                              data=breast_cancer_csv(), headers={"Content-Type": "text/csv"},
                              timeout=10)
        assert other.status_code == 200, other.text
        assert not stuck.done()
        held.release.set()
        answer = stuck.result(timeout=30)
    assert answer.status_code == 200 and answer.json()["prediction"] == "setosa"


@pytest.mark.parametrize("server", [(1, 1)], indirect=True)
def test_a_full_pool_answers_503_with_retry_after_and_does_nothing(
        server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    held = Held("iris", monkeypatch)
    store = context.backends().experiments
    parts_before = [p.model_dump() for p in store.dataset_parts("iris")]
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(requests.post, f"{server}/forward?model=iris", json=IRIS, timeout=60)
        held.wait_inside()
        waiting = pool.submit(requests.post, f"{server}/forward?model=iris", json=IRIS, timeout=60)
        # The second request takes the one place in the queue; wait until the server has it.
        pool_state = request.node.pool
        for _ in range(600):
            if pool_state.pending == 2:
                break
            threading.Event().wait(0.05)
        assert pool_state.pending == 2
        refused = requests.put(f"{server}/add_data?model=iris", headers={"Content-Type": "text/csv"},
                               data="sepal_length,sepal_width,petal_length,petal_width,species\n"
                                    "5.1,3.5,1.4,0.2,setosa\n", timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        doc = refused.json()
        assert doc["error"] == "service unavailable" and "at capacity" in doc["detail"]
        assert requests.get(f"{server}/health", timeout=5).status_code == 200
        held.release.set()
        assert running.result(timeout=30).status_code == 200
        assert waiting.result(timeout=30).status_code == 200
    # Nothing was stored for the refused upload, and the pool takes requests again.
    assert [p.model_dump() for p in store.dataset_parts("iris")] == parts_before
    assert requests.post(f"{server}/forward?model=iris", json=IRIS, timeout=10).status_code == 200


def breast_cancer_csv() -> str:
    from common.demo import breast_cancer

    frame = breast_cancer().drop(columns=["diagnosis"]).head(50)
    return frame.to_csv(index=False)
