"""Deleting a model or an experiment that uploads, ingestions and batch jobs use: refused (409,
nothing deleted) while such work has not ended; afterwards a deleted model's uploads,
ingestions and batch jobs (results included) go with it, so that a model created again under
the name starts empty. On each experiment store (DynamoDB with S3 on the moto server)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from common import context
from common.batch_jobs import KIND, PREFIX, BatchJobs
from common.errors import Conflict, NotFound
from common.ingestion import Ingestions
from common.uploads import Uploads
from tests.e2e.test_batch_jobs import body_of, run_all, trained

LABELLED = "tenure,charges,plan,region,churned\n" + "".join(
    f"{i % 72},{20 + (i * 7) % 90}.5,{('basic', 'premium')[i % 2]},{('north', 'south')[i % 3 // 2]},"
    f"{('yes', 'no')[(i // 3) % 2]}\n" for i in range(300))


def received(jobs: BatchJobs, model: str, body: bytes) -> str:
    """An upload of ``body`` for ``model``, arrived: PUT to its presigned URL on S3, else
    received as the service's own upload URL receives it."""
    doc = jobs.uploads.create(model, None, None)
    if doc["url"].startswith("http"):
        assert requests.put(doc["url"], data=body, headers=doc["headers"], timeout=30).ok
        assert jobs.uploads.status(doc["upload_id"])["status"] == "received"
    else:
        jobs.uploads.receive(doc["upload_id"], None, body)
    return str(doc["upload_id"])


def outputs(jobs: BatchJobs, job_id: str) -> list[str]:
    return list(jobs.objects.list(f"{PREFIX}{job_id}/"))


def test_a_batch_job_or_an_ingestion_that_has_not_ended_keeps_its_model(any_store: str) -> None:
    trained()
    life, backends = context.lifecycle(), context.backends()
    jobs, ingestions = BatchJobs(backends, None), Ingestions(backends, None)
    job = jobs.start("churn", received(jobs, "churn", body_of(500)), None)  # queued, not run
    with pytest.raises(Conflict, match=f"unfinished batch job, {job['job_id']}"):
        life.delete_model("churn")
    assert jobs.get(job["job_id"]).status == "queued"  # nothing was deleted
    assert context.backends().experiments.get_model("churn").dataset_version == 1

    run_all(jobs)
    done = jobs.status(job["job_id"])
    assert done["status"] == "succeeded" and outputs(jobs, job["job_id"])
    ingestion = ingestions.start("churn", received(jobs, "churn", LABELLED.encode()))
    with pytest.raises(Conflict, match=f"unfinished ingestion, {ingestion['ingestion_id']}"):
        life.delete_model("churn")
    ran = ingestions.run(ingestion["ingestion_id"])
    assert ran.status == "succeeded", ran.doc.get("error")
    pending = jobs.uploads.create("churn", None, None)["upload_id"]  # never sent
    kept = received(jobs, "churn", body_of(50))  # arrived, never used

    life.delete_model("churn")
    with pytest.raises(NotFound):
        jobs.get(job["job_id"])
    assert outputs(jobs, job["job_id"]) == []  # the result and chunk outputs went too
    with pytest.raises(NotFound):
        ingestions.get(ingestion["ingestion_id"])
    for upload_id in (pending, kept, job["upload_id"]):
        with pytest.raises(NotFound):
            jobs.uploads.get(upload_id)
    assert list(backends.datasets.list("_uploads/")) == []
    with pytest.raises(NotFound):  # a late arrival of the pending upload's bytes
        jobs.uploads.status(pending)

    # The name again: nothing of the deleted model's work is inherited.
    context.lifecycle().create_model({"name": "churn", "task": "regression", "target": "charges"})
    assert jobs.of_model("churn") == []
    with pytest.raises(NotFound):
        ingestions.start("churn", kept)


def test_an_experiment_an_unfinished_batch_job_scores_is_kept(embedded: Any) -> None:
    first = trained()
    life, jobs = context.lifecycle(), BatchJobs(context.backends(), None)
    second = life.train_now("churn", {"model_class": "logistic_regression", "deploy": "always"}).id
    assert context.backends().experiments.deployed_experiment("churn") == second
    job = jobs.start("churn", received(jobs, "churn", body_of(200)), first)
    other = jobs.start("churn", received(jobs, "churn", body_of(200)), None)  # pinned to second
    assert other["experiment_id"] == second
    with pytest.raises(Conflict, match=f"scores batch job {job['job_id']}"):
        life.delete_experiment(first)
    assert context.backends().experiments.get_experiment(first).artifact_key  # kept, with its model file

    run_all(jobs)
    assert jobs.status(job["job_id"])["status"] == "succeeded"
    life.delete_experiment(first)  # the job has ended: nothing holds the experiment now
    with pytest.raises(NotFound):
        context.backends().experiments.get_experiment(first)


def test_a_batch_job_whose_start_died_does_not_hold_its_model(embedded: Any) -> None:
    """A job recorded ``new`` whose start died before it was queued (no worker will ever run
    it) does not keep the model from being deleted once a lease has passed; it goes with it."""
    trained()
    jobs = BatchJobs(context.backends(), None)
    fresh = {"job_id": "a" * 32, "model": "churn", "status": "new", "created_ts": time.time(),
             "created_at": "2026-12-04T00:00:00+00:00"}
    jobs.records.create(KIND, fresh["job_id"], fresh)
    with pytest.raises(Conflict, match="a" * 32):  # it may still be starting
        context.lifecycle().delete_model("churn")
    old = jobs.records.get(KIND, fresh["job_id"])
    jobs.records.update(old, {**old.doc, "created_ts": time.time() - 3600})
    context.lifecycle().delete_model("churn")
    with pytest.raises(NotFound):
        jobs.get(fresh["job_id"])


def test_a_batch_job_started_while_its_model_is_deleted_fails_clearly(
        embedded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start of a job that slips in after the delete looked for unfinished work (two
    requests at once): its record is left alone (its start still writes it), and it fails
    naming what is gone rather than scoring a deleted model's file; no result is kept."""
    trained()
    jobs = BatchJobs(context.backends(), None)
    job = jobs.start("churn", received(jobs, "churn", body_of(200)), None)
    monkeypatch.setattr(BatchJobs, "unfinished", lambda *_args, **_kw: [])  # not started yet
    context.lifecycle().delete_model("churn")
    assert jobs.get(job["job_id"]).status == "queued"
    run_all(jobs)
    failed = jobs.status(job["job_id"])
    assert failed["status"] == "failed" and "does not exist" in failed["error"], failed
    assert outputs(jobs, job["job_id"]) == []


def test_what_a_failed_deletion_leaves_is_not_used_by_a_model_of_the_same_name(
        embedded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deletion's clean-up fails (or the process dies) after the model's row went: its
    uploads, ingestions and jobs are left, but they belong to the deleted model, and a model
    created later under the name neither lists nor uses them."""
    trained()
    backends = context.backends()
    jobs, ingestions = BatchJobs(backends, None), Ingestions(backends, None)
    job = jobs.start("churn", received(jobs, "churn", body_of(100)), None)
    run_all(jobs)
    left = received(jobs, "churn", LABELLED.encode())
    started = ingestions.start("churn", received(jobs, "churn", LABELLED.encode()))

    def fails(*_args: Any) -> list[str]:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(Ingestions, "unfinished", lambda *_a, **_k: [])  # as if it started late
    for cls in (Uploads, Ingestions, BatchJobs):
        monkeypatch.setattr(cls, "remove_of_model", fails)
    context.lifecycle().delete_model("churn")  # 204: the model itself is gone
    assert jobs.get(job["job_id"])  # left behind
    context.lifecycle().create_model({"name": "churn", "task": "classification",
                                      "target": "churned"})
    assert jobs.of_model("churn") == []
    with pytest.raises(NotFound, match="earlier model named 'churn'"):
        ingestions.start("churn", left)
    with pytest.raises(NotFound, match="earlier model named 'churn'"):
        jobs.uploads.arrived(left, "churn")  # what a batch job's start asks too
    ran = ingestions.run(started["ingestion_id"])  # its worker comes by only now
    assert ran.status == "failed" and "deleted after this ingestion started" in ran.doc["error"]
    assert backends.experiments.get_model("churn").dataset_version == 0  # nothing inherited


def test_an_upload_whose_ingestion_died_while_starting_is_freed(embedded: Any) -> None:
    """An ingestion killed right after it took its upload (its record still ``new``) never
    runs: once a lease has passed the upload is not held, so it expires, and the model's
    deletion removes it (both kept it for ever)."""
    trained()
    backends = context.backends()
    ingestions = Ingestions(backends, None)
    uploads = ingestions.uploads

    def stuck(dead: str) -> str:
        upload_id = received(BatchJobs(backends, None), "churn", LABELLED.encode())
        ingestions.records.create("ingestion", dead, {
            "ingestion_id": dead, "model": "churn", "upload_id": upload_id, "status": "new",
            "created_at": "2026-01-01T00:00:00+00:00"})
        assert uploads.take(upload_id, "churn", dead).status == "ingesting"
        return upload_id

    first = stuck("d" * 32)
    assert uploads.expire() == []  # not expired yet
    assert uploads.expire(now=time.time() + 10 * 86_400) == [first]
    second = stuck("e" * 32)
    context.lifecycle().delete_model("churn")
    with pytest.raises(NotFound):
        uploads.get(second)
    assert list(backends.datasets.list("_uploads/")) == []
