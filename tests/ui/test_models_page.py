"""Models page against the live server: the list, creating a model, deleting experiments."""

from __future__ import annotations

import requests

from tests.ui.conftest import api, assert_clean, by_label, texts, train


def test_lists_every_model_with_its_deployment_and_dataset(open_page, api_url):
    at = open_page()
    assert [t.value for t in at.title] == ["Models"]
    table = at.dataframe[0].value.set_index("model")
    assert {"breast-cancer", "diabetes", "iris", "wine"} <= set(table.index)
    deployed = {m["name"]: m["deployed_experiment_id"] for m in api(api_url, "GET", "/models")}
    assert table["deployed experiment"].to_dict() == deployed
    assert table.loc["iris", "rows"] == 150
    assert table.loc["wine", "features"] == 7
    assert table.loc["diabetes", "task"] == "regression"


def test_create_a_model(open_page, api_url):
    at = open_page()
    by_label(at.text_input, "Name").set_value("churn")
    by_label(at.selectbox, "Task").set_value("classification")
    by_label(at.text_input, "Target column").set_value("churned")
    at.form_submit_button[0].click().run()
    assert_clean(at)
    assert "Created model **churn**" in texts(at.success)
    created = {m["name"]: m for m in api(api_url, "GET", "/models")}["churn"]
    assert created["task"] == "classification" and created["target"] == "churned"
    assert at.sidebar.selectbox[0].value == "churn"  # the new model becomes the current one
    assert "churn" in set(at.dataframe[0].value["model"])


def test_refusals_are_readable_messages(open_page, api_url):
    at = open_page()
    by_label(at.text_input, "Name").set_value("iris")
    by_label(at.text_input, "Target column").set_value("species")
    at.form_submit_button[0].click().run()
    assert_clean(at)
    assert "Creating the model failed: conflict" in texts(at.error)
    assert "HTTP 409" in texts(at.error)

    by_label(at.text_input, "Name").set_value("Not A Name!")
    at.form_submit_button[0].click().run()
    assert_clean(at)
    assert "bad request" in texts(at.error) and "HTTP 400" in texts(at.error)
    assert "not-a-name" not in {m["name"] for m in api(api_url, "GET", "/models")}


def test_delete_experiments_of_the_current_model(open_page, api_url):
    extra = train(api_url, "iris", "logistic_regression")
    assert extra["status"] == "succeeded"
    at = open_page(model="iris")
    assert at.sidebar.selectbox[0].value == "iris"
    picker = by_label(at.multiselect, "Experiments to delete")
    assert picker.options == [str(extra["experiment_id"])]  # the deployed one is not offered
    picker.set_value([extra["experiment_id"]]).run()
    by_label(at.button, "Delete selected experiments").click().run()
    assert_clean(at)
    assert f"Deleted experiment(s) #{extra['experiment_id']}" in texts(at.success)
    gone = requests.get(f"{api_url}/metrics/{extra['experiment_id']}", timeout=10)
    assert gone.status_code == 404


def test_delete_a_model_after_confirming(open_page, api_url):
    deployed = {m["name"]: m["deployed_experiment_id"] for m in api(api_url, "GET", "/models")}["wine"]
    at = open_page(model="wine")
    by_label(at.button, "Delete model wine").click().run()
    assert_clean(at)
    assert "Delete **wine** with its 1 experiment(s)" in texts(at.warning)
    by_label(at.button, "Cancel").click().run()  # nothing happens
    assert not at.warning and "wine" in {m["name"] for m in api(api_url, "GET", "/models")}

    by_label(at.button, "Delete model wine").click().run()
    by_label(at.button, "Yes, delete wine").click().run()
    assert_clean(at)
    assert "Deleted model **wine** with its data, experiments and files." in texts(at.success)
    assert "wine" not in {m["name"] for m in api(api_url, "GET", "/models")}
    assert requests.get(f"{api_url}/metrics/{deployed}", timeout=10).status_code == 404
    assert requests.get(f"{api_url}/datasets", params={"model": "wine"}, timeout=10).status_code == 404
    assert "wine" not in at.sidebar.selectbox[0].options
    assert "wine" not in set(at.dataframe[0].value["model"])
