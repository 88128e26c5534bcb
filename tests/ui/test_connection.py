"""What the UI says when the API is unreachable, wants a key, or refuses a large body."""

from __future__ import annotations

import io
import socket
import zipfile

import pytest
import requests

from tests.lifecycle_data import churn_rows, to_csv
from tests.ui.conftest import by_label, make_opener, texts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def live_with(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """The live server started with extra MLFN_* settings, and the UI pointed at it."""
    request.getfixturevalue("demo_env")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    url = request.getfixturevalue("live_server")
    monkeypatch.setenv("MLFN_UI_API_URL", url)
    monkeypatch.delenv("MLFN_UI_API_KEY", raising=False)
    return url


def test_an_unreachable_api(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFN_UI_API_URL", url)
    at = make_opener()()
    error = texts(at.error)
    assert f"The API at {url} is unreachable" in error and "MLFN_UI_API_URL" in error
    assert not at.title  # the page does not run without the API


def test_an_api_key(request, monkeypatch):
    live_with(request, monkeypatch, MLFN_API_KEY="s3cret")
    at = make_opener()()
    error = texts(at.error)
    assert "unauthorized" in error and "HTTP 401" in error and "MLFN_UI_API_KEY" in error

    monkeypatch.setenv("MLFN_UI_API_KEY", "s3cret")
    at = make_opener()()
    assert not at.error
    assert "iris" in set(at.dataframe[0].value["model"])
    assert "key set" in texts(at.sidebar.caption)


def test_a_body_over_the_limit(request, monkeypatch):
    """A batch to predict has no upload flow: over the limit, the 413 is explained (the Data
    page sends a large file as an upload instead: test_data_uploads, test_data_zip_uploads)."""
    live_with(request, monkeypatch, MLFN_MAX_BODY_BYTES="2000")
    at = make_opener()("views/predict.py", model="iris")
    rows = "".join(f"{5 + i % 30 / 10},3.1,{1 + i % 50 / 10},0.{i % 9 + 1}\n" for i in range(200))
    big = ("sepal_length,sepal_width,petal_length,petal_width\n" + rows).encode()
    assert len(big) > 2000
    at.file_uploader(key="batch-iris").set_value(("big.csv", big, "text/csv")).run()
    by_label(at.button, "Predict the batch").click().run()
    assert not at.exception
    error = texts(at.error)
    assert "payload too large" in error and "HTTP 413" in error and "MLFN_MAX_BODY_BYTES" in error


def test_a_large_zip_for_a_tabular_model(request, monkeypatch):
    """Over the limit the Data page uploads the zip; the ingestion is refused saying what the
    model takes."""
    url = live_with(request, monkeypatch, MLFN_MAX_BODY_BYTES="2000")
    before = requests.get(f"{url}/datasets", params={"model": "iris"}, timeout=10).json()
    at = make_opener()("views/data.py", model="iris")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("rows.csv", to_csv(churn_rows(200)))
    big = buffer.getvalue()
    assert len(big) > 2000
    at.file_uploader[0].set_value(("big.zip", big, "application/zip")).run()
    by_label(at.button, "Add to iris").click().run()
    assert not at.exception
    error = texts(at.error)
    assert "is a zip archive; model 'iris' is tabular" in error and not at.success, error
    after = requests.get(f"{url}/datasets", params={"model": "iris"}, timeout=10).json()
    assert after["dataset_version"] == before["dataset_version"]
