"""Train page against the live server: the generated form, retrain, watching it finish."""

from __future__ import annotations

from tests.ui.conftest import api, assert_clean, by_label, texts


def test_the_form_follows_the_catalog(open_page, api_url):
    at = open_page("views/train.py", model="diabetes")
    classes = [c["name"] for c in api(api_url, "GET", "/model_classes") if "regression" in c["tasks"]]
    assert by_label(at.selectbox, "Model class for **diabetes** (regression)").options == classes
    by_label(at.selectbox, "Model class for **diabetes** (regression)").set_value("svm").run()
    labels = {w.label for w in [*at.number_input, *at.selectbox]}
    assert {"C", "kernel", "gamma", "epsilon"} <= labels  # epsilon is regression-only
    assert by_label(at.selectbox, "kernel").options == ["rbf", "linear", "poly", "sigmoid"]
    c = by_label(at.number_input, "C")
    assert (c.value, c.min, c.max) == (1.0, 0.0001, 10000.0)
    assert "tuning grid" in c.help
    by_label(at.selectbox, "Model class for **diabetes** (regression)").set_value("random_forest").run()
    depth = by_label(at.number_input, "max_depth")
    assert depth.value is None and "empty = null" in depth.help


def test_train_and_deploy(open_page, api_url):
    at = open_page("views/train.py", model="iris")
    by_label(at.selectbox, "Model class for **iris** (classification)").set_value("logistic_regression").run()
    by_label(at.number_input, "C").set_value(0.5)
    by_label(at.number_input, "max_iter").set_value(500)
    by_label(at.radio, "Deploy").set_value("always")
    at.form_submit_button[0].click().run()
    assert_clean(at)
    assert at.get("progress"), "a progress indicator while the experiment trains"
    success = texts(at.success)
    assert "succeeded and is deployed" in success
    experiment_id = int(success.split("#")[1].split()[0])
    experiment = api(api_url, "GET", f"/metrics/{experiment_id}")
    assert experiment["status"] == "succeeded"
    assert experiment["model_class"] == "logistic_regression"
    assert experiment["hyperparameters"]["C"] == 0.5 and experiment["hyperparameters"]["max_iter"] == 500
    assert experiment["deploy"] == "always"
    deployed = {m["name"]: m["deployed_experiment_id"] for m in api(api_url, "GET", "/models")}
    assert deployed["iris"] == experiment_id
    assert {m.label for m in at.metric} >= {"accuracy", "f1_macro"}


def test_tune_with_if_better(open_page, api_url):
    at = open_page("views/train.py", model="iris")
    by_label(at.selectbox, "Model class for **iris** (classification)").set_value("logistic_regression").run()
    by_label(at.toggle, "Tune: 3-fold cross-validated grid search").set_value(True)
    by_label(at.radio, "Deploy").set_value("if_better")
    by_label(at.selectbox, "Primary metric (compares with the deployed experiment for 'if better')").set_value("accuracy")
    at.form_submit_button[0].click().run()
    assert_clean(at)
    experiment_id = int(texts(at.success).split("#")[1].split()[0])
    experiment = api(api_url, "GET", f"/metrics/{experiment_id}")
    assert experiment["status"] == "succeeded"
    assert experiment["tune"] is True and experiment["deploy"] == "if_better"
    assert experiment["primary_metric"] == "accuracy"


def test_a_failed_experiment_shows_its_reason(open_page, api_url):
    at = open_page("views/train.py", model="iris")
    by_label(at.selectbox, "Model class for **iris** (classification)").set_value("logistic_regression").run()
    by_label(at.selectbox, "solver").set_value("liblinear")  # binary only; iris has 3 classes
    at.form_submit_button[0].click().run()
    assert_clean(at)
    error = texts(at.error)
    assert "failed" in error and "liblinear" in error
    experiment_id = int(error.split("#")[1].split()[0])
    assert api(api_url, "GET", f"/metrics/{experiment_id}")["status"] == "failed"


def test_a_refused_request_is_a_readable_message(open_page, api_url):
    api(api_url, "POST", "/models", json={"name": "empty", "task": "regression", "target": "y"})
    at = open_page("views/train.py", model="empty")
    assert "has no data yet" in texts(at.warning)
    at.form_submit_button[0].click().run()
    assert_clean(at)
    assert "Queueing the training job failed" in texts(at.error)
    assert api(api_url, "GET", "/experiments", params={"model": "empty"}) == []
