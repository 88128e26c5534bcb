"""The local server's start-up loads MLFN_PRELOAD_MODELS after the demo models exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import context
from infra.local.server import prepare_store, start_process


def test_start_up_preloads_after_training_the_demo_models(
        demo_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MLFN_PRELOAD_MODELS", "iris,wine")
    context.reset()
    with caplog.at_level("INFO", logger="mlfn"):
        prepare_store(context.settings())
        start_process(context.settings())
    assert sorted(k[0] for k in context.serving().sessions._items) == ["iris", "wine"]
    assert "preloaded models: iris, wine" in caplog.text
