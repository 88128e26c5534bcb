"""End to end in a real browser: Debian's chromium, driven by Playwright, opens the Streamlit app
(a subprocess) pointed at the live API, trains a model, gets a prediction, takes a screenshot,
and starts the model deployed before as a canary on the Experiments page.

The screenshot goes to ``$MLFN_UI_SCREENSHOT`` when set (``ui/screenshot.png`` refreshes the one
ui/README.md shows), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.ui.conftest import APP, api

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the 'ui' extra")
if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: run ui/ci_setup.sh")
    pytest.skip(f"{CHROMIUM} is missing (ui/ci_setup.sh installs it)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ui_url(api_url: str, tmp_path: Path) -> Iterator[str]:
    """``streamlit run ui/app.py`` on a free port, configured by MLFN_UI_API_URL."""
    port = free_port()
    env = {**os.environ, "MLFN_UI_API_URL": api_url, "HOME": str(tmp_path)}
    log = (tmp_path / "streamlit.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/_stcore/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text())
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_train_then_predict_in_a_browser(ui_url: str, api_url: str, tmp_path: Path) -> None:
    shot = Path(os.environ.get("MLFN_UI_SCREENSHOT") or tmp_path / "screenshot.png")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 940})
            page.set_default_timeout(TIMEOUT_MS)
            expect = sync_api.expect

            # Train: a random forest of 25 trees for iris, deployed when it succeeds.
            page.goto(f"{ui_url}/train?model=iris")
            expect(page.get_by_role("heading", name="Train")).to_be_visible()
            trees = page.get_by_role("spinbutton", name="n_estimators", exact=True)
            trees.fill("25")
            trees.press("Tab")
            page.get_by_text("always: deploy when it succeeds").click()
            page.get_by_role("button", name="Train").click()
            result = page.get_by_text("succeeded and is deployed")
            expect(result).to_be_visible()
            experiment_id = int(result.inner_text().split("#")[1].split()[0])
            assert api(api_url, "GET", f"/metrics/{experiment_id}")["hyperparameters"]["n_estimators"] == 25

            # Predict: through the sidebar navigation, one row typed into the generated form.
            page.get_by_role("link", name="Predict").click()
            expect(page.get_by_role("heading", name="Predict")).to_be_visible()
            expect(page.get_by_text(f"serves experiment #{experiment_id}")).to_be_visible()
            row = {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 5.1, "petal_width": 1.6}
            for name, value in row.items():
                page.get_by_role("spinbutton", name=name, exact=True).fill(str(value))
            page.get_by_role("button", name="Predict").click()
            answer = api(api_url, "POST", "/forward", params={"model": "iris"}, json=row)
            assert answer["experiment_id"] == experiment_id
            expect(page.get_by_test_id("stMetricValue")).to_have_text(answer["prediction"])
            expect(page.locator(".js-plotly-plot")).to_be_visible()
            page.wait_for_timeout(500)  # let the chart finish its transition
            page.screenshot(path=str(shot))

            # Experiments: the iris experiment deployed before becomes a canary of 10%.
            before = next(e["experiment_id"] for e in api(api_url, "GET", "/experiments", params={"model": "iris"})
                          if e["experiment_id"] != experiment_id and e["status"] == "succeeded")
            page.get_by_role("link", name="Experiments").click()
            expect(page.get_by_text("Canary: none")).to_be_visible()
            page.get_by_role("button", name=f"Start canary #{before} at 10%").click()
            expect(page.get_by_text(f"Canary #{before} answers 10% of the requests.")).to_be_visible()
            expect(page.get_by_text(f"Canary: #{before} · 10% of requests · guard off")).to_be_visible()
            expect(page.get_by_role("button", name=f"End canary #{before}")).to_be_visible()
            canary = api(api_url, "GET", "/rollout", params={"model": "iris"})["canary"]
            assert (canary["experiment_id"], canary["share"], canary["guard"]) == (before, 10, False)
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
