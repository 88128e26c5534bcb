"""Monitor page: the live server's inference log; a clear message where a server has none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.ui.conftest import (
    api,
    assert_clean,
    by_label,
    chart_titles,
    make_opener,
    static_api,
    texts,
    wait_for,
)

ROWS = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3},
]


def test_recent_traffic(open_page, api_url):
    for row in ROWS:
        api(api_url, "POST", "/forward", params={"model": "iris"}, json=row)
    api(api_url, "POST", "/forward_batch", params={"model": "iris"}, json={"records": ROWS * 3})
    bad = requests.post(f"{api_url}/forward", params={"model": "iris"}, json={"sepal_length": 1}, timeout=10)
    assert bad.status_code == 400
    log = wait_for(lambda: len(found := api(api_url, "GET", "/inference_log", params={"model": "iris"})) >= 4
                   and found)
    at = open_page("views/monitor.py", model="iris")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Requests"] == str(len(log))
    assert metrics["Rows predicted"] == str(sum(r["rows"] for r in log))
    assert int(metrics["Errors"]) == sum(r["status"] >= 400 for r in log) >= 1
    assert {"p50 latency", "p95 latency", "p99 latency"} <= set(metrics)
    assert {"Requests", "Latency (ms)", "Predictions per class"} <= set(chart_titles(at))
    routes = set(at.dataframe[0].value["route"])
    assert {"forward", "forward_batch"} <= routes

    by_label(at.toggle, "All models").set_value(True).run()
    assert_clean(at)
    assert "Requests" in {m.label for m in at.metric}

    at = open_page("views/monitor.py", model="wine")
    assert "No requests logged for **wine** yet" in texts(at.info)


IRIS = {"name": "iris", "task": "classification", "target": "species", "input": "tabular",
        "features": [], "deployed_experiment_id": 1}


@pytest.fixture
def server_without_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A server of the contract without GET /inference_log (an older deployment)."""
    with static_api({"/models": (200, [IRIS])}) as url:
        monkeypatch.setenv("MLFN_UI_API_URL", url)
        yield url


def test_a_server_without_an_inference_log(server_without_log):
    at = make_opener()("views/monitor.py")
    assert "Monitoring is not available on this server" in texts(at.info)
    assert not at.error
