"""Monitor page: the live server's inference log and drift; clear messages where a server has
neither."""

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
    train,
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
    with static_api({"/models": (200, [IRIS]), "/experiments": (200, [])}) as url:
        monkeypatch.setenv("MLFN_UI_API_URL", url)
        yield url


def test_a_server_without_an_inference_log(server_without_log):
    at = make_opener()("views/monitor.py")
    assert "Monitoring is not available on this server" in texts(at.info)
    assert "Drift is not available on this server (it has no GET /drift)." in texts(at.info)
    assert not at.error


# Flowers with petals longer than any in the training data (the README's drift example).
SHIFTED = [{"sepal_length": 5.8 + i % 7 / 10, "sepal_width": 3.0, "petal_length": 9.0 + i % 5 / 10,
            "petal_width": 1.3} for i in range(200)]


def drift_rows(url: str, model: str, rows: int) -> dict:
    return wait_for(lambda: (found := api(url, "GET", "/drift", params={"model": model}))["rows"] == rows
                    and found)


def test_drift_of_the_served_rows(open_page, api_url):
    api(api_url, "POST", "/forward_batch", params={"model": "iris"}, json={"records": ROWS * 2})
    found = drift_rows(api_url, "iris", 4)
    at = open_page("views/monitor.py", model="iris")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rows counted"] == "4"
    assert f"Not enough traffic yet: experiment #{found['experiment_id']} served 4 rows since" in texts(at.info)
    assert f"from {found['min_rows']} rows on" in texts(at.info)
    assert not at.warning

    api(api_url, "POST", "/forward_batch", params={"model": "iris"}, json={"records": SHIFTED})
    found = drift_rows(api_url, "iris", 204)
    assert found["drifted"]  # the data really moved; the page must say which features
    at.run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rows counted"] == "204"
    assert metrics["Largest PSI"] == f"{found['max_psi']:.3f}"
    assert metrics["Drifted features"] == f"{len(found['drifted'])} of 4"
    warning = texts(at.warning)
    assert "(PSI above 0.25): " + ", ".join(found["drifted"]) in warning
    assert warning.endswith("the predictions") == found["prediction"]["drifted"]
    table = at.dataframe[-1].value
    assert list(table["feature"]) == [f["name"] for f in found["features"]]  # largest PSI first
    assert list(table["drifted"]) == [f["drifted"] for f in found["features"]]
    assert list(table["psi"].round(6)) == [round(f["psi"], 6) for f in found["features"]]
    assert "PSI per feature (drifted above 0.25)" in chart_titles(at)

    # another experiment has served none of these rows; the window is passed on
    other = train(api_url, "iris", "logistic_regression")["experiment_id"]
    at = open_page("views/monitor.py", model="iris")
    by_label(at.selectbox, "Experiment").set_value(other).run()
    assert_clean(at)
    assert f"Not enough traffic yet: experiment #{other} served 0 rows" in texts(at.info)
    assert {m.label: m.value for m in at.metric}["Largest PSI"] == "—"
    by_label(at.selectbox, "Experiment").set_value(None)
    by_label(at.selectbox, "Served").set_value("last hour").run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Rows counted"] == "204"


def test_drift_of_an_image_model_is_explained(open_page, api_url):
    at = open_page("views/monitor.py", model="digits")
    assert "No drift to show: experiment" in texts(at.info)
    assert "has no training profile" in texts(at.info)
    assert not at.error
