"""Fixtures for the UI tests: the Streamlit app (AppTest) pointed at a live local server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

pytest.importorskip("streamlit", reason="the UI needs the 'ui' extra: pip install -e '.[ui]'")

from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"
RUN_TIMEOUT = 90


@pytest.fixture
def api_url(demo_env: Path, live_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The live server with the demo models, and the UI configured to use it."""
    monkeypatch.setenv("MLFN_UI_API_URL", live_server)
    monkeypatch.delenv("MLFN_UI_API_KEY", raising=False)
    return live_server


@pytest.fixture
def open_page(api_url: str) -> Callable[..., AppTest]:
    """``open_page("pages/train.py", model="iris")``: the app run once, on that page and model."""
    return make_opener()


def make_opener() -> Callable[..., AppTest]:
    def open_page(page: str | None = None, model: str | None = None) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)
        if model:
            at.query_params["model"] = model
        at.run()
        if page:
            at.switch_page(page).run()
        assert_clean(at)
        return at

    return open_page


def assert_clean(at: AppTest) -> None:
    """No traceback reached the page."""
    assert not at.exception, [e.value for e in at.exception]


def by_label(widgets: Any, label: str) -> Any:
    found = [w for w in widgets if w.label == label]
    assert found, f"no widget labelled {label!r} in {[w.label for w in widgets]}"
    return found[0]


def texts(elements: Any) -> str:
    return "\n".join(str(e.value) for e in elements)


def api(url: str, method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(method, f"{url}{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json() if response.content else None


def wait_finished(url: str, experiment_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        exp = api(url, "GET", f"/metrics/{experiment_id}")
        if exp["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return exp
        time.sleep(0.2)


def train(url: str, model: str, model_class: str, **body: Any) -> dict[str, Any]:
    """Queue an experiment through the API and wait until it ends."""
    queued = api(url, "PUT", "/retrain", params={"model": model},
                 json={"model_class": model_class, "deploy": "never", **body})
    return wait_finished(url, queued["experiment_id"])


def chart_titles(at: AppTest) -> list[str]:
    """The titles of the plotly charts on the page."""
    titles = []
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        titles.append(spec.get("layout", {}).get("title", {}).get("text", ""))
    return titles


def wait_for(predicate: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return result


@contextmanager
def static_api(answers: dict[str, tuple[int, Any]]) -> Iterator[str]:
    """A stand-in server of the contract on a free port: ``{"/path": (status, JSON body)}`` for
    GET (the query is ignored), 404 ``{"error", "detail"}`` for every other request. For servers
    the local one cannot be, e.g. an older deployment or one on DynamoDB."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            status, body = answers.get(path, (404, {"error": "not found", "detail": f"no route GET {path}"}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
