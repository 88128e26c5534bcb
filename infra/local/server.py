"""The local service: every handler's router mounted in one FastAPI app, /docs served offline."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

import functions
from common import context
from common.settings import Settings
from common.web.app import create_app

log = logging.getLogger("mlfn.server")


def handler_modules() -> list[str]:
    """Every ``functions/<name>/app.py``, by name."""
    return sorted(m.name for m in pkgutil.iter_modules(functions.__path__) if m.ispkg)


def routers() -> list[APIRouter]:
    found = []
    for name in handler_modules():
        module = importlib.import_module(f"functions.{name}.app")
        router = getattr(module, "router", None)
        if router is not None:
            found.append(router)
    return found


def prepare(settings: Settings) -> None:
    """Start-up work: emulator resources, demo models on an empty store, job recovery, models to
    preload."""
    backends = context.backends()
    if settings.object_store == "s3" or settings.experiment_store == "dynamodb":
        backends.ensure_cloud_resources()
    if settings.demo_models:
        from common.demo import ensure_demo_models

        created = ensure_demo_models(context.lifecycle())
        if created:
            log.info("trained and deployed demo models: %s", ", ".join(created))
    if settings.job_queue == "inprocess":
        requeued = context.lifecycle().recover()
        if requeued:
            log.info("re-enqueued experiments %s", requeued)
    if settings.preload_models:
        log.info("preloaded models: %s", ", ".join(context.serving().preload(settings.preload_models)))


def build_app(settings: Settings | None = None, run_startup: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if run_startup:
            prepare(settings)
        yield

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
    return create_app(routers(), settings, app=app)
