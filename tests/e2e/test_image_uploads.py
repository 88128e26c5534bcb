"""Zip archives of labelled images uploaded through POST /uploads and ingested in the
background, embedded, over real HTTP: one new dataset version equal to what add_data stores for
the same zip, a retrain on it; a bad entry fails the ingestion naming it and changes nothing; a
worker killed mid-archive leaves nothing and the next attempt ingests it."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import requests

from common import context
from common.demo import digits_archive, digits_png
from tests.common.test_archives import zip_of
from tests.e2e.test_ingestion_crash import (
    crash_after_registering,
    kill_mid_ingestion,
    lapse,
    prepared,
    slowed_worker,
)
from tests.e2e.test_uploads import ingest, retrained, server, upload, wait  # noqa: F401  (server: the fixture)

DIGITS = {"name": "digits", "task": "classification", "input": "image", "image_size": 8}
INDICES = range(40)


@pytest.fixture
def base(server: str) -> str:  # noqa: F811
    """test_uploads' server (a tabular model 'churn', chunks of 7) with two image models."""
    for name in ("digits", "direct"):
        created = requests.post(f"{server}/models", json={**DIGITS, "name": name}, timeout=10)
        assert created.status_code == 201, created.text
    return server


def stored(model: str) -> list[pd.DataFrame]:
    """The model's dataset parts as stored, in order."""
    backends = context.backends()
    return [pd.read_parquet(io.BytesIO(backends.datasets.get(p.key)))
            for p in backends.experiments.dataset_parts(model)]


def versions(base: str, model: str) -> dict[str, Any]:
    return requests.get(f"{base}/datasets", params={"model": model}, timeout=10).json()


def ingested(base: str, model: str, body: bytes, **query: Any) -> dict[str, Any]:
    started = ingest(base, model, upload(base, model, body, **query)["upload_id"])
    assert started.status_code == 202, started.text
    return wait(base, started.json())


def test_a_zip_upload_is_one_dataset_version_as_add_data_stores_it(base: str) -> None:
    archive = digits_archive(INDICES)
    direct = requests.put(f"{base}/add_data", params={"model": "direct"}, data=archive,
                          headers={"Content-Type": "application/zip"}, timeout=30)
    assert direct.status_code == 200, direct.text
    done = ingested(base, "digits", archive, filename="digits.zip")
    assert done["status"] == "succeeded", done
    assert (done["rows_added"], done["rows_read"], done["dataset_version"]) == (40, 40, 1)
    [part] = versions(base, "digits")["parts"]
    assert (part["source"], part["filename"], part["rows"]) == ("upload", "digits.zip", 40)
    [got], [expected] = stored("digits"), stored("direct")
    pd.testing.assert_frame_equal(got, expected)
    import pyarrow.parquet as pq

    key = context.backends().experiments.dataset_parts("digits")[0].key
    with context.backends().datasets.open_read(key) as fh:  # one row group per 7 images
        assert pq.ParquetFile(fh).metadata.num_row_groups == 6
    assert context.backends().datasets.list("_uploads/") == []
    exp = retrained(base, "digits")
    assert exp["status"] == "succeeded", exp
    assert exp["dataset_version"] == 1 and exp["rows"] == 40


def digits(n: int) -> list[tuple[str, bytes]]:
    """The entries of ``digits_archive(range(n))``: (label/img_NNNN.png, PNG bytes)."""
    with zipfile.ZipFile(io.BytesIO(digits_archive(range(n)))) as archive:
        return [(name, archive.read(name)) for name in archive.namelist()]


def corrupt_crc() -> bytes:
    """20 stored PNGs, the 16th with one byte flipped (after two chunks were written)."""
    entries = digits(20)
    data = bytearray(zip_of(entries, zipfile.ZIP_STORED))
    at = data.find(entries[15][1]) + len(entries[15][1]) // 2
    data[at] ^= 0xFF
    return bytes(data)


# Built when the test runs (not at collection): each makes an archive from the digits.
BAD = {
    "not an image": (lambda: zip_of([*digits(18), ("3/notes.png", b"not a png at all")]),
                     "3/notes.png: not a decodable image"),
    "corrupt": (corrupt_crc, "archive entry '5/img_0015.png' is corrupt (CRC mismatch)"),
    "unlabelled": (lambda: zip_of([*digits(5), ("stray.png", digits_png(9))]),
                   "archive entry 'stray.png' has no label"),
    "mislabelled": (lambda: zip_of([("labels.csv", b"filename,label\na.png,1\nb.png,2\n"),
                                    ("a.png", digits_png(1))]),
                    "mismatched labels: labels.csv lists 'b.png', which is not in the archive"),
    "zip bomb": (lambda: zip_of([*digits(3), ("4/big.png", bytes(200_000))]),
                 "archive entry '4/big.png' has a compression ratio over 100"),
}


ROWS = {"not an image": 18, "corrupt": 15}  # the others are the whole archive's faults


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_archive_fails_naming_its_entry_and_changes_nothing(base: str, case: str) -> None:
    make, needle = BAD[case]
    body = make()
    assert ingested(base, "digits", digits_archive(range(5)))["status"] == "succeeded"
    before, parts = versions(base, "digits"), stored("digits")
    done = ingested(base, "digits", body)
    assert done["status"] == "failed" and needle in done["error"], done
    assert done.get("row") == ROWS.get(case), done  # the bad image's number in the archive's order
    assert versions(base, "digits") == before
    assert [k for k in context.backends().datasets.list("") if "/parts/" in k] == \
        [p.key for p in context.backends().experiments.dataset_parts("digits")]
    assert len(stored("digits")) == len(parts)
    upload_id = done["upload_id"]  # handed back: it may be ingested again
    assert requests.get(f"{base}/uploads/{upload_id}", timeout=10).json()["status"] == "received"


@pytest.mark.parametrize(("model", "body", "needle"), [
    ("churn", digits_archive(range(3)), "is a zip archive; model 'churn' is tabular"),
    ("digits", b"label,px\n1,2\n", "is not a zip archive; model 'digits' takes images"),
])
def test_the_wrong_kind_of_file_is_refused_at_the_request(base: str, model: str, body: bytes,
                                                          needle: str) -> None:
    """Its first bytes tell a zip from a CSV: a 400 at once, no ingestion recorded, the upload
    still there for the right model's use."""
    upload_id = upload(base, model, body)["upload_id"]
    refused = ingest(base, model, upload_id)
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"].startswith("query parameter 'upload': ") and \
        needle in refused.json()["detail"]
    assert versions(base, model)["dataset_version"] == 0
    assert requests.get(f"{base}/uploads/{upload_id}", timeout=10).json()["status"] == "received"
    assert context.ingestions().records.with_status("ingestion", ("new", "queued", "running",
                                                                  "failed")) == []


WORKER = slowed_worker("common.images", "preprocess", 0.02)


def test_a_worker_killed_mid_archive(embedded: Callable[[], None],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_INGEST_CHUNK_ROWS", "5")
    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "1.5")
    monkeypatch.setenv("MLFN_JOB_HEARTBEAT_SECONDS", "0.2")
    ingestions, ingestion_id = prepared(monkeypatch, digits_archive(range(150)), DIGITS, "digits.zip")
    kill_mid_ingestion(ingestions, ingestion_id, WORKER, rows=20)
    store = context.backends().experiments
    assert store.dataset_parts("digits") == [] and store.get_model("digits").dataset_version == 0
    lapse(ingestions, ingestion_id)  # as if its lease had run out: the next worker retries it
    assert ingestions.claimable() == [ingestion_id]
    done = ingestions.run(ingestion_id)
    assert done.status == "succeeded" and done.doc["attempts"] == 2, done.doc
    assert [(p.version, p.rows) for p in store.dataset_parts("digits")] == [(1, 150)]


def test_a_crash_after_registering_an_archive_is_not_applied_twice(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    ingestions, ingestion_id = prepared(monkeypatch, digits_archive(range(12)), DIGITS, "digits.zip")
    crash_after_registering(ingestions, ingestion_id, monkeypatch)
    lapse(ingestions, ingestion_id)
    done = ingestions.run(ingestion_id)
    assert done.status == "succeeded" and done.doc["attempts"] == 2
    assert [(p.version, p.rows) for p in context.backends().experiments.dataset_parts("digits")] \
        == [(1, 12)]


def test_an_upload_has_its_own_archive_limits(embedded: Callable[[], None],
                                              monkeypatch: pytest.MonkeyPatch,
                                              request: pytest.FixtureRequest) -> None:
    """add_data's MLFN_ARCHIVE_* limits guard one request's archive; an upload is held to
    MLFN_UPLOAD_ARCHIVE_* instead (an upload exists to carry more), named when exceeded."""
    monkeypatch.setenv("MLFN_ARCHIVE_MAX_ENTRIES", "10")
    monkeypatch.setenv("MLFN_UPLOAD_ARCHIVE_MAX_ENTRIES", "30")
    base: str = request.getfixturevalue("base")
    archive = digits_archive(range(20))
    direct = requests.put(f"{base}/add_data", params={"model": "direct"}, data=archive,
                          headers={"Content-Type": "application/zip"}, timeout=30)
    assert direct.status_code == 400 and "(MLFN_ARCHIVE_MAX_ENTRIES)" in direct.json()["detail"]
    done = ingested(base, "digits", archive)
    assert done["status"] == "succeeded" and done["rows_added"] == 20, done
    big = ingested(base, "digits", digits_archive(range(40)))
    assert big["status"] == "failed", big
    assert "40 entries; the limit is 30 (MLFN_UPLOAD_ARCHIVE_MAX_ENTRIES)" in big["error"], big
    assert versions(base, "digits")["dataset_version"] == 1
