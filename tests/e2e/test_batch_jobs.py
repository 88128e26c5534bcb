"""Batch scoring jobs (``common/batch_jobs.py``) embedded over real HTTP: a file over 6 MB scored
in chunks equals /forward_batch on the same rows; bad requests and bad rows are clear errors and
leave no result; a worker SIGKILLed mid-chunk still gives every row exactly once."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from common import context
from common.batch_jobs import CHUNK, KIND, BatchJobs
from tests.lifecycle_data import churn_rows

HEADER = "tenure,charges,plan,region\n"


def body_of(n: int) -> bytes:
    plans, regions = ("basic", "plus", "premium"), ("north", "south")
    # long numbers: a file over 6 MB in fewer rows (a quicker test)
    return (HEADER + "".join(f"{1 + i % 71}.000000,{20 + (i * 37) % 10000 / 100:.12f},{plans[i % 3]},"
                             f"{regions[(i // 7) % 2]}\n" for i in range(n))).encode()


def trained(name: str = "churn") -> int:
    import pandas as pd

    life = context.lifecycle()
    life.create_model({"name": name, "task": "classification", "target": "churned"})
    life.add_frame(name, pd.DataFrame(churn_rows(200)))
    life.jobs = None
    return life.train_now(name, {"model_class": "logistic_regression", "deploy": "always"}).id


def expected(body: bytes, model: str = "churn") -> list[list[str]]:
    """/forward_batch's answer on the same rows, as result rows."""
    out = context.serving().forward_batch_upload(model, "csv", body)
    return [[str(i), str(p), *(repr(float(v)) for v in probs.values())]
            for i, (p, probs) in enumerate(zip(out["predictions"], out["probabilities"], strict=True))]


def labelled(n: int) -> bytes:
    rows = churn_rows(n, seed=7)
    return "".join(",".join(map(str, r)) + "\n" for r in [list(rows[0]), *(r.values() for r in rows)]).encode()


def rows_of(data: bytes) -> tuple[list[str], list[list[str]]]:
    got = list(csv.reader(io.StringIO(data.decode())))
    return got[0], got[1:]


def wait(base: str, job: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = requests.get(f"{base}{job['url']}", timeout=10).json()
        if got["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def upload(base: str, model: str, body: bytes) -> str:
    doc = requests.post(f"{base}/uploads", params={"model": model}, timeout=10).json()
    sent = requests.put(f"{base}{doc['url']}", data=body, headers=doc["headers"], timeout=60)
    assert sent.status_code == 200, sent.text
    return str(doc["upload_id"])


def serving(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, chunk_bytes: int,
            train: Callable[[], int]) -> str:
    """The live server with two task threads, chunks of ``chunk_bytes``, a model ``train``ed."""
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", str(chunk_bytes))
    monkeypatch.setenv("MLFN_JOB_POLL_SECONDS", "0.1")
    monkeypatch.setenv("MLFN_TASK_WORKERS", "2")
    base: str = request.getfixturevalue("live_server")
    train()
    return base


def received(jobs: BatchJobs, model: str, body: bytes) -> str:
    """An upload of ``body`` for ``model``, arrived (the service's own upload URL)."""
    upload_id = str(jobs.uploads.create(model, None, None)["upload_id"])
    jobs.uploads.receive(upload_id, None, body)
    return upload_id


def run_all(jobs: BatchJobs) -> None:
    """What a worker would do: every claimable task until none is left."""
    while tasks := jobs.claimable():
        for task in tasks:
            jobs.run(task)


@pytest.fixture
def server(embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch,
           request: pytest.FixtureRequest) -> str:
    monkeypatch.setenv("MLFN_MAX_BATCH_ROWS", "1000000")
    return serving(monkeypatch, request, 512 * 1024, trained)


def test_a_file_over_6mb_equals_forward_batch(server: str) -> None:
    body = body_of(165_000)
    assert len(body) > 6 * 1024 * 1024
    upload_id = upload(server, "churn", body)
    started = requests.post(f"{server}/batch_jobs", params={"model": "churn", "upload": upload_id},
                            timeout=10)
    assert started.status_code == 202, started.text
    assert started.headers["location"] == started.json()["url"]
    done = wait(server, started.json())
    assert done["status"] == "succeeded", done
    assert done["chunks_done"] == done["chunks_total"] >= 12
    assert done["rows"] == done["rows_done"] == 165_000 and done["rows_per_second"] > 0
    got = requests.get(f"{server}{done['result']['url']}", timeout=30)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    assert int(got.headers["content-length"]) == len(got.content) > 1024 * 1024  # streamed
    head = requests.head(f"{server}{done['result']['url']}", timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    header, rows = rows_of(got.content)
    assert header == ["row", "prediction", "probability_no", "probability_yes"]
    assert rows == expected(body)
    keys = context.backends().datasets.list("_batch/")
    assert keys == [f"_batch/{done['job_id']}/result.csv"]  # the chunk outputs are gone


def test_bad_requests_name_the_field(server: str) -> None:
    trained("other")

    def start(**query: Any) -> requests.Response:
        return requests.post(f"{server}/batch_jobs", params={"model": "churn", **query}, timeout=10)

    missing = start()
    assert missing.status_code == 400 and "'upload'" in missing.json()["detail"]
    unknown = start(upload="0" * 32)
    assert unknown.status_code == 404 and "'upload'" in unknown.json()["detail"], unknown.text
    theirs = start(upload=upload(server, "other", body_of(5)))
    assert theirs.status_code == 400 and "model 'other'" in theirs.json()["detail"]
    pending = requests.post(f"{server}/uploads", params={"model": "churn"}, timeout=10).json()
    early = start(upload=pending["upload_id"])
    assert early.status_code == 400 and "not arrived" in early.json()["detail"]
    wrong = start(upload=upload(server, "churn", body_of(5)), experiment=999)
    assert wrong.status_code == 404 and "'experiment'" in wrong.json()["detail"]
    nojob = requests.get(f"{server}/batch_jobs/{'a' * 32}", timeout=10)
    assert nojob.status_code == 404
    assert requests.get(f"{server}/batch_jobs/nope", timeout=10).status_code == 400
    assert context.backends().datasets.list("_batch/") == []


@pytest.mark.parametrize(("tail", "needle", "row"), [
    (b"3,abc,basic,north\n", "feature 'charges' (row 3000)", 3000),
    (b"3,4.5,basic\n", "row 3000 has 3 fields", 3000),
    (b"   \n", "row 3000 has 1 fields", 3000),  # a line of spaces is a row to csv: no blank
    (b"3,4.5,\xff\xfe,north\n", "not UTF-8 text (row 3000)", 3000),
    # a line break inside a quoted cell before the byte: rows, not lines, are counted
    (b'3,4.5,"ba\nsic",north\n3,4.5,\xe9,north\n', "not UTF-8 text (row 3001)", 3001),
])
def test_a_bad_row_fails_the_job_naming_it(server: str, tail: bytes, needle: str,
                                           row: int) -> None:
    body = body_of(3000) + tail + body_of(40_000)[len(HEADER):]
    job = requests.post(f"{server}/batch_jobs", timeout=10,
                        params={"model": "churn", "upload": upload(server, "churn", body)}).json()
    done = wait(server, job)
    assert done["status"] == "failed" and needle in done["error"], done
    assert done["row"] == row and "result" not in done
    assert requests.get(f"{server}{job['url']}/result", timeout=10).status_code == 409
    context.wait_for_jobs()
    assert context.backends().datasets.list("_batch/") == []


def test_a_retried_start_under_an_idempotency_key_starts_one_job(server: str) -> None:
    """A client that retries POST /uploads and POST /batch_jobs after a timeout, with the same
    Idempotency-Key, gets the first answer again: one upload, one job."""
    announce = [requests.post(f"{server}/uploads", params={"model": "churn"},
                              headers={"Idempotency-Key": "upload-march-1"},
                              timeout=10) for _ in range(2)]
    assert announce[0].status_code == announce[1].status_code == 201
    assert announce[1].headers.get("idempotent-replayed") == "true"
    upload_id = announce[0].json()["upload_id"]
    assert announce[1].json()["upload_id"] == upload_id
    sent = requests.put(f"{server}{announce[0].json()['url']}", data=body_of(50), timeout=10)
    assert sent.status_code == 200, sent.text
    params, key = {"model": "churn", "upload": upload_id}, {"Idempotency-Key": "score-march-1"}
    starts = [requests.post(f"{server}/batch_jobs", params=params, headers=key, timeout=10)
              for _ in range(2)]
    assert [r.status_code for r in starts] == [202, 202]
    assert starts[1].headers.get("idempotent-replayed") == "true"
    assert starts[1].json()["job_id"] == starts[0].json()["job_id"]
    assert [j["job_id"] for j in requests.get(f"{server}/batch_jobs", params={"model": "churn"},
                                              timeout=10).json()] == \
        [starts[0].json()["job_id"]]
    other = requests.post(f"{server}/batch_jobs", params={**params, "experiment": 1}, headers=key,
                          timeout=10)
    assert other.status_code == 422  # the key was used for another request
    assert wait(server, starts[0].json())["status"] == "succeeded"


def test_an_unknown_column_fails_the_plan(server: str) -> None:
    body = b"tenure,charges,plan,region,colour\n1,2.5,basic,north,red\n"
    job = requests.post(f"{server}/batch_jobs", timeout=10,
                        params={"model": "churn", "upload": upload(server, "churn", body)}).json()
    done = wait(server, job)
    assert done["status"] == "failed" and "unknown column 'colour'" in done["error"], done


WORKER = textwrap.dedent("""
    import sys, time
    from common import context
    from common.inference import onnx_model
    scores = onnx_model.OnnxModel.scores  # every scoring path runs it
    def slow(self, *args, **kwargs):
        print("scoring", flush=True)
        time.sleep(30)
        return scores(self, *args, **kwargs)
    onnx_model.OnnxModel.scores = slow
    context.batch_jobs().run({"task": "batch_chunk", "id": sys.argv[1]})
""")


def test_a_worker_killed_mid_chunk(embedded: Callable[[], None],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "2000")
    monkeypatch.setenv("MLFN_JOB_LEASE_SECONDS", "1.5")
    monkeypatch.setenv("MLFN_JOB_HEARTBEAT_SECONDS", "0.2")
    monkeypatch.setenv("MLFN_MAX_BATCH_ROWS", "1000000")
    context.reset()
    trained()
    body = body_of(600)
    uploads = context.ingestions().uploads
    doc = uploads.create("churn", None, "f.csv")
    uploads.receive(doc["upload_id"], None, body)
    jobs: BatchJobs = context.batch_jobs()
    job_id = jobs.start("churn", doc["upload_id"], None)["job_id"]
    jobs.run_job(job_id)  # the plan
    chunks = sorted(r.id for r in jobs.records.with_status(CHUNK, ("queued",)))
    assert len(chunks) > 5
    victim = chunks[2]
    for chunk in chunks[:2]:
        jobs.run_chunk(chunk)
    worker = subprocess.Popen([sys.executable, "-c", WORKER, victim], env=os.environ.copy(),
                              stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    try:
        assert worker.stdout is not None
        while (line := worker.stdout.readline()) and line.strip() != b"scoring":
            pass  # EMF lines; then the worker holds the chunk, mid-scoring
        assert line.strip() == b"scoring"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert jobs.records.get(CHUNK, victim).status == "running"
    for chunk in chunks[3:]:
        jobs.run_chunk(chunk)
    assert jobs.records.get(KIND, job_id).status == "scoring"  # waits for the killed chunk
    time.sleep(1.6)  # its lease lapses: the next worker scores it again
    assert {"task": "batch_chunk", "id": victim} in jobs.claimable()
    assert jobs.run_chunk(victim).doc["attempts"] == 2
    assert jobs.records.get(KIND, job_id).doc["phase"] == "assemble"
    done = jobs.run_job(job_id)
    assert done.status == "succeeded", done.doc
    _, rows = rows_of(context.backends().datasets.get(done.doc["result_key"]))
    assert [r[0] for r in rows] == [str(i) for i in range(600)]  # every row exactly once
    assert rows == expected(body)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 30, 10_000])
def test_chunks_end_at_row_boundaries(chunk_bytes: int) -> None:
    from common.batch_jobs import plan_chunks

    body = (b'a,b\r\n1,"two\nlines"\r\n\r\n3,"x,""y"""\n\n4,"\n"\n5,6')  # no final line break
    renewed: list[int] = []
    header, chunks = plan_chunks(io.BytesIO(body), chunk_bytes, lambda: renewed.append(1))
    assert header == b"a,b\r\n"
    assert len(chunks) - 1 <= len(renewed) <= len(chunks)  # the lease, between chunks
    assert chunks[0]["start"] == len(header) and chunks[-1]["end"] == len(body)
    assert all(a["end"] == b["start"] for a, b in zip(chunks, chunks[1:], strict=False))
    rows = []
    for c in chunks:
        got = [r for r in csv.reader(io.StringIO(body[c["start"]:c["end"]].decode(), newline="")) if r]
        assert len(got) == c["rows"] and c["first_row"] == len(rows)
        rows += got
    assert rows == [["1", "two\nlines"], ["3", 'x,"y"'], ["4", "\n"], ["5", "6"]]
    if chunk_bytes == 1:
        assert len(chunks) == 4  # one row each


@pytest.mark.parametrize("seed", range(12))
def test_chunk_plan_counts_rows_as_csv_reads_them(seed: int) -> None:
    """Random files mixing plain blocks (counted at once) and the rest (csv's state machine):
    quoted cells over line breaks, quotes inside unquoted cells (an inch mark: a plain
    character to csv), empty and whitespace-only lines, CRLF, lone CRs ending rows, with or
    without a final line break: every chunk holds the rows csv reads in it, in order, none
    twice."""
    import random

    from common.batch_jobs import plan_chunks

    rng = random.Random(seed)
    pieces = [b"1,2\n", b"3,4\r\n", b"\n", b"  \n", b"\t\r\n", b" 5,6\n", b"\x0b7,8\n",
              b'9,"a\nb"\n', b'"x ""q"" y",1\n', b'"\n\n",2\r\n', b"10,11\n",
              b'4" screen,2\n', b'"a"b,1\n', b"5,6\r", b"\r", b"7,8\r\r\n", b'"c\rd",3\n']
    if seed % 2:
        weights = [30, 10, 3, 3, 2, 3, 1, 2, 2, 1, 30, 2, 1, 2, 1, 1, 1]
    else:  # mostly plain: blocks NumPy counts
        weights = [40, 5, 2, 2, 1, 2, 1, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0]
    body = b"a,b\n" + b"".join(rng.choices(pieces, weights, k=rng.randint(1, 400)))
    if seed % 3 == 0:
        body = body.rstrip(b"\r\n") + b"\n12,13"  # no final line break
    if seed % 4 == 3:
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r")  # classic Mac line ends
    want = [r for r in csv.reader(io.StringIO(body.decode(), newline="")) if r][1:]
    for chunk_bytes in (1, 13, 64, 500, 1 << 20):
        header, chunks = plan_chunks(io.BytesIO(body), chunk_bytes)
        assert header == (b"a,b\r" if seed % 4 == 3 else b"a,b\n")
        assert chunks[0]["start"] == len(header) and chunks[-1]["end"] == len(body)
        got = []
        for a, b in zip(chunks, chunks[1:], strict=False):
            assert a["end"] == b["start"]
        for c in chunks:
            rows = [r for r in csv.reader(io.StringIO(body[c["start"]:c["end"]].decode(),
                                                      newline="")) if r]
            assert len(rows) == c["rows"] > 0 and c["first_row"] == len(got), (chunk_bytes, c)
            got += rows
        assert got == want, chunk_bytes


SCORE_WORKER = """
import json, sys
sys.path.insert(0, {root!r})
from common import context
from functions.score_worker import handler
from infra.local.worker import sqs_event
uploads = context.batch_jobs().uploads
doc = uploads.create("iris", None, None)
uploads.receive(doc["upload_id"], None, {body!r})
job = context.batch_jobs().start("iris", doc["upload_id"], None)["job_id"]
def deliver(task):
    msg = {{"MessageId": "m", "ReceiptHandle": "r", "Body": json.dumps(task)}}
    out = handler.handler(sqs_event([msg], "arn:aws:sqs:us-east-1:123456789012:batch"), None)
    assert out == {{"batchItemFailures": []}}, out
deliver({{"task": "batch_job", "id": job}})
for i in range(context.batch_jobs().get(job).doc["chunks_total"]):
    deliver({{"task": "batch_chunk", "id": f"{{job}}-{{i:06d}}"}})
deliver({{"task": "batch_job", "id": job}})
assert context.batch_jobs().status(job)["status"] == "succeeded"
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "pandas", "scipy", "catboost", "skl2onnx", "pyarrow", "fastapi", "starlette", "grpc"))
print(json.dumps(heavy))
"""


def test_the_score_worker_imports_no_training_library(demo_env: Path) -> None:
    """The score worker runs on the ONNX layer: plan, chunks and assembly without pandas."""
    body = b"sepal_length,sepal_width,petal_length,petal_width\n" + b"5.1,3.5,1.4,0.2\n" * 300
    script = SCORE_WORKER.format(root=str(Path(__file__).resolve().parents[2]), body=body)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={"MLFN_DATA_DIR": str(demo_env), "PATH": "/usr/bin:/bin",
                              "MLFN_TASK_WORKERS": "0", "MLFN_BATCH_CHUNK_BYTES": "1000"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


TRICKY = [  # each takes csv's path (or NumPy's reader declines it) and must score the same
    b"5,,basic,north\n12.5,30,,south\n",  # empty cells
    b'5,30,"basic",north\n6,"3,0e1",plus,"south"\n',  # quotes (a comma in a quoted number)
    b"5,30,basic,north\r\n6,31,plus,south\r\n",  # CRLF (NumPy's reader takes it)
    b"1_000,30,basic,north\n 7 ,31 ,plus,south\n",  # what float() reads, with spaces
    b"nan,30,basic,north\n5,inf,plus,south\n",  # NaN and inf: the value-by-value checks
    b"5,30,#basic,north\n",  # a comment character is a plain cell
    b"5,30,basic,north\n   \n6,31,plus,south\n",  # a line of spaces between rows
    b"5,30,basic,north\r6,31,plus,south\r\r\n7,32,basic,south\n",  # lone CRs end rows too
    b'5,30,basic,north 4" east\n6,31,plus,south\n',  # an inch mark: a plain character
]


def scored_in_process(body: bytes) -> BatchJobs:
    """A batch job of churn on an upload of ``body``, run to its end by this process."""
    jobs: BatchJobs = context.batch_jobs()
    jobs.start("churn", received(jobs, "churn", body), None)
    context.wait_for_jobs()
    return jobs


@pytest.mark.parametrize("rows", TRICKY)
def test_a_chunk_with_unusual_cells_scores_as_forward_batch(embedded: Callable[[], None],
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            rows: bytes) -> None:
    """Plain chunks are read by NumPy's C reader, the others by csv; every chunk's result
    equals /forward_batch on the same rows (or the job fails as /forward_batch does)."""
    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "2000")
    context.reset()
    trained()
    body = body_of(100) + rows + body_of(100)[len(HEADER):]
    jobs = scored_in_process(body)
    try:
        want = expected(body)
    except Exception as exc:  # /forward_batch refuses these rows: so does the job
        (job,) = jobs.records.with_status(KIND, ("failed",))
        assert str(getattr(exc, "detail", exc)) in job.doc["error"], job.doc
        return
    (job,) = jobs.records.with_status(KIND, ("succeeded",))
    assert job.doc["chunks_total"] > 3
    _, got = rows_of(context.backends().datasets.get(job.doc["result_key"]))
    assert got == want


def test_a_file_with_classic_mac_line_ends_scores_as_forward_batch(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV whose lines end with a lone CR (Excel's "CSV (Macintosh)"): read as csv reads it,
    in several chunks (a block ends at a CR too), equal to /forward_batch on the same rows."""
    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "2000")
    context.reset()
    trained()
    body = body_of(500).replace(b"\n", b"\r")
    jobs = scored_in_process(body)
    (job,) = jobs.records.with_status(KIND, ("succeeded",))
    assert job.doc["chunks_total"] >= 10 and job.doc["rows"] == 500
    _, got = rows_of(context.backends().datasets.get(job.doc["result_key"]))
    assert got == expected(body)


def test_a_regression_and_quoted_labels_score_as_forward_batch(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """The result's text: regression values, and class labels that need quoting in CSV."""
    import pandas as pd

    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "2000")
    context.reset()
    life = context.lifecycle()
    life.jobs = None
    frame = pd.DataFrame(churn_rows(200))
    frame["churned"] = frame["churned"].map({"yes": 'yes, "left"', "no": "no"})
    life.create_model({"name": "quoted", "task": "classification", "target": "churned"})
    life.add_frame("quoted", frame)
    life.train_now("quoted", {"model_class": "random_forest", "deploy": "always",
                              "hyperparameters": {"n_estimators": 5}})
    life.create_model({"name": "charges", "task": "regression", "target": "charges"})
    life.add_frame("charges", frame.drop(columns=["churned"]))
    life.train_now("charges", {"model_class": "random_forest", "deploy": "always",
                               "hyperparameters": {"n_estimators": 5}})
    uploads = context.ingestions().uploads
    jobs: BatchJobs = context.batch_jobs()
    body = body_of(300)
    regression = b"tenure,plan,region\n" + b"".join(
        f"{1 + i % 71},{('basic', 'plus')[i % 2]},north\n".encode() for i in range(300))
    for model, data in (("quoted", body), ("charges", regression)):
        doc = uploads.create(model, None, None)
        uploads.receive(doc["upload_id"], None, data)
        jobs.start(model, doc["upload_id"], None)
    context.wait_for_jobs()
    done = {j.doc["model"]: j for j in jobs.records.with_status(KIND, ("succeeded",))}
    header, got = rows_of(context.backends().datasets.get(done["quoted"].doc["result_key"]))
    assert header == ["row", "prediction", "probability_no", 'probability_yes, "left"']
    assert got == expected(body, "quoted")
    assert any(r[1] == 'yes, "left"' for r in got)
    header, got = rows_of(context.backends().datasets.get(done["charges"].doc["result_key"]))
    out = context.serving().forward_batch_upload("charges", "csv", regression)
    assert header == ["row", "prediction"]
    assert got == [[str(i), repr(float(v))] for i, v in enumerate(out["predictions"])]


def test_float_texts_are_repr_whether_values_repeat_or_not() -> None:
    import numpy as np

    from common.batch_jobs import _float_texts

    repeated = np.array([0.0, -0.0, 0.5, 1 / 3, 0.5, -0.0, 1 / 3, 0.0, 0.5, 0.5] * 10)
    unique = np.random.default_rng(0).random(100)
    for values in (repeated, unique, repeated.reshape(10, 10).T[0], np.array([])):
        assert _float_texts(values) == [repr(v) for v in values.tolist()]


def test_numpys_reader_takes_plain_chunks_only() -> None:
    """The fast reader gives the feeds csv's path gives on a plain chunk, and declines the
    chunks it could read differently from csv (csv's path then decides)."""
    from common.batch_jobs import _fast_feeds, _plain_feeds
    from common.domain import Feature

    features = [Feature.model_validate({"name": n, "kind": k}) for n, k in
                (("tenure", "numeric"), ("charges", "numeric"), ("plan", "categorical"),
                 ("region", "categorical"))]
    header = HEADER.strip().split(",")
    text = body_of(50)[len(HEADER):]
    fast = _fast_feeds(features, header, text, 50)
    plain = _plain_feeds(features, header, [r for r in csv.reader(io.StringIO(text.decode())) if r])
    assert fast is not None and plain is not None and fast.keys() == plain.keys()
    for name in fast:
        assert fast[name].dtype == plain[name].dtype and (fast[name] == plain[name]).all()
    assert _fast_feeds(features, header, text, 49) is None  # the plan counted another number
    declined = [r for r in TRICKY if b"\r\n" not in r and b"#" not in r]
    assert len(declined) == 6
    for rows in declined:
        assert _fast_feeds(features, header, text + rows, 50 + rows.count(b"\n")) is None
    taken = _fast_feeds(features, header, b"5,30,#basic,north\r\n", 1)  # plain cells, CRLF
    assert taken is not None and taken["plan"].tolist() == [["#basic"]]
    assert taken["region"].tolist() == [["north"]]
    exponent = _fast_feeds(features, header, b"1e3,30.5,basic,north\n", 1)  # not plain_columns'
    assert exponent is not None and exponent["tenure"].tolist() == [[1000.0]]  # but loadtxt's
    for stripped in b"\x1c\x1d\x1e\x1f":  # loadtxt would read 1e3 around them; float() not
        assert _fast_feeds(features, header, b"1e3" + bytes([stripped]) + b",30,basic,north\n",
                           1) is None
    long = b"x" * (csv.field_size_limit() + 1)  # a cell csv refuses, on loadtxt's path too
    assert _fast_feeds(features, header, b"1e3,30," + long + b",north\n", 1) is None
    assert _fast_feeds(features, header, text + b"5,1e39,basic,north\n", 51) is None  # > float32


def test_chunks_wait_until_the_plan_is_recorded(embedded: Callable[[], None],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan records its chunks one by one, then the job's columns: a worker polling in
    between neither lists nor scores a chunk (it used to, and failed it for want of columns)."""
    from common.errors import Conflict

    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "2000")
    context.reset()
    trained()
    uploads = context.ingestions().uploads
    doc = uploads.create("churn", None, None)
    body = body_of(300)
    uploads.receive(doc["upload_id"], None, body)
    jobs: BatchJobs = context.batch_jobs()
    job_id = jobs.start("churn", doc["upload_id"], None)["job_id"]
    create, seen = jobs.records.create, []

    def create_and_poll(kind: str, record_id: str, doc: dict[str, Any], **kw: Any) -> Any:
        created = create(kind, record_id, doc, **kw)
        if kind == CHUNK:  # another worker looks now, mid-plan
            assert {"task": "batch_chunk", "id": record_id} not in jobs.claimable()
            with pytest.raises(Conflict, match="still being planned"):
                jobs.run_chunk(record_id)
            assert jobs.records.get(CHUNK, record_id).doc["attempts"] == 0
            seen.append(record_id)
        return created

    monkeypatch.setattr(jobs.records, "create", create_and_poll)
    jobs.run_job(job_id)
    assert len(seen) > 3
    assert {"task": "batch_chunk", "id": seen[0]} in jobs.claimable()  # planned: now it runs
    context.wait_for_jobs()
    done = jobs.records.get(KIND, job_id)
    assert done.status == "succeeded", done.doc
    assert rows_of(context.backends().datasets.get(done.doc["result_key"]))[1] == expected(body)


def test_an_upload_a_batch_job_reads_is_neither_ingested_nor_expired_under_it(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingesting an upload removes its file: while a batch job has not ended, an ingestion of
    its upload is refused (409 naming the job) and the expiry keeps the upload; once the job
    has ended (here: failed) the ingestion goes ahead, and a later batch job on the upload is
    refused without leaving a job record."""
    from common.errors import Conflict
    from common.uploads import Uploads

    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "2000")
    monkeypatch.setenv("MLFN_UPLOAD_EXPIRY_SECONDS", "60")
    context.reset()
    trained()
    ingestions, jobs = context.ingestions(), context.batch_jobs()
    upload_id = ingestions.uploads.create("churn", None, None)["upload_id"]
    body = labelled(300)  # a labelled file: ingested fine, refused by scoring (the target)
    ingestions.uploads.receive(upload_id, None, body)
    job_id = jobs.start("churn", upload_id, None)["job_id"]
    with pytest.raises(Conflict, match=f"being scored by batch job {job_id}"):
        ingestions.start("churn", upload_id)
    assert ingestions.records.with_status("ingestion", ("new", "queued")) == []
    key = Uploads(context.backends()).get(upload_id).doc["key"]
    far = time.time() + 3600  # long past the upload's expiry: the job still holds it
    assert Uploads(context.backends()).expire(now=far) == []
    assert context.backends().datasets.exists(key)
    run_all(jobs)
    done = jobs.records.get(KIND, job_id)
    assert done.status == "failed" and "'churned' is the model's target" in done.doc["error"]
    taken = ingestions.start("churn", upload_id)  # the job has ended: the upload is free
    assert ingestions.run(taken["ingestion_id"]).doc["rows_added"] == 300
    with pytest.raises(Conflict, match="was ingested by ingestion .*upload the file again to score it"):
        jobs.start("churn", upload_id, None)
    assert [r.id for r in jobs.records.with_status(KIND, ("queued", "running", "scoring",
                                                          "succeeded", "failed"))] == [job_id]


def test_an_ingestion_taking_the_upload_as_a_job_starts_wins_cleanly(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """The race itself: an ingestion takes the upload after the job's record is written but
    before the job is noted on the upload. The job is refused (409) and its record removed;
    the ingestion keeps the upload."""
    from common.errors import Conflict

    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    context.reset()
    trained()
    ingestions, jobs = context.ingestions(), context.batch_jobs()
    upload_id = ingestions.uploads.create("churn", None, None)["upload_id"]
    ingestions.uploads.receive(upload_id, None, labelled(50))
    create, taken = jobs.records.create, []

    def create_then_ingest(kind: str, record_id: str, doc: dict[str, Any], **kw: Any) -> Any:
        created = create(kind, record_id, doc, **kw)
        if kind == KIND:
            # not claimable before its upload holds it: no worker plans it meanwhile
            assert {"task": "batch_job", "id": record_id} not in jobs.claimable()
            assert jobs.status(record_id)["status"] == "queued"
            taken.append(ingestions.start("churn", upload_id)["ingestion_id"])
        return created

    monkeypatch.setattr(jobs.records, "create", create_then_ingest)
    with pytest.raises(Conflict, match="is being ingested by ingestion .* if that ingestion fails, the upload can be scored"):
        jobs.start("churn", upload_id, None)
    assert len(taken) == 1
    assert jobs.records.with_status(KIND, ("queued", "running", "scoring")) == []
    assert ingestions.run(taken[0]).doc["rows_added"] == 50


# -- zips of images ----------------------------------------------------------------------------
DIGITS = {"name": "digits", "task": "classification", "input": "image", "image_size": 8}


def trained_images() -> int:
    from common.demo import digits_archive

    life = context.lifecycle()
    life.create_model(dict(DIGITS))
    life.add_images("digits", digits_archive(range(300)))
    life.jobs = None
    return life.train_now("digits", {"model_class": "logistic_regression", "deploy": "always"}).id


def images_zip(indices: range, extra: list[tuple[str, bytes]] | None = None,
               labels: bytes = b"filename,label\n") -> bytes:
    """Digits in nested folders and at the top, with files a batch job skips (a labels.csv,
    a hidden file, a folder entry), and ``extra`` entries at the middle."""
    from common.demo import digits_png

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("scans/", b"")
        archive.writestr("labels.csv", labels)
        archive.writestr(".DS_Store", b"\0" * 40)
        for n, i in enumerate(indices):
            if extra and n == len(indices) // 2:
                for name, data in extra:
                    archive.writestr(name, data)
            archive.writestr(f"scans/{i % 3}/d,{i}.png" if i % 2 else f"top_{i}.png", digits_png(i))
    return buf.getvalue()


def expected_images(body: bytes, classes: list[str]) -> list[list[str]]:
    """/forward_batch's answer on the same zip, as result rows (its probabilities come most
    probable first: here in the model's class order)."""
    out = context.serving().forward_batch_upload("digits", "zip", body)
    return [[str(i), name, str(p), *(repr(float(probs[c])) for c in classes)]
            for i, (name, p, probs) in enumerate(zip(out["files"], out["predictions"],
                                                     out["probabilities"], strict=True))]


@pytest.fixture
def image_server(embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch,
                 request: pytest.FixtureRequest) -> str:
    return serving(monkeypatch, request, 20_000, trained_images)  # ~100 digits a chunk


def test_a_zip_of_images_equals_forward_batch(image_server: str) -> None:
    body = images_zip(range(300, 1500))
    started = requests.post(f"{image_server}/batch_jobs", timeout=10,
                            params={"model": "digits", "upload": upload(image_server, "digits", body)})
    assert started.status_code == 202, started.text
    done = wait(image_server, started.json())
    assert done["status"] == "succeeded", done
    assert done["rows"] == done["rows_done"] == 1200 and done["chunks_total"] >= 8, done
    got = requests.get(f"{image_server}{done['result']['url']}", timeout=30)
    header, rows = rows_of(got.content)
    assert header[:3] == ["row", "file", "prediction"] and len(header) == 13
    classes = [name.removeprefix("probability_") for name in header[3:]]
    assert classes == [str(d) for d in range(10)]
    assert rows == expected_images(body, classes)
    assert rows[1][1] == "scans/1/d,301.png"  # a name with a comma: quoted in the CSV
    assert context.backends().datasets.list("_batch/") == [f"_batch/{done['job_id']}/result.csv"]


@pytest.mark.parametrize(("extra", "needle"), [
    ([("7/broken.png", b"not a png")], "7/broken.png: not a decodable image"),
    ([("notes.txt", b"hello")], "archive entry 'notes.txt' is not an image file"),
    ([], "labels.csv must start with the header 'filename,label'"),
])
def test_a_bad_entry_fails_the_image_job_naming_it(image_server: str, extra: list[tuple[str, bytes]],
                                                    needle: str) -> None:
    body = images_zip(range(300, 800), extra) if extra else images_zip(range(300, 800),
                                                                       labels=b"name;label\n")
    job = requests.post(f"{image_server}/batch_jobs", timeout=10,
                        params={"model": "digits", "upload": upload(image_server, "digits", body)})
    done = wait(image_server, job.json())
    assert done["status"] == "failed" and needle in done["error"], done
    # the broken image is the 251st (skipped files not counted); a plan error names no row
    assert done.get("row") == (250 if "decodable" in needle else None), done
    assert requests.get(f"{image_server}{done['url']}/result", timeout=10).status_code == 409
    assert context.backends().datasets.list("_batch/") == []


def test_the_wrong_kind_of_file_is_refused_at_the_request(image_server: str) -> None:
    trained()
    for model, body, needle in (
            ("digits", body_of(20), "is not a zip archive; model 'digits' takes images"),
            ("churn", images_zip(range(5)), "is a zip archive; model 'churn' is tabular")):
        refused = requests.post(f"{image_server}/batch_jobs", timeout=10, params={
            "model": model, "upload": upload(image_server, model, body)})
        assert refused.status_code == 400 and needle in refused.json()["detail"], refused.text
        assert "query parameter 'upload'" in refused.json()["detail"]
    assert context.batch_jobs().records.with_status(KIND, ("new", "queued", "failed")) == []


def test_image_chunks_hold_a_bounded_number_of_images() -> None:
    from common.batch_jobs import plan_image_chunks

    assert plan_image_chunks([], 100, 5) == []
    assert plan_image_chunks([60, 60, 60], 100, 5) == [{"first_row": 0, "rows": 2},
                                                       {"first_row": 2, "rows": 1}]
    chunks = plan_image_chunks([1] * 12, 100, 5)
    assert [c["rows"] for c in chunks] == [5, 5, 2]
    assert [c["first_row"] for c in chunks] == [0, 5, 10]


def test_list_and_cancel(embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch,
                         request: pytest.FixtureRequest) -> None:
    """GET /batch_jobs?model= lists the model's jobs newest first; POST .../cancel stops one
    mid-scoring: no result, no chunk outputs, its upload free again; a job that ended is a 409."""
    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")  # the test runs the tasks itself
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "2000")
    base: str = request.getfixturevalue("live_server")
    trained()
    trained("other")
    jobs = context.batch_jobs()
    upload_id = upload(base, "churn", body_of(300))

    def start() -> dict[str, Any]:
        started = requests.post(f"{base}/batch_jobs", params={"model": "churn", "upload": upload_id},
                                timeout=10)
        assert started.status_code == 202, started.text
        return started.json()

    first, second = start(), start()
    status = requests.get(f"{base}/uploads/{upload_id}", timeout=10).json()
    assert status["status"] == "received" and status["batch_jobs"] == [first["job_id"], second["job_id"]]
    theirs = requests.get(f"{base}/batch_jobs/{first['job_id']}", params={"model": "other"}, timeout=10)
    assert theirs.status_code == 404 and "belongs to model 'churn'" in theirs.json()["detail"]
    listed = requests.get(f"{base}/batch_jobs", params={"model": "churn"}, timeout=10)
    assert listed.status_code == 200
    assert [j["job_id"] for j in listed.json()] == [second["job_id"], first["job_id"]]
    assert requests.get(f"{base}/batch_jobs", params={"model": "other"}, timeout=10).json() == []
    assert requests.get(f"{base}/batch_jobs", params={"model": "nope"}, timeout=10).status_code == 404
    assert requests.get(f"{base}/batch_jobs", timeout=10).status_code == 400

    jobs.run_job(first["job_id"])  # planned: its chunks are queued
    chunks = [t for t in jobs.claimable() if t["task"] == "batch_chunk"]
    assert len(chunks) > 3
    jobs.run(chunks[0])  # one chunk scored, its output stored
    assert context.backends().datasets.list(f"_batch/{first['job_id']}/chunks/")
    cancelled = requests.post(f"{base}/batch_jobs/{first['job_id']}/cancel", timeout=10)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "failed" and cancelled.json()["cancelled"] is True
    assert "cancelled by POST" in cancelled.json()["error"]
    for task in chunks[1:]:
        jobs.run(task)  # the workers find the job ended: nothing scored, nothing stored
    assert context.backends().datasets.list(f"_batch/{first['job_id']}/") == []
    again = requests.post(f"{base}/batch_jobs/{first['job_id']}/cancel", timeout=10)
    assert again.status_code == 200 and again.json()["cancelled"] is True

    run_all(jobs)  # the second job runs to its end
    assert jobs.status(second["job_id"])["status"] == "succeeded"
    late = requests.post(f"{base}/batch_jobs/{second['job_id']}/cancel", timeout=10)
    assert late.status_code == 409 and "succeeded before it could be cancelled" in late.json()["detail"]
    assert requests.post(f"{base}/batch_jobs/{'f' * 32}/cancel", timeout=10).status_code == 404
    assert "batch_jobs" not in requests.get(f"{base}/uploads/{upload_id}", timeout=10).json()
    taken = requests.put(f"{base}/add_data", params={"model": "churn", "upload": upload_id}, timeout=10)
    assert taken.status_code == 202, taken.text  # no job holds the upload any more


def test_result_cells_with_line_breaks_and_quotes_read_back() -> None:
    import numpy as np

    from common.batch_jobs import _csv_cell, output_rows
    from common.inference.onnx_model import Scores

    names = ["x\ny.png", "a\rb.png", 'q"uote,comma.png', "plain.png"]
    scores = Scores(probabilities=np.array([[0.25, 0.75]] * 4), labels=["no", "yes\n2"] * 2)
    text = output_rows(7, scores, ["no", "yes\n2"], names)
    got = list(csv.reader(io.StringIO(text, newline="")))
    assert [row[:3] for row in got] == [["7", names[0], "no"], ["8", names[1], "yes\n2"],
                                       ["9", names[2], "no"], ["10", names[3], "yes\n2"]]
    assert _csv_cell("plain") == "plain" and _csv_cell("a\r\nb") == '"a\r\nb"'


def test_a_store_timeout_retries_the_chunk(embedded: Callable[[], None],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's timeouts are OSErrors, which zipfile reads as damage: a ranged read that
    fails is retried as an outage instead of failing the job as a corrupt archive. And one
    process reads and checks the central directory once, not once per chunk."""
    from common import archives
    from common.storage import ranged

    monkeypatch.setattr(ranged, "BUFFER_BYTES", 4096)  # reads that reach the store mid-chunk
    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "10000")
    context.reset()
    trained_images()
    jobs = context.batch_jobs()
    body = images_zip(range(300, 700))
    upload_id = received(jobs, "digits", body)
    job_id = jobs.start("digits", upload_id, None)["job_id"]
    parsed = []
    image_entries = archives.image_entries
    monkeypatch.setattr(archives, "image_entries", lambda *a: parsed.append(1) or image_entries(*a))
    jobs.run_job(job_id)  # the plan
    read_range, failures = jobs.objects.read_range, []

    def flaky(key: str, start: int, end: int) -> bytes:
        if key.startswith("_uploads/") and len(failures) < 2:
            failures.append((start, end))
            raise OSError("Read timeout on endpoint URL")  # what botocore raises
        return read_range(key, start, end)

    monkeypatch.setattr(jobs.objects, "read_range", flaky)
    run_all(jobs)
    done = jobs.status(job_id)
    assert done["status"] == "succeeded", done
    assert len(failures) == 2 and done["chunks_total"] >= 5 and len(parsed) == 1
    header, rows = rows_of(context.backends().datasets.get(f"_batch/{job_id}/result.csv"))
    assert rows == expected_images(body, [c.removeprefix("probability_") for c in header[3:]])


def test_the_collector_and_a_starting_job_do_not_both_win(
        embedded: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """gc lists an expired upload, a batch job notes itself on it, then gc comes to remove it:
    the removal is a compare-and-set, the job's note wins and the upload stays. A job that ends
    after the upload's expiry leaves it another full expiry."""
    from common.uploads import Uploads

    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    monkeypatch.setenv("MLFN_UPLOAD_EXPIRY_SECONDS", "60")
    context.reset()
    trained()
    jobs = context.batch_jobs()
    upload_id = received(jobs, "churn", body_of(50))
    collector = Uploads(context.backends())
    listing = collector.records.with_status
    job: dict[str, Any] = {}

    def listed_then_held(kind: str, statuses: Any) -> Any:
        records = listing(kind, statuses)
        if kind == "upload" and not job:
            job.update(jobs.start("churn", upload_id, None))  # commits after the listing
        return records

    monkeypatch.setattr(collector.records, "with_status", listed_then_held)
    # gc's clock is past the expiry (the job started just before it, gc runs just after)
    assert collector.expire(now=time.time() + 120) == []
    record = collector.records.get("upload", upload_id)
    assert context.backends().datasets.exists(record.doc["key"])
    # the job outlives the upload's expiry (counted from its start)
    collector.records.update(record, {**record.doc, "expires_at": time.time() + 1})
    run_all(jobs)
    assert jobs.status(job["job_id"])["status"] == "succeeded"
    after = collector.records.get("upload", upload_id).doc
    assert after["batch_jobs"] == []  # the ended job's note is gone
    assert after["expires_at"] > time.time() + 50  # a full expiry from the job's end
    assert after["record_expires"] == int(after["expires_at"]) + 86_400


def test_a_chunk_whose_job_is_gone_does_not_stop_the_pool(embedded: Callable[[], None],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk record left without its job (its record expired first) is failed when a worker
    comes to it, and the other jobs' tasks behind it still run."""
    from common.tasks import TaskPool

    monkeypatch.setenv("MLFN_TASK_WORKERS", "0")
    monkeypatch.setenv("MLFN_BATCH_CHUNK_BYTES", "2000")
    context.reset()
    trained()
    jobs = context.batch_jobs()
    ids = []
    for _ in range(2):
        upload_id = received(jobs, "churn", body_of(100))
        ids.append(jobs.start("churn", upload_id, None)["job_id"])
        jobs.run_job(ids[-1])  # planned
    jobs.records.delete(KIND, ids[0])  # the first job's record is gone, its chunks are not
    stray = [t for t in jobs.claimable() if t["id"].startswith(ids[0])]
    assert stray
    pool = TaskPool(jobs.claimable, jobs.run, workers=0, poll=0.1)
    pool.join()
    assert jobs.status(ids[1])["status"] == "succeeded"
    assert {jobs.records.get(CHUNK, t["id"]).status for t in stray} == {"failed"}
    assert not [t for t in jobs.claimable() if t["id"].startswith(ids[0])]
