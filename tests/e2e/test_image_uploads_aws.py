"""Zip uploads of images on the AWS backends (moto server: a presigned S3 PUT, DynamoDB, the
ingest queue's worker): one dataset version equal to what add_data stores for the same zip, a
retrain on it, and a corrupt entry that fails the ingestion naming it."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import requests

from common import context
from common.demo import digits_archive
from functions.add_data import handler as add_data
from functions.models import handler as models
from tests.apigw import invoke
from tests.e2e.test_image_uploads import DIGITS, corrupt_crc, stored
from tests.e2e.test_uploads_aws import announce, ingest, retrained, stack  # noqa: F401  (stack: the fixture)


def sent(model: str, body: bytes) -> str:
    """An upload of ``body`` for ``model`` PUT to its presigned URL; its id."""
    doc = announce(model, filename="digits.zip")
    put = requests.put(doc["url"], data=body, headers=doc["headers"], timeout=30)
    assert put.status_code == 200, put.text
    return str(doc["upload_id"])


def test_a_zip_upload_on_s3_ingest_retrain(stack: Callable[[], int],  # noqa: F811
                                           on_aws: Callable[[], None]) -> None:
    for name in ("digits", "direct"):
        created = invoke(models.handler, "v1", "POST", "/models", body={**DIGITS, "name": name})
        assert created.status == 201, created.body
    archive = digits_archive(range(30))
    direct = invoke(add_data.handler, "v1", "PUT", "/add_data", {"model": "direct"}, body=archive,
                    headers={"Content-Type": "application/zip"})
    assert direct.status == 200, direct.body
    done = ingest(sent("digits", archive), stack, "digits")
    assert done["status"] == "succeeded" and done["rows_added"] == 30, done
    assert done["dataset_version"] == 1
    [got], [expected] = stored("digits"), stored("direct")
    pd.testing.assert_frame_equal(got, expected)
    assert context.backends().datasets.list("_uploads/") == []
    exp = retrained("digits", on_aws)
    assert exp.status.value == "succeeded" and exp.dataset_version == 1 and exp.rows == 30
    # a corrupt entry: the ingestion fails naming it, the dataset stays at version 1
    failed = ingest(sent("digits", corrupt_crc()), stack, "digits")
    assert failed["status"] == "failed", failed
    assert "archive entry '5/img_0015.png' is corrupt (CRC mismatch)" in failed["error"]
    store = context.backends().experiments
    assert store.get_model("digits").dataset_version == 1
    assert [p.key for p in store.all_dataset_parts("digits")] == context.backends().datasets.list("digits/")
