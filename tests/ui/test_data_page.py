"""Data page against the live server: look at a CSV, add it; zips of images for image models."""

from __future__ import annotations

import pytest

from tests.lifecycle_data import churn_rows, to_csv
from tests.ui.conftest import api, assert_clean, by_label, chart_titles, texts


def test_explore_and_add_a_csv(open_page, api_url):
    api(api_url, "POST", "/models", json={"name": "churn", "task": "classification", "target": "churned"})
    at = open_page("views/data.py", model="churn")
    csv = to_csv(churn_rows(80)).encode()
    at.file_uploader[0].set_value(("churn.csv", csv, "text/csv")).run()
    assert_clean(at)
    assert "80 rows × 5 columns" in texts(at.markdown)
    titles = chart_titles(at)
    assert "Target distribution: churned" in titles
    assert any(t.startswith("tenure: histogram by churned") for t in titles)
    assert "tenure by churned" in titles
    assert "Correlation (numeric columns)" in titles
    assert any(t.startswith("Missing values per column") for t in titles)
    by_label(at.selectbox, "Feature").set_value("plan").run()
    assert "plan by churned" in chart_titles(at)

    by_label(at.button, "Add to churn").click().run()
    assert_clean(at)
    assert "Added 80 rows to **churn**: 80 rows in dataset version 1" in texts(at.success)
    schema = {m["name"]: m for m in api(api_url, "GET", "/models")}["churn"]["features"]
    assert {f["name"]: f["kind"] for f in schema} == {
        "tenure": "numeric", "charges": "numeric", "plan": "categorical", "region": "categorical"}


def test_a_file_the_api_refuses_is_a_readable_message(open_page):
    at = open_page("views/data.py", model="iris")
    at.file_uploader[0].set_value(("other.csv", b"a,b,species\n1,2,setosa\n", "text/csv")).run()
    assert "The columns differ from the model's schema" in texts(at.warning)
    by_label(at.button, "Add to iris").click().run()
    assert_clean(at)
    assert "Uploading the data failed: bad request" in texts(at.error)
    assert "HTTP 400" in texts(at.error)


def test_add_a_zip_of_images(open_page, api_url):
    demo = pytest.importorskip("common.demo")
    if not hasattr(demo, "digits_archive"):
        pytest.skip("this server has no image models")
    api(api_url, "POST", "/models", json={"name": "digits2", "task": "classification", "input": "image",
                                           "image_size": 8})
    at = open_page("views/data.py", model="digits2")
    at.file_uploader[0].set_value(("digits.zip", demo.digits_archive(range(40)), "application/zip")).run()
    assert_clean(at)
    assert "40 images in the archive." in texts(at.markdown)
    assert "Images per label" in chart_titles(at)
    assert at.image, "sample images are shown"
    by_label(at.button, "Add to digits2").click().run()
    assert_clean(at)
    assert "Added 40 rows to **digits2**" in texts(at.success)


def test_the_dataset_and_removing_a_part(open_page, api_url):
    api(api_url, "POST", "/models", json={"name": "churn", "task": "classification", "target": "churned"})
    rows = churn_rows(60)
    for name, chunk in (("first.csv", rows[:40]), ("second.csv", rows[40:])):
        api(api_url, "PUT", "/add_data", params={"model": "churn"},
            files={"file": (name, to_csv(chunk).encode(), "text/csv")})
    at = open_page("views/data.py", model="churn")
    assert "Dataset version **2**: 60 rows in 2 part(s)." in texts(at.markdown)
    parts = at.dataframe[0].value
    assert list(parts["part"]) == [1, 2] and list(parts["rows"]) == [40, 20]
    picker = by_label(at.selectbox, "Part to remove")
    assert [o.split(" · ")[:2] for o in picker.options] == [["#1", "40 rows"], ["#2", "20 rows"]]
    picker.set_value(1).run()
    by_label(at.button, "Remove part #1").click().run()
    assert_clean(at)
    assert "Removed part #1 from **churn**: dataset version 3 has 20 rows." in texts(at.success)
    assert "Dataset version **3**: 20 rows in 1 part(s)." in texts(at.markdown)
    assert list(at.dataframe[0].value["removed in version"].fillna(0)) == [3, 0]
    versions = at.dataframe[1].value  # newest first
    assert list(versions["version"]) == [3, 2, 1]
    assert versions.iloc[0]["change"] == "removed part #1" and versions.iloc[0]["parts"] == "#2"
    data = api(api_url, "GET", "/datasets", params={"model": "churn"})
    assert data["dataset_version"] == 3 and data["rows_total"] == 20
    assert [(p["version"], p["removed_in"]) for p in data["parts"]] == [(1, 3), (2, None)]
    # Only the part that is left can be removed now.
    assert [o.split(" · ")[0] for o in by_label(at.selectbox, "Part to remove").options] == ["#2"]
