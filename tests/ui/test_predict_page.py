"""Predict page against the live server: one row, a batch, evaluation; images for image models."""

from __future__ import annotations

import pytest
import requests

from tests.ui.conftest import assert_clean, by_label, chart_titles, texts

IRIS = """sepal_length,sepal_width,petal_length,petal_width,species
5.1,3.5,1.4,0.2,setosa
4.9,3.0,1.4,0.2,setosa
7.0,3.2,4.7,1.4,versicolor
6.4,3.2,4.5,1.5,versicolor
6.3,3.3,6.0,2.5,virginica
7.7,3.0,6.1,2.3,virginica
"""
DIABETES = """age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,progression
59,2,32.1,101,157,93.2,38,4,4.8598,87,151
48,1,21.6,87,183,103.2,70,3,3.8918,69,75
72,2,30.5,93,156,93.6,41,4,4.6728,85,141
24,1,25.3,84,198,131.4,40,5,4.8903,89,206
"""


def image_model_or_skip():
    demo = pytest.importorskip("common.demo")
    if not hasattr(demo, "digits_archive"):
        pytest.skip("this server has no image models")
    return demo


def test_one_row(open_page):
    at = open_page("views/predict.py", model="iris")
    for name, value in {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}.items():
        by_label(at.number_input, name).set_value(value)
    at.form_submit_button[0].click().run()
    assert_clean(at)
    assert at.metric[0].value == "setosa"
    assert at.metric[0].label.startswith("Prediction (experiment #")
    assert chart_titles(at) == ["Probabilities"]


def test_missing_values_and_categories(open_page):
    at = open_page("views/predict.py", model="wine")
    by_label(at.number_input, "alcohol").set_value(13.2)
    by_label(at.text_input, "colour").set_value("never-seen")  # unknown categories encode to zeros
    at.form_submit_button[0].click().run()
    assert_clean(at)
    assert at.metric[0].value.startswith("cultivar_")


def test_batch_from_a_csv(open_page):
    at = open_page("views/predict.py", model="iris")
    features = IRIS.replace(",setosa", "").replace(",versicolor", "").replace(",virginica", "")
    features = features.replace(",species", "")
    at.file_uploader(key="batch-iris").set_value(("flowers.csv", features.encode(), "text/csv")).run()
    by_label(at.button, "Predict the batch").click().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert list(table["prediction"]) == ["setosa", "setosa", "versicolor", "versicolor", "virginica", "virginica"]
    assert {"p(setosa)", "p(versicolor)", "p(virginica)", "sepal_length"} <= set(table.columns)
    download = at.get("download_button")
    assert download and download[0].proto.label == "Download predictions (CSV)"


def test_evaluate_classification_and_regression(open_page):
    at = open_page("views/predict.py", model="iris")
    at.file_uploader(key="evaluate-iris").set_value(("labelled.csv", IRIS.encode(), "text/csv")).run()
    by_label(at.button, "Evaluate").click().run()
    assert_clean(at)
    assert {"accuracy", "f1_macro"} <= {m.label for m in at.metric}
    assert "Confusion matrix" in chart_titles(at)

    at = open_page("views/predict.py", model="diabetes")
    at.file_uploader(key="evaluate-diabetes").set_value(("labelled.csv", DIABETES.encode(), "text/csv")).run()
    by_label(at.button, "Evaluate").click().run()
    assert_clean(at)
    assert {"rmse", "mae", "r2"} <= {m.label for m in at.metric}
    assert "Residuals (actual − predicted)" in chart_titles(at)


def test_refusals_are_readable_messages(open_page, api_url):
    at = open_page("views/predict.py", model="iris")
    at.file_uploader(key="batch-iris").set_value(("bad.csv", b"sepal_length,colour\n1,red\n", "text/csv")).run()
    by_label(at.button, "Predict the batch").click().run()
    assert_clean(at)
    assert "Predicting the batch failed: bad request" in texts(at.error)

    requests.post(f"{api_url}/models", json={"name": "fresh", "task": "regression", "target": "y"}, timeout=10)
    at = open_page("views/predict.py", model="fresh")
    assert "Nothing is deployed for **fresh**" in texts(at.warning)


def test_an_image_and_a_zip(open_page):
    demo = image_model_or_skip()
    at = open_page("views/predict.py", model="digits")
    at.file_uploader(key="image-digits").set_value(("seven.png", demo.digits_png(7), "image/png")).run()
    by_label(at.number_input, "Classes to return (X-Top-K)").set_value(2)
    by_label(at.button, "Predict").click().run()
    assert_clean(at)
    assert at.metric[0].value == "7"
    assert len(at.image) >= 1  # the uploaded and the annotated image
    assert chart_titles(at) == ["Probabilities"]

    archive = demo.digits_archive(range(30))
    at.file_uploader(key="batch-digits").set_value(("digits.zip", archive, "application/zip")).run()
    by_label(at.button, "Predict the batch").click().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert len(table) == 30 and "files" in table.columns and "prediction" in table.columns

    at.file_uploader(key="evaluate-digits").set_value(("digits.zip", archive, "application/zip")).run()
    by_label(at.button, "Evaluate").click().run()
    assert_clean(at)
    assert "accuracy" in {m.label for m in at.metric}
    assert "Confusion matrix" in chart_titles(at)

