"""The local service: every function's routes in one FastAPI app, /docs served offline, and the
gRPC services beside it (``MLFN_GRPC_PORT``, ``mlfn serve --grpc-port``).

``mlfn serve`` runs it under uvicorn (uvloop, httptools). With ``--workers N`` the store is
prepared once (emulator resources, demo models) before N processes start; each process then
runs its own job worker, which claims jobs through the experiment store, its own model pool and
its own gRPC server on the shared port.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

import functions
from common import context
from common.settings import Settings
from common.web.routing import Route

log = logging.getLogger("mlfn.server")


def function_names() -> list[str]:
    """Every function under ``functions/`` (each has a ``handler.py``), by name."""
    return sorted(m.name for m in pkgutil.iter_modules(functions.__path__) if m.ispkg)


def routes_of(name: str) -> list[Route]:
    """The HTTP routes of ``functions/<name>/routes.py`` (none for the queue workers)."""
    try:
        module = importlib.import_module(f"functions.{name}.routes")
    except ModuleNotFoundError as exc:
        if exc.name != f"functions.{name}.routes":
            raise
        return []
    return list(module.ROUTES)


# FastAPI tries routes in order: the serving routes, which take most of the traffic, first.
FIRST = ("forward", "forward_batch", "health", "metadata", "evaluate")


def all_routes() -> list[Route]:
    names = sorted(function_names(), key=lambda n: (n not in FIRST, FIRST.index(n) if n in FIRST else 0, n))
    return [route for name in names for route in routes_of(name)]


def prepare_store(settings: Settings) -> None:
    """Once per store, before serving: emulator resources, what earlier crashes left behind
    (files older than an hour without their rows: ``common/gc.py``) and the demo models."""
    from common.gc import collect

    backends = context.backends()
    if settings.object_store == "s3" or settings.experiment_store == "dynamodb":
        backends.ensure_cloud_resources()
    collect(backends)
    if settings.demo_models:
        from common.demo import ensure_demo_models

        created = ensure_demo_models(context.lifecycle())
        if created:
            log.info("trained and deployed demo models: %s", ", ".join(created))


def start_process(settings: Settings) -> None:
    """Once per serving process: its job worker (embedded queue) and the models to preload."""
    if settings.job_queue == "inprocess":
        claimable = context.lifecycle().recover()
        if claimable:
            log.info("jobs to train: experiments %s", claimable)
        ingestions = context.ingestions().recover()
        if ingestions:
            log.info("ingestions to run: %s", ", ".join(ingestions))
    if settings.preload_models:
        log.info("preloaded models: %s", ", ".join(context.serving().preload(settings.preload_models)))


def start_grpc(settings: Settings) -> Any:
    """The gRPC server of this process, or None where grpcio is not installed."""
    try:
        from infra.grpc_api.server import start
    except ImportError as exc:
        log.warning("no gRPC (%s): install the project's 'local' extra; serving HTTP only", exc)
        return None
    return start(settings.grpc_host, settings.grpc_port, settings,
                 shared_port=settings.grpc_shared_port)


def build_app(settings: Settings | None = None, run_startup: bool = True,
              prepare: bool = True) -> FastAPI:
    """The app; ``run_startup`` runs the start-up work in its lifespan (``prepare``: the
    store's too, which ``mlfn serve --workers N`` does once in the parent instead)."""
    from common.web.fastapi_app import create_app

    settings = settings or context.settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grpc_server = None
        if run_startup:
            if prepare:
                prepare_store(settings)
            start_process(settings)
            if settings.grpc_port:
                grpc_server = start_grpc(settings)
        yield
        if grpc_server is not None:
            grpc_server.stop(grace=5)
        app.state.pool.close()
        context.flush_monitoring()

    kwargs: dict[str, Any] = {
        "title": "mlfn",
        "description": "Train, export to ONNX, serve and manage classical ML models.",
        "version": "0.1.0",
        "lifespan": lifespan,
    }
    try:
        from fastapi_offline import FastAPIOffline

        app: FastAPI = FastAPIOffline(**kwargs)
    except ImportError:  # the docs then load Swagger UI from its CDN
        app = FastAPI(**kwargs)
    return create_app(all_routes(), settings, app=app)


def worker_app() -> FastAPI:
    """The app of one process of ``mlfn serve --workers N`` (uvicorn's factory)."""
    return build_app(prepare=False)
