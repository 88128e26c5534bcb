"""/docs works offline and documents what the routes really accept and answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests


@pytest.fixture
def server(demo_env: Path, live_server: str) -> Iterator[str]:
    yield live_server


def test_docs_are_served_without_a_cdn(server: str) -> None:
    page = requests.get(f"{server}/docs", timeout=30)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
    assert assets, page.text[:500]
    for asset in assets:
        assert not asset.startswith("http"), asset  # nothing fetched from the internet
        assert requests.get(f"{server}{asset}", timeout=30).status_code == 200, asset


def test_openapi_documents_bodies_and_error_answers(server: str) -> None:
    spec = requests.get(f"{server}/openapi.json", timeout=30).json()
    paths = spec["paths"]
    expected = {
        ("/forward", "post"): {"application/json", "multipart/form-data"},
        ("/forward_batch", "post"): {"application/json", "text/csv", "application/zip",
                                     "multipart/form-data"},
        ("/evaluate", "post"): {"application/json", "text/csv", "application/zip",
                                "multipart/form-data"},
        ("/add_data", "put"): {"application/json", "text/csv", "application/zip",
                               "multipart/form-data"},
        ("/retrain", "put"): {"application/json"},
        ("/models", "post"): {"application/json"},
    }
    for (path, method), types in expected.items():
        assert set(paths[path][method]["requestBody"]["content"]) == types, path
    assert "422" not in str(spec)
    forward = paths["/forward"]["post"]
    assert forward["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}
    # The documented example works as it is.
    example = forward["requestBody"]["content"]["application/json"]["example"]
    reply = requests.post(f"{server}/forward?model=iris", json=example, timeout=30)
    assert reply.status_code == 200 and reply.json()["prediction"] == "setosa"


def test_docs_and_their_assets_load_with_an_api_key(demo_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                   request: pytest.FixtureRequest) -> None:
    """The key guards the API, not the documentation of it (its CSS and JS included)."""
    monkeypatch.setenv("MLFN_API_KEY", "s3cret")
    server = request.getfixturevalue("live_server")
    page = requests.get(f"{server}/docs", timeout=30)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
    assert assets and all(requests.get(f"{server}{a}", timeout=30).status_code == 200 for a in assets)
    assert requests.get(f"{server}/openapi.json", timeout=30).status_code == 200
    assert requests.get(f"{server}/models", timeout=30).status_code == 401
    # HEAD answers like GET on the GET routes, without a body.
    head = requests.head(f"{server}/health", timeout=30)
    assert head.status_code == 200 and head.content == b""
