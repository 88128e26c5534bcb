"""Files over the API's request limit: the Data page and the client send them through
POST /uploads (the service's own URL here, presigned S3 URLs on the moto server) and follow the
ingestion to one new dataset version, or to the row that failed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests

from common import context
from tests.lifecycle_data import churn_rows, to_csv
from tests.ui.conftest import api, assert_clean, by_label, make_opener, static_api, texts
from ui.client import DEFAULT_MAX_BODY_BYTES, ClientConfig, MlfnClient

LIMIT = 64 * 1024  # the test server's MLFN_MAX_BODY_BYTES
MIB = 1024 * 1024


@pytest.fixture
def small_limit(demo_env: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """The live server refusing bodies over LIMIT; the UI pointed at it (and assuming 6 MiB,
    as /health does not say)."""
    monkeypatch.setenv("MLFN_MAX_BODY_BYTES", str(LIMIT))
    monkeypatch.setenv("MLFN_INGEST_CHUNK_ROWS", "1000")
    return request.getfixturevalue("api_url")


def churn_csv(n: int, bad_row: int | None = None) -> bytes:
    rows = churn_rows(n)
    if bad_row is not None:
        rows[bad_row]["charges"] = "n/a"
    return to_csv(rows).encode()


def ingested(client: MlfnClient, ingestion_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (got := client.ingestion(ingestion_id))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, got
        time.sleep(0.1)
    return dict(got)


def test_a_csv_over_the_limit_becomes_one_dataset_version(small_limit):
    open_page = make_opener()
    api(small_limit, "POST", "/models", json={"name": "bigchurn", "task": "classification",
                                              "target": "churned"})
    content = churn_csv(3000)
    assert len(content) > LIMIT
    at = open_page("views/data.py", model="bigchurn")
    at.file_uploader[0].set_value(("big.csv", content, "text/csv")).run()
    by_label(at.button, "Add to bigchurn").click().run()
    assert_clean(at)
    assert not at.error, texts(at.error)
    assert ("Added 3000 rows to **bigchurn** from the upload of big.csv: dataset version 1"
            in texts(at.success))
    assert "Dataset version **1**: 3000 rows in 1 part(s)." in texts(at.markdown)
    data = api(small_limit, "GET", "/datasets", params={"model": "bigchurn"})
    assert [(p["source"], p["rows"], p["filename"]) for p in data["parts"]] == [("upload", 3000, "big.csv")]
    assert [v["version"] for v in data["versions"]] == [1]


def test_a_bad_row_mid_file_is_shown_and_nothing_is_added(small_limit):
    open_page = make_opener()
    api(small_limit, "POST", "/models", json={"name": "bigchurn", "task": "classification",
                                              "target": "churned"})
    api(small_limit, "PUT", "/add_data", params={"model": "bigchurn"},
        files={"file": ("first.csv", churn_csv(40), "text/csv")})
    at = open_page("views/data.py", model="bigchurn")
    at.file_uploader[0].set_value(("bad.csv", churn_csv(3000, bad_row=2345), "text/csv")).run()
    by_label(at.button, "Add to bigchurn").click().run()
    assert_clean(at)
    error = texts(at.error)
    assert "Ingesting bad.csv failed at data row 2345 (counted from 0; line 2347 of the file)" in error
    assert "charges" in error and "n/a" in error
    assert "Nothing was added" in error
    assert not at.success
    data = api(small_limit, "GET", "/datasets", params={"model": "bigchurn"})
    assert data["dataset_version"] == 1 and data["rows_total"] == 40


def test_the_client_uploads_by_its_limit_without_trying_add_data(small_limit):
    """Over the limit it knows, the client never sends the file to add_data (no 413 first)."""
    api(small_limit, "POST", "/models", json={"name": "bigchurn", "task": "classification",
                                              "target": "churned"})
    seen: list[tuple[str, str, int]] = []
    session = requests.Session()
    session.hooks["response"].append(
        lambda r, *a, **k: seen.append((r.request.method, r.request.path_url.split("?")[0], r.status_code)))
    client = MlfnClient(ClientConfig(base_url=small_limit), session)
    started = client.add_file("bigchurn", "big.csv", churn_csv(3000), limit=LIMIT)
    assert "ingestion_id" in started
    assert ingested(client, started["ingestion_id"])["rows_added"] == 3000
    assert [s for s in seen if s[2] == 413] == []
    upload_id = started["upload_id"]
    assert seen[:3] == [("POST", "/uploads", 201), ("PUT", f"/uploads/{upload_id}/content", 200),
                        ("PUT", "/add_data", 202)]
    # Small files keep going to add_data in one request.
    added = client.add_file("bigchurn", "small.csv", churn_csv(20), limit=LIMIT)
    assert added == {"model": "bigchurn", "rows_added": 20, "rows_total": 3020, "dataset_version": 2}


def test_the_body_limit_comes_from_health_when_the_server_says():
    with static_api({"/health": (200, {"status": "ok", "max_body_bytes": 4_500_000})}) as url:
        assert MlfnClient(ClientConfig(base_url=url)).body_limit() == 4_500_000
    with static_api({"/health": (200, {"status": "ok"})}) as url:
        assert MlfnClient(ClientConfig(base_url=url)).body_limit() == DEFAULT_MAX_BODY_BYTES


@pytest.fixture
def on_s3(aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          request: pytest.FixtureRequest) -> Iterator[str]:
    """The live server keeping objects (and uploads) on S3 of the moto server; multipart above
    5 MiB in parts of 5 MiB (S3's smallest)."""
    for key, value in {"MLFN_DATA_DIR": str(tmp_path / "data"), "MLFN_DEMO_MODELS": "false",
                       "MLFN_OBJECT_STORE": "s3", "MLFN_DEPLOY_CHECK_SECONDS": "0",
                       "MLFN_UPLOAD_MULTIPART_BYTES": str(5 * MIB),
                       "MLFN_UPLOAD_PART_BYTES": str(5 * MIB)}.items():
        monkeypatch.setenv(key, value)
    for key in ("MLFN_EXPERIMENT_STORE", "MLFN_JOB_QUEUE", "MLFN_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    context.reset()
    context.backends().ensure_cloud_resources()
    url = request.getfixturevalue("live_server")
    yield url
    context.reset()


def padded_csv(n: int, start: int = 0) -> bytes:
    pad = "x" * 1000  # few rows for many bytes (3 distinct notes)
    return "".join(f"{i % 97},{pad}{i % 3},{('a', 'b')[(i // 2) % 2]}\n"
                   for i in range(start, start + n)).encode()


def test_presigned_put_and_multipart_on_s3(on_s3):
    client = MlfnClient(ClientConfig(base_url=on_s3, api_key=None))
    client.create_model("wide", "classification", "label")
    header = b"n,note,label\n"
    small = header + padded_csv(100)  # ~100 kB: one presigned PUT
    announced = client.create_upload("wide", len(small), "small.csv")
    assert announced["url"].startswith(boto3.client("s3").meta.endpoint_url)
    first = client.upload_data("wide", "small.csv", small)
    assert ingested(client, first["ingestion_id"])["dataset_version"] == 1

    big = header + padded_csv(6000, start=100)  # ~6 MB: two presigned parts and complete
    assert 5 * MIB < len(big) < 10 * MIB
    assert len(client.create_upload("wide", len(big), "big.csv")["multipart"]["parts"]) == 2
    second = client.upload_data("wide", "big.csv", big)
    done = ingested(client, second["ingestion_id"])
    assert (done["status"], done["rows_added"], done["dataset_version"]) == ("succeeded", 6000, 2)
    data = client.datasets("wide")
    assert [(p["filename"], p["rows"]) for p in data["parts"]] == [("small.csv", 100), ("big.csv", 6000)]


def test_a_later_run_picks_up_an_ingestion_it_followed(small_limit):
    """An ingestion the page kept (a run interrupted, or still running when it stopped
    following) is followed again on the next run, to its outcome."""
    api(small_limit, "POST", "/models", json={"name": "bigchurn", "task": "classification",
                                              "target": "churned"})
    client = MlfnClient(ClientConfig(base_url=small_limit))
    started = client.upload_data("bigchurn", "big.csv", churn_csv(3000))
    assert started["status"] == "queued"
    at = make_opener()("views/data.py", model="bigchurn")
    at.session_state["mlfn_ingestion-bigchurn"] = {"ingestion": started, "filename": "big.csv",
                                                   "rows": 3000}
    at.run()
    assert_clean(at)
    assert ("Added 3000 rows to **bigchurn** from the upload of big.csv: dataset version 1"
            in texts(at.success))
    assert "mlfn_ingestion-bigchurn" not in at.session_state
