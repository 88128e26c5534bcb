"""`mlfn serve --workers N` and several servers on one store: training jobs are claimed through
the experiment store, so every process sees every queued job and none is trained twice."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.lifecycle_data import churn_rows
from tests.servers import start_server, stop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        stop(proc)


def seed(url: str, rows: int) -> None:
    assert requests.post(f"{url}/models", json={"name": "churn", "task": "classification",
                                                "target": "churned"}, timeout=30).status_code == 201
    reply = requests.put(f"{url}/add_data?model=churn", json={"records": churn_rows(rows)},
                         timeout=60)
    assert reply.status_code == 200, reply.text


def retrain(url: str) -> int:
    # A new connection each time, so the kernel spreads them over the server's processes.
    with requests.Session() as session:
        reply = session.put(f"{url}/retrain?model=churn", timeout=30, json={
            "model_class": "random_forest", "hyperparameters": {"n_estimators": 301}})
    assert reply.status_code == 202, reply.text
    return int(reply.json()["experiment_id"])


def wait_finished(url: str, ids: list[int]) -> list[dict]:
    deadline = time.monotonic() + 240
    while True:
        docs = [requests.get(f"{url}/metrics/{i}", timeout=30).json() for i in ids]
        if all(d["status"] in ("succeeded", "failed") for d in docs):
            return docs
        assert time.monotonic() < deadline, [d["status"] for d in docs]
        time.sleep(0.2)


def overlapping(docs: list[dict]) -> bool:
    """Did two trainings run at the same time (so more than one process trained)?"""
    spans = sorted((d["started_at"], d["finished_at"]) for d in docs)
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_two_worker_processes_train_each_queued_job_exactly_once(
        tmp_path: Path, servers: list[subprocess.Popen]) -> None:
    proc, url = start_server(tmp_path / "data", "--workers", "2")
    servers.append(proc)
    seed(url, 3000)
    ids = [retrain(url) for _ in range(6)]
    docs = wait_finished(url, ids)
    assert [d["status"] for d in docs] == ["succeeded"] * 6, [d["error"] for d in docs]
    assert [d["attempts"] for d in docs] == [1] * 6  # claimed once: never trained twice
    assert overlapping(docs), "one process trained everything: the other never claimed a job"


def test_a_job_queued_through_one_server_is_trained_by_another(
        tmp_path: Path, servers: list[subprocess.Popen]) -> None:
    """Two servers on one store; the first is busy training, so the job queued through it next is
    claimed by the second, and nothing is trained twice."""
    data = tmp_path / "data"
    first, url_a = start_server(data)
    second, url_b = start_server(data)
    servers.extend([first, second])
    seed(url_a, 3000)
    ids = [retrain(url_a), retrain(url_a)]
    docs = wait_finished(url_b, ids)
    assert [d["status"] for d in docs] == ["succeeded", "succeeded"], [d["error"] for d in docs]
    assert [d["attempts"] for d in docs] == [1, 1]
    assert overlapping(docs)
