"""Shared fixtures: a moto server on loopback, a PostgreSQL schema per test, demo stores."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from common import context

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
PG_BASE = os.environ.get("MLFN_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


def serialized_dynamodb(app: Any) -> Any:
    """moto's DynamoDB backend is not safe under concurrent writes (two transactions can both pass
    the same condition); DynamoDB itself applies each call atomically. Serialize DynamoDB calls so
    the emulator keeps that promise; other services (an SQS long poll) stay concurrent."""
    import threading

    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class Server(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = serialized_dynamodb(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True,
                                       request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    server = Server(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A clean moto server reached through the standard AWS_ENDPOINT_URL."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    yield moto_endpoint


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A PostgreSQL schema of its own for one test, dropped afterwards."""
    import psycopg

    schema = f"mlfn_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def fresh_context() -> Iterator[None]:
    context.reset()
    yield
    context.reset()


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the demo models trained and deployed, built once per session."""
    from common.backends import Backends
    from common.demo import ensure_demo_models
    from common.lifecycle import Lifecycle
    from common.serving import Serving
    from common.settings import Settings

    root = tmp_path_factory.mktemp("demo")
    backends = Backends.from_settings(Settings(data_dir=root))
    ensure_demo_models(Lifecycle(backends, Serving(backends)))
    return root


@pytest.fixture
def demo_env(demo_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_context: None) -> Path:
    """The process configured on a private copy of the demo store (embedded backends)."""
    data = tmp_path / "data"
    shutil.copytree(demo_store, data)
    monkeypatch.setenv("MLFN_DATA_DIR", str(data))
    monkeypatch.setenv("MLFN_DEPLOY_CHECK_SECONDS", "0")
    for key in ("MLFN_OBJECT_STORE", "MLFN_EXPERIMENT_STORE", "MLFN_JOB_QUEUE", "MLFN_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    context.reset()
    return data


@pytest.fixture
def live_server(live_app: tuple[str, object]) -> str:
    """The local server (all handlers, start-up work) on a free loopback port, over real HTTP.

    Configure it through MLFN_* environment variables before requesting this fixture.
    """
    return live_app[0]


@pytest.fixture
def live_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, object]]:
    """``live_server``'s URL and its FastAPI app (tests that look at the app's state)."""
    import socket
    import threading
    import time

    import uvicorn

    from infra.local.server import build_app

    if "MLFN_GRPC_PORT" not in os.environ:  # gRPC only where a test asks for it
        monkeypatch.setenv("MLFN_GRPC_PORT", "0")
    context.reset()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = build_app()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the local server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=30)
    context.reset()
