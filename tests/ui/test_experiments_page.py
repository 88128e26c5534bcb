"""Experiments page against the live server: table, metric chart, deploy, roll back, history."""

from __future__ import annotations

from tests.ui.conftest import api, assert_clean, by_label, chart_titles, texts, train


def deployed_of(url: str, model: str) -> int | None:
    return {m["name"]: m["deployed_experiment_id"] for m in api(url, "GET", "/models")}[model]


def test_compare_deploy_and_roll_back(open_page, api_url):
    first = deployed_of(api_url, "iris")
    extra = train(api_url, "iris", "random_forest", hyperparameters={"n_estimators": 11})
    at = open_page("views/experiments.py", model="iris")
    table = at.dataframe[0].value
    assert list(table["experiment_id"]) == [extra["experiment_id"], first]  # newest first
    assert {"accuracy", "f1_macro", "log_loss"} <= set(table.columns)
    assert table.set_index("experiment_id").loc[first, "deployed"]
    assert chart_titles(at) == ["f1_macro per experiment (higher is better)"]
    by_label(at.selectbox, "Compare").set_value("log_loss").run()
    assert chart_titles(at) == ["log_loss per experiment (lower is better)"]

    assert by_label(at.selectbox, "Succeeded experiment").value == extra["experiment_id"]
    by_label(at.button, f"Deploy #{extra['experiment_id']}").click().run()
    assert_clean(at)
    assert f"Deployed #{extra['experiment_id']} for **iris** (previously #{first})" in texts(at.success)
    assert deployed_of(api_url, "iris") == extra["experiment_id"]

    by_label(at.button, f"Roll back to #{first}").click().run()
    assert_clean(at)
    assert deployed_of(api_url, "iris") == first
    history = api(api_url, "GET", "/deployments", params={"model": "iris"})
    assert [h["experiment_id"] for h in history] == [first, extra["experiment_id"], first]
    assert list(at.dataframe[-1].value["experiment_id"]) == [first, extra["experiment_id"], first]


def test_status_filter_and_failed_deploy_message(open_page, api_url):
    at = open_page("views/experiments.py", model="wine")
    at.segmented_control[0].set_value("failed").run()
    assert_clean(at)
    assert "No failed experiments for **wine**" in texts(at.info)
