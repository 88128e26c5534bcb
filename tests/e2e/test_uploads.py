"""Uploads of any size and their asynchronous, all-or-nothing ingestion, embedded, over real
HTTP: upload -> ingest -> retrain, and the ways a hostile or unlucky client can break it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from common import context

HEADER = "tenure,charges,plan,churned\n"


def rows(n: int, start: int = 0) -> str:
    return "".join(f"{i % 72},{20 + (i * 7) % 90}.5,{('basic', 'premium')[i % 2]},"
                   f"{('yes', 'no')[(i // 3) % 2]}\n" for i in range(start, start + n))


def wait(base: str, ingestion: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = requests.get(f"{base}{ingestion['url']}", timeout=10).json()
        if got["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def upload(base: str, model: str, body: bytes, **query: Any) -> dict[str, Any]:
    announced = requests.post(f"{base}/uploads", params={"model": model, **query}, timeout=10)
    assert announced.status_code == 201, announced.text
    doc = announced.json()
    sent = requests.put(f"{base}{doc['url']}", data=body, headers=doc["headers"], timeout=30)
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "received" and sent.json()["size"] == len(body)
    return doc


def ingest(base: str, model: str, upload_id: str) -> requests.Response:
    return requests.put(f"{base}/add_data", params={"model": model, "upload": upload_id},
                        timeout=10)


def retrained(base: str, model: str, timeout: float = 60) -> dict[str, Any]:
    """PUT /retrain (logistic regression) and the experiment once it succeeded or failed."""
    trained = requests.put(f"{base}/retrain", params={"model": model},
                           json={"model_class": "logistic_regression"}, timeout=10)
    assert trained.status_code in (200, 201, 202), trained.text
    exp: dict[str, Any] = trained.json()
    deadline = time.monotonic() + timeout
    while exp["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        exp = requests.get(f"{base}/metrics/{exp['experiment_id']}", timeout=10).json()
    return exp


@pytest.fixture
def server(embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch,
           request: pytest.FixtureRequest) -> str:
    monkeypatch.setenv("MLFN_INGEST_CHUNK_ROWS", "7")  # many row groups from a small file
    monkeypatch.setenv("MLFN_JOB_POLL_SECONDS", "0.1")
    base: str = request.getfixturevalue("live_server")
    created = requests.post(f"{base}/models", json={"name": "churn", "task": "classification",
                                                     "target": "churned"}, timeout=10)
    assert created.status_code in (200, 201), created.text
    return base


def datasets(base: str) -> dict[str, Any]:
    return requests.get(f"{base}/datasets", params={"model": "churn"}, timeout=10).json()


def test_upload_ingest_retrain(server: str) -> None:
    body = (HEADER + rows(100)).encode()
    doc = upload(server, "churn", body, filename="churn.csv")
    started = ingest(server, "churn", doc["upload_id"])
    assert started.status_code == 202, started.text
    assert started.headers["location"] == started.json()["url"]
    done = wait(server, started.json())
    assert done["status"] == "succeeded", done
    assert done["rows_added"] == 100 and done["dataset_version"] == 1
    data = datasets(server)
    assert data["rows_total"] == 100 and len(data["versions"]) == 1
    part = data["parts"][0]
    assert part["source"] == "upload" and part["filename"] == "churn.csv"
    # the Parquet part: one row group per chunk of 7 rows
    import pyarrow.parquet as pq

    backends = context.backends()
    key = backends.experiments.dataset_parts("churn")[0].key
    with backends.datasets.open_read(key) as fh:
        meta = pq.ParquetFile(fh).metadata
        assert (meta.num_row_groups, meta.num_rows) == (15, 100)
    # the upload's object is gone, its record says who took it; it cannot be ingested twice
    assert requests.get(f"{server}/uploads/{doc['upload_id']}", timeout=10).json()["status"] == "ingested"
    assert backends.datasets.list("_uploads/") == []
    again = ingest(server, "churn", doc["upload_id"])
    assert again.status_code == 409 and done["ingestion_id"] in again.json()["detail"]
    # a second file appends a version, then retrain trains on it
    more = upload(server, "churn", (HEADER + rows(30, 100)).encode())
    assert wait(server, ingest(server, "churn", more["upload_id"]).json())["dataset_version"] == 2
    exp = retrained(server, "churn")
    assert exp["status"] == "succeeded", exp
    assert exp["dataset_version"] == 2 and exp["rows"] == 130


@pytest.mark.parametrize(("body", "needle", "row"), [
    (HEADER + rows(20) + "3,abc,basic,yes\n" + rows(5), "feature 'charges' (row 20)", 20),
    (HEADER + rows(9) + "3,4.5,basic\n", "row 9 has 3 fields", 9),
    (HEADER + rows(15) + "3,4.5,basic,\n", "target 'churned' (row 15) is missing", 15),
    ("tenure,charges,plan,label\n" + rows(5), "column", None),
])
def test_a_bad_row_fails_the_ingestion_and_changes_nothing(server: str, body: str, needle: str,
                                                            row: int | None) -> None:
    first = upload(server, "churn", (HEADER + rows(10)).encode())
    assert wait(server, ingest(server, "churn", first["upload_id"]).json())["status"] == "succeeded"
    before = datasets(server)
    doc = upload(server, "churn", body.encode())
    done = wait(server, ingest(server, "churn", doc["upload_id"]).json())
    assert done["status"] == "failed" and needle in done["error"], done
    assert done.get("row") == row
    assert datasets(server) == before
    assert [k for k in context.backends().datasets.list("") if "/parts/" in k] == \
        [p.key for p in context.backends().experiments.dataset_parts("churn")]


@pytest.mark.parametrize(("before", "where", "row"), [
    (30, "(row 30)", 30),
    (70_000, "(row 70000)", 70_000),  # far past the block a strict decoder fails ahead in
    (-1, "(its header)", None),
])
def test_invalid_utf8_names_its_row(server: str, before: int, where: str,
                                    row: int | None) -> None:
    bad = b"1,2.5,\xff\xfe,yes\n"
    quoted = '1,2.5,"ba\nsic",no\n'  # a line break inside a cell: lines are not rows
    body = (HEADER.replace("plan", "pl\xe9n").encode("latin-1") + rows(3).encode() if before < 0
            else (HEADER + quoted + rows(before - 1)).encode() + bad + rows(3).encode())
    doc = upload(server, "churn", body)
    done = wait(server, ingest(server, "churn", doc["upload_id"]).json())
    assert done["status"] == "failed" and f"the CSV is not UTF-8 text {where}" in done["error"], done
    assert done.get("row") == row
    assert datasets(server)["dataset_version"] == 0
    direct = requests.put(f"{server}/add_data", params={"model": "churn"}, data=body,
                          headers={"Content-Type": "text/csv"}, timeout=30)
    assert direct.status_code == 400 and where in direct.json()["detail"], direct.text


def test_first_upload_infers_the_schema_from_every_row(server: str) -> None:
    # 'charges' is numeric for 40 rows, then text: add_data would make it categorical
    body = HEADER + rows(40) + "5,unknown,basic,yes\n"
    done = wait(server, ingest(server, "churn", upload(server, "churn", body.encode())["upload_id"]).json())
    assert done["status"] == "succeeded", done
    model = requests.get(f"{server}/models", timeout=10).json()
    found = next(m for m in (model["models"] if isinstance(model, dict) else model) if m["name"] == "churn")
    kinds = {f["name"]: f["kind"] for f in found["features"]}
    assert kinds == {"tenure": "numeric", "charges": "categorical", "plan": "categorical"}


def test_hostile_requests(server: str) -> None:
    requests.post(f"{server}/models", json={"name": "other", "task": "classification",
                                            "target": "churned"}, timeout=10)
    doc = upload(server, "churn", (HEADER + rows(5)).encode())
    # another model's upload
    wrong = ingest(server, "other", doc["upload_id"])
    assert wrong.status_code == 400 and "announced for model 'churn'" in wrong.json()["detail"]
    # not arrived yet
    pending = requests.post(f"{server}/uploads", params={"model": "churn"}, timeout=10).json()
    early = ingest(server, "churn", pending["upload_id"])
    assert early.status_code == 400 and "has not arrived" in early.json()["detail"]
    # the upload URL twice
    twice = requests.put(f"{server}/uploads/{doc['upload_id']}/content", data=b"x", timeout=10)
    assert twice.status_code == 409
    # unknown and malformed ids
    assert ingest(server, "churn", "0" * 32).status_code == 404
    bad = ingest(server, "churn", "../../etc")
    assert bad.status_code == 400 and bad.json()["error"] == "bad request"
    assert requests.get(f"{server}/ingestions/{'a' * 32}", timeout=10).status_code == 404
    # a body and an upload
    both = requests.put(f"{server}/add_data", params={"model": "churn", "upload": doc["upload_id"]},
                        data=b"a,b\n1,2\n", headers={"content-type": "text/csv"}, timeout=10)
    assert both.status_code == 400
    # an empty body
    empty = requests.post(f"{server}/uploads", params={"model": "churn"}, timeout=10).json()
    sent = requests.put(f"{server}{empty['url']}", data=b"", timeout=10)
    assert sent.status_code == 400 and "empty" in sent.json()["detail"]
    assert datasets(server)["dataset_version"] == 0


def test_a_form_instead_of_the_file(server: str) -> None:
    """curl -F (a multipart form) and curl -d (line breaks dropped) where the file's bytes go:
    refused, or the ingestion says what to send instead; nothing is ingested."""
    body = (HEADER + rows(5)).encode()
    announced = requests.post(f"{server}/uploads", params={"model": "churn"}, timeout=10).json()
    form = requests.put(f"{server}{announced['url']}", files={"file": ("churn.csv", body)},
                        timeout=10)
    assert form.status_code == 400 and "multipart form (curl -F)" in form.json()["detail"], form.text
    status = requests.get(f"{server}/uploads/{announced['upload_id']}", timeout=10).json()
    assert status["status"] == "pending"  # still waiting for the file itself
    # the same form's bytes sent as a file (as S3 stores whatever its URL receives)
    encoded = requests.Request("PUT", "http://x", files={"file": ("churn.csv", body)}).prepare()
    doc = upload(server, "churn", bytes(encoded.body))
    refused = ingest(server, "churn", doc["upload_id"])
    assert refused.status_code == 400 and "holds a multipart form" in refused.json()["detail"]
    # curl -d @file: one line
    flat = upload(server, "churn", body.replace(b"\n", b""))
    done = wait(server, ingest(server, "churn", flat["upload_id"]).json())
    assert done["status"] == "failed" and "curl --data-binary @file, not -d" in done["error"], done
    assert datasets(server)["dataset_version"] == 0


def test_two_ingestions_of_one_upload_at_once(server: str) -> None:
    doc = upload(server, "churn", (HEADER + rows(50)).encode())
    answers: list[requests.Response] = []
    barrier = threading.Barrier(4)

    def go() -> None:
        barrier.wait()
        answers.append(ingest(server, "churn", doc["upload_id"]))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers)
    assert codes == [202, 409, 409, 409], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 202).json()
    assert wait(server, winner)["status"] == "succeeded"
    assert datasets(server)["rows_total"] == 50


def test_upload_limit(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_UPLOAD_MAX_BYTES", "1000")
    context.reset()  # the server reads its settings again
    too_big = requests.post(f"{server}/uploads", params={"model": "churn", "size": 5000}, timeout=10)
    assert too_big.status_code == 413 and "size" in too_big.json()["detail"]
    doc = requests.post(f"{server}/uploads", params={"model": "churn"}, timeout=10).json()
    sent = requests.put(f"{server}{doc['url']}", data=b"x" * 5000, timeout=10)
    assert sent.status_code == 413, sent.text
    assert requests.get(f"{server}/uploads/{doc['upload_id']}", timeout=10).json()["status"] == "pending"


def test_a_truncated_upload_stores_nothing(server: str) -> None:
    import socket
    from urllib.parse import urlparse

    doc = requests.post(f"{server}/uploads", params={"model": "churn"}, timeout=10).json()
    where = urlparse(server)
    with socket.create_connection((where.hostname, where.port)) as sock:
        sock.sendall(f"PUT {doc['url']} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + b"a,b\n" * 100)
    time.sleep(0.3)
    status = requests.get(f"{server}/uploads/{doc['upload_id']}", timeout=10).json()
    assert status["status"] == "pending"
    assert context.backends().datasets.list("_uploads/") == []
    assert list((context.settings().data_dir / "tmp").glob("body-*")) == []
    # the service still answers, and the upload can still be sent whole
    upload_doc = requests.put(f"{server}{doc['url']}", data=(HEADER + rows(3)).encode(), timeout=10)
    assert upload_doc.status_code == 200 and upload_doc.json()["status"] == "received"


def test_a_body_of_another_size_than_announced_is_refused(server: str) -> None:
    """size= announced 100 bytes: a body of another size is a 400 saying both, removed, and the
    upload waits for the whole file."""
    body = (HEADER + rows(20)).encode()
    doc = requests.post(f"{server}/uploads", params={"model": "churn", "size": 100}, timeout=10).json()
    sent = requests.put(f"{server}{doc['url']}", data=body, headers=doc["headers"], timeout=10)
    assert sent.status_code == 400, sent.text
    assert f"announced with size=100 bytes but {len(body)} arrived" in sent.json()["detail"]
    assert requests.get(f"{server}/uploads/{doc['upload_id']}", timeout=10).json()["status"] == "pending"
    assert context.backends().datasets.list("_uploads/") == []
    again = requests.put(f"{server}{doc['url']}", data=body[:100], headers=doc["headers"], timeout=10)
    assert again.status_code == 200 and again.json()["size"] == 100
