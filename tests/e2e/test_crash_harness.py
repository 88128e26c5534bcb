"""The crash harness: a server process is SIGKILLed at random points (seeded) while clients
upload data, train, deploy and delete; after each kill the store is inspected and the
invariants must hold:

- every dataset part row has its file, and (after `mlfn gc --min-age 0`, the server down) every
  part file its row;
- the deployed pointer names a succeeded experiment whose model file exists, and every succeeded
  experiment's model file exists;
- no experiment stays ``running`` beyond one lease (the restarted server takes it over);
- no acknowledged write is lost: every upload, retrain, deploy and delete the server answered
  with a success is still there (or still gone).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests

from common.backends import Backends
from common.domain import ExperimentStatus, utcnow
from common.settings import Settings
from tests.lifecycle_data import churn_rows
from tests.servers import start_server

ROOT = Path(__file__).resolve().parents[2]
SEED = 1301
KILLS = 30
BUDGET_SECONDS = 300
LEASE, HEARTBEAT = 2.0, 0.5


@dataclass
class Acks:
    """What the server acknowledged (answered with a success) and must never lose."""

    parts: dict[int, int] = field(default_factory=dict)  # dataset version -> rows added
    experiments: set[int] = field(default_factory=set)
    deploys: list[tuple[int, int | None]] = field(default_factory=list)  # (deployed, previous)
    deleted: set[int] = field(default_factory=set)
    # Deletes sent but not answered (the kill came first): each may or may not have happened.
    asked: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def start(data: Path) -> tuple[subprocess.Popen, str]:
    return start_server(data, env={"MLFN_JOB_LEASE_SECONDS": str(LEASE),
                                   "MLFN_JOB_HEARTBEAT_SECONDS": str(HEARTBEAT)},
                        log=data.parent / "server.log")


def csv_of(rows: list[dict[str, Any]]) -> bytes:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(r[c]) for c in header) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def traffic(url: str, acks: Acks, rng: random.Random, stop: threading.Event) -> None:
    """One client: random writes until the server goes away or ``stop`` is set."""
    session = requests.Session()
    while not stop.is_set():
        action = rng.choice(["upload", "upload", "upload", "retrain", "deploy", "delete"])
        try:
            if action == "upload":
                rows = churn_rows(rng.randint(5, 40), seed=rng.randint(0, 10**6))
                reply = session.put(f"{url}/add_data?model=churn", data=csv_of(rows),
                                    headers={"Content-Type": "text/csv"}, timeout=10)
                if reply.status_code == 200:
                    doc = reply.json()
                    with acks.lock:
                        acks.parts[doc["dataset_version"]] = doc["rows_added"]
            elif action == "retrain":
                reply = session.put(f"{url}/retrain?model=churn", timeout=10, json={
                    "model_class": "random_forest",
                    "hyperparameters": {"n_estimators": rng.choice([3, 5, 9])}})
                if reply.status_code == 202:
                    with acks.lock:
                        acks.experiments.add(reply.json()["experiment_id"])
            else:
                listed = session.get(f"{url}/experiments?model=churn", timeout=10).json()
                if action == "deploy":
                    done = [e["experiment_id"] for e in listed if e["status"] == "succeeded"]
                    if done:
                        reply = session.post(f"{url}/deploy/{rng.choice(done)}", timeout=10)
                        if reply.status_code == 200:
                            doc = reply.json()
                            with acks.lock:
                                acks.deploys.append((doc["deployed"], doc["previous"]))
                else:
                    ended = [e["experiment_id"] for e in listed
                             if e["status"] in ("succeeded", "failed")]
                    if ended:
                        target = rng.choice(ended)
                        with acks.lock:
                            acks.asked.add(target)
                        reply = session.delete(f"{url}/experiments/{target}", timeout=10)
                        if reply.status_code == 204:
                            with acks.lock:
                                acks.deleted.add(target)
        except (requests.RequestException, ValueError):
            return  # the server was killed


def check_invariants(data: Path, acks: Acks, cycle: int) -> None:
    """With the server down: gc what the crash left, then every invariant."""
    done = subprocess.run([sys.executable, "-m", "infra.local.cli", "gc", "--min-age", "0",
                           "--data-dir", str(data)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MLFN_DEMO_MODELS": "false"})
    assert done.returncode == 0, done.stderr[-2000:]
    backends = Backends.from_settings(Settings(data_dir=data, demo_models=False))
    store, models, datasets = backends.experiments, backends.models, backends.datasets
    where = f"after kill {cycle}"
    parts = store.dataset_parts("churn")
    registered = {p.key for p in parts}
    for part in parts:
        assert datasets.exists(part.key), f"{where}: part {part.version} has no file"
    assert set(datasets.list("churn/parts/")) == registered, f"{where}: part files without rows"
    by_version = {p.version: p for p in parts}
    with acks.lock:
        for version, rows in acks.parts.items():
            assert version in by_version and by_version[version].rows == rows, \
                f"{where}: acknowledged upload (version {version}) lost"
        experiments = {e.id: e for e in store.list_experiments("churn")}
        for exp_id in acks.experiments - acks.deleted - acks.asked:
            assert exp_id in experiments, f"{where}: acknowledged retrain {exp_id} lost"
        for exp_id in acks.deleted:
            assert exp_id not in experiments, f"{where}: acknowledged delete {exp_id} undone"
            assert not any(k.startswith(f"churn/{exp_id:010d}") for k in models.list("churn/"))
        history = {(d.experiment_id, d.previous) for d in store.list_deployments("churn")}
        for deploy in acks.deploys:
            assert deploy in history, f"{where}: acknowledged deploy {deploy} lost"
    deployed = store.deployed_experiment("churn")
    if deployed is not None:
        exp = experiments[deployed]
        assert exp.status is ExperimentStatus.succeeded, where
        assert exp.artifact_key and models.exists(exp.artifact_key), f"{where}: deployed file missing"
    for exp in experiments.values():
        if exp.status is ExperimentStatus.succeeded:
            assert exp.artifact_key and models.exists(exp.artifact_key), \
                f"{where}: experiment {exp.id} succeeded without its model file"
        if exp.status is ExperimentStatus.running:
            seen = exp.lease_until or exp.started_at
            assert seen is not None and utcnow() - seen < timedelta(seconds=LEASE * 4 + 5), \
                f"{where}: experiment {exp.id} running long past its lease"


def test_kill_9_at_random_points_loses_and_leaves_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "data"
    acks = Acks()
    began = time.monotonic()
    proc, url = start(data)
    assert requests.post(f"{url}/models", timeout=10, json={
        "name": "churn", "task": "classification", "target": "churned"}).status_code == 201
    assert requests.put(f"{url}/add_data?model=churn", data=csv_of(churn_rows(80)),
                        headers={"Content-Type": "text/csv"}, timeout=30).status_code == 200
    kills = 0
    while kills < KILLS and time.monotonic() - began < BUDGET_SECONDS:
        stop = threading.Event()
        clients = [threading.Thread(target=traffic, args=(url, acks, random.Random(rng.random()), stop))
                   for _ in range(3)]
        for client in clients:
            client.start()
        time.sleep(rng.uniform(0.05, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        stop.set()
        for client in clients:
            client.join(timeout=30)
        check_invariants(data, acks, kills)
        proc, url = start(data)
    try:
        assert kills >= KILLS, f"only {kills} kills within {BUDGET_SECONDS} s"
        # The last server finishes or fails every job it inherited, within a few leases.
        deadline = time.monotonic() + 180
        store = Backends.from_settings(Settings(data_dir=data)).experiments
        while True:
            pending = [e.id for e in store.list_experiments("churn")
                       if e.status in (ExperimentStatus.queued, ExperimentStatus.running)]
            if not pending:
                break
            assert time.monotonic() < deadline, f"jobs left unfinished: {pending}"
            time.sleep(0.5)
        assert acks.parts and acks.experiments, "the clients never got an answer"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    check_invariants(data, acks, kills + 1)
