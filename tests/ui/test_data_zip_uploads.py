"""A zip of images over the API's request limit: the Data page sends it through POST /uploads
(no 413 first) and follows the ingestion to one new dataset version, or to the archive entry
that failed."""

from __future__ import annotations

import io
import zipfile

from common.demo import digits_archive
from tests.ui.conftest import api, assert_clean, by_label, make_opener, texts
from tests.ui.test_data_uploads import LIMIT, small_limit  # noqa: F401  (small_limit: the fixture)


def image_model(url: str) -> None:
    api(url, "POST", "/models", json={"name": "bigdigits", "task": "classification",
                                      "input": "image", "image_size": 8})


def test_a_zip_over_the_limit_becomes_one_dataset_version(small_limit):  # noqa: F811
    image_model(small_limit)
    content = digits_archive(range(400))
    assert len(content) > LIMIT
    at = make_opener()("views/data.py", model="bigdigits")
    at.file_uploader[0].set_value(("digits.zip", content, "application/zip")).run()
    by_label(at.button, "Add to bigdigits").click().run()
    assert_clean(at)
    assert not at.error, texts(at.error)
    assert ("Added 400 rows to **bigdigits** from the upload of digits.zip: dataset version 1"
            in texts(at.success))
    data = api(small_limit, "GET", "/datasets", params={"model": "bigdigits"})
    assert [(p["source"], p["rows"], p["filename"]) for p in data["parts"]] == \
        [("upload", 400, "digits.zip")]


def test_a_bad_entry_is_shown_and_nothing_is_added(small_limit):  # noqa: F811
    image_model(small_limit)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive, \
            zipfile.ZipFile(io.BytesIO(digits_archive(range(400)))) as digits:
        for name in digits.namelist():
            archive.writestr(name, digits.read(name))
        archive.writestr("7/broken.png", b"not a png")
    at = make_opener()("views/data.py", model="bigdigits")
    at.file_uploader[0].set_value(("bad.zip", buf.getvalue(), "application/zip")).run()
    by_label(at.button, "Add to bigdigits").click().run()
    assert_clean(at)
    error = texts(at.error)
    assert ("Ingesting bad.zip failed at image 400 (counted from 0, in the archive's order): "
            "7/broken.png: not a decodable image") in error, error
    assert "Nothing was added" in error and not at.success
    assert api(small_limit, "GET", "/datasets", params={"model": "bigdigits"})["dataset_version"] == 0
