"""Uploads of any size: ``POST /uploads?model=`` says where to send the bytes, which then go to
the object store past the request size limit; ingestions (``PUT /add_data?upload=``,
``common/ingestion.py``) read them from there.

- On S3: a presigned PUT, or for an upload declared (``size=``) above
  ``MLFN_UPLOAD_MULTIPART_BYTES`` (100 MiB) a multipart upload with one presigned URL per part
  of ``MLFN_UPLOAD_PART_BYTES``, completed by ``POST /uploads/{id}/complete`` (the service lists
  the parts itself: the client sends no ETags). A single PUT is noticed when the object is there
  (``GET /uploads/{id}``, or the ingestion asking).
- Embedded and compose without S3: ``PUT /uploads/{id}/content`` on the service itself, which
  the HTTP adapter streams to a file (bounded memory; no limit but ``MLFN_UPLOAD_MAX_BYTES``).

Each upload is one record (``common/storage/records.py``) and one object under ``_uploads/`` in
the datasets store (a prefix no model name can take): ``_uploads/<id>`` on S3, where the URL is
signed before the bytes arrive, ``_uploads/<id>.<nonce>`` locally, where two PUTs racing each
write their own object and only the one whose record update wins is kept. An upload expires
``MLFN_UPLOAD_EXPIRY_SECONDS`` after it was announced (or after the last batch job on it
ended) unless an ingestion or a batch job still holds it: ``mlfn gc``
(and the server at start-up) removes expired records and their objects, and objects without a
record; on S3 the bucket's lifecycle rule also expires ``_uploads/`` objects and aborts multipart
uploads never completed. An ingested upload's object is removed at once (its rows live in the
new dataset part); its record stays until it expires, so that a second ingestion of it is told
which ingestion took it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.backends import Backends
from common.errors import BadRequest, Conflict, NotFound, ObjectChanged, PayloadTooLarge
from common.names import check_text, model_name
from common.storage.records import Record, StaleRecord, record_store
from common.tasks import NEW, QUEUED, RUNNING, TaskState

log = logging.getLogger("mlfn.uploads")

KIND = "upload"
PREFIX = "_uploads/"
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
# pending: announced; received: the bytes are there; ingesting: an ingestion holds it;
# ingested: its rows are a dataset version (the object is gone).
PENDING, RECEIVED, INGESTING, INGESTED = "pending", "received", "ingesting", "ingested"
EXPIRED = "expired"  # being removed by the collector
MAX_PARTS = 10_000  # S3's limit on the parts of one multipart upload
OCTET_STREAM = "application/octet-stream"


def incarnation(model: Any) -> str:
    """Which model of a name a record belongs to: its creation time. Uploads, ingestions and
    batch jobs keep it, so that what a deleted model left behind (a crash in its deletion, a
    request racing it) is never used by a model created later under the same name."""
    return str(model.created_at.isoformat())


def check_id(upload_id: str) -> str:
    if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id):
        raise BadRequest(f"invalid upload id {str(upload_id)[:40]!r}: uploads are named by the "
                         "32 hexadecimal characters POST /uploads answered")
    return upload_id


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _record_expires(expires_at: float) -> int:
    """When the record may go (DynamoDB's TTL): a day after the upload expires, so that its
    expiry is reported until then; every write carries it, or DynamoDB drops the TTL."""
    return int(expires_at) + 86_400


def presigned_url(backends: Backends, method: str, params: dict[str, Any], seconds: int) -> str:
    """A presigned URL for the S3 client ``method`` (``put_object``, ``upload_part``,
    ``get_object``) on the datasets bucket, valid ``seconds``: SigV4 (botocore presigns with
    SigV2 by default where S3 still takes it), for MLFN_PRESIGN_ENDPOINT_URL when it is set.
    SigV4 signs the host, so the URL is signed for the endpoint the client will reach rather
    than rewritten after signing (S3 would refuse it)."""
    store: Any = backends.datasets
    client = store.client
    signer = _signer(backends.settings.presign_endpoint_url or None, client.meta.region_name,
                     client.meta.config)
    return str(signer.generate_presigned_url(method, Params={"Bucket": store.bucket, **params},
                                             ExpiresIn=seconds))


@functools.lru_cache(maxsize=8)
def _signer(endpoint: str | None, region: str, config: Any) -> Any:
    """An S3 client that only signs URLs (it sends nothing): for ``endpoint`` (None: where
    boto3 finds S3, as the service's own client does), with that client's region, configuration
    and credential chain, and SigV4."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region,
        config=config.merge(Config(signature_version="s3v4")))


@contextlib.contextmanager
def as_arrived(upload_id: str) -> Iterator[None]:
    """Around reads of an upload's object at the version that arrived (``doc["version"]``):
    once it was replaced (the file sent to its presigned URL again), ObjectChanged names the
    upload and what to do."""
    try:
        yield
    except ObjectChanged:
        raise ObjectChanged(f"upload {upload_id} was replaced after it arrived (its URL was sent "
                            "a file again): what was read of it would not go with the rest; "
                            "announce a new upload with POST /uploads and send the file "
                            "once") from None


HEAD_BYTES = 512  # what kind_problem looks at: enough for a multipart form's first part header


def kind_problem(upload_id: str, head: bytes, model: str, image: bool, use: str) -> str | None:
    """What is wrong with an upload whose first bytes (``HEAD_BYTES``) are ``head`` for
    ``model`` (an image model when ``image``), ``use`` being "ingest" or "score"; None when it
    may be right. The same words at the request (202 or this 400) and in the worker (which
    reads it all)."""
    zipped = head.startswith(b"PK")
    if head.startswith(b"--") and b"content-disposition: form-data" in head.lower():
        return (f"upload {upload_id} holds a multipart form (curl -F), not the file: PUT the "
                "file's bytes themselves (curl --data-binary @file) to a new upload")
    if image and not zipped:
        what = ("a zip of labelled images (in folders named by label, 7/a.png, or listed in a "
                "labels.csv)" if use == "ingest" else
                "a zip of its images (folders and labels.csv are ignored)")
        return (f"upload {upload_id} is not a zip archive; model {model!r} takes images: "
                f"{'ingest' if use == 'ingest' else 'score'} {what}")
    if not image and zipped:
        return (f"upload {upload_id} is a zip archive; model {model!r} is tabular: it takes CSV "
                "files (a header row, then one row per example)")
    if not image and use == "ingest" and head.lstrip()[:1] in (b"{", b"["):
        return (f"upload {upload_id} looks like JSON; an upload is ingested as CSV (a header row, "
                "then one row per example): send JSON records to add_data in requests of up to "
                "MLFN_MAX_BODY_BYTES")
    return None


def refuse_kind(upload_id: str, head: bytes, model: str, image: bool, use: str) -> None:
    """BadRequest with :func:`kind_problem`'s words when there is one (a worker's check)."""
    problem = kind_problem(upload_id, head, model, image, use)
    if problem is not None:
        raise BadRequest(problem)


class Uploads:
    def __init__(self, backends: Backends) -> None:
        self.backends = backends
        self.settings = backends.settings
        self.records = record_store(backends.experiments)
        self.state = TaskState(self.records, self.settings.job_lease_seconds,
                               self.settings.job_heartbeat_seconds)

    @property
    def on_s3(self) -> bool:
        return self.settings.object_store == "s3"

    def _s3(self) -> tuple[Any, str]:
        store: Any = self.backends.datasets
        return store.client, store.bucket

    # -- announce --------------------------------------------------------------------------
    def create(self, model: str, size: int | None, filename: str | None) -> dict[str, Any]:
        """Announce an upload for ``model``: where and how to send its bytes."""
        name = model_name(model)
        record_of_model = self.backends.experiments.get_model(name)
        limit = self.settings.upload_max_bytes
        if size is not None and size > limit:
            raise PayloadTooLarge(f"query parameter 'size': {size} bytes is over the upload "
                                  f"limit of {limit} bytes (MLFN_UPLOAD_MAX_BYTES)")
        if filename is not None:
            if not filename or len(filename) > 255:
                raise BadRequest("query parameter 'filename' must be 1-255 characters")
            check_text("query parameter 'filename'", filename, "file names")
        upload_id = uuid.uuid4().hex
        now = time.time()
        expires = now + self.settings.upload_expiry_seconds
        doc: dict[str, Any] = {"upload_id": upload_id, "model": name, "status": PENDING,
                               "declared_size": size, "filename": filename,
                               "model_created": incarnation(record_of_model),
                               "created_at": _iso(now), "expires_at": expires,
                               "record_expires": _record_expires(expires)}
        if self.on_s3:
            doc["key"] = f"{PREFIX}{upload_id}"
        if self.on_s3 and size is not None and size > self.settings.upload_multipart_bytes:
            part = max(self.settings.upload_part_bytes, math.ceil(size / MAX_PARTS))
            client, bucket = self._s3()
            started = client.create_multipart_upload(Bucket=bucket, Key=doc["key"],
                                                     ContentType=OCTET_STREAM)
            doc.update(multipart_id=started["UploadId"], part_bytes=part,
                       parts=math.ceil(size / part))
        record = self.records.create(KIND, upload_id, doc, expires=doc["record_expires"])
        return self.describe(record, urls=True)

    def _urls(self, doc: dict[str, Any]) -> dict[str, Any]:
        upload_id = doc["upload_id"]
        headers = {"Content-Type": OCTET_STREAM}
        if not self.on_s3:
            return {"method": "PUT", "url": f"/uploads/{upload_id}/content", "headers": headers}
        seconds = self.settings.upload_url_seconds
        until = _iso(time.time() + seconds)
        if "multipart_id" not in doc:
            url = presigned_url(self.backends, "put_object",
                                {"Key": doc["key"], "ContentType": OCTET_STREAM}, seconds)
            return {"method": "PUT", "url": url, "headers": headers, "url_expires_at": until}
        parts = [{"part": n, "url": presigned_url(
            self.backends, "upload_part",
            {"Key": doc["key"], "UploadId": doc["multipart_id"], "PartNumber": n}, seconds)}
            for n in range(1, int(doc["parts"]) + 1)]
        return {"method": "PUT", "headers": headers, "url_expires_at": until,
                "multipart": {"part_bytes": doc["part_bytes"], "parts": parts,
                              "complete": f"/uploads/{upload_id}/complete"}}

    def describe(self, record: Record, urls: bool = False) -> dict[str, Any]:
        doc = record.doc
        out = {k: doc.get(k) for k in ("upload_id", "model", "status", "filename", "created_at")}
        out["expires_at"] = _iso(float(doc["expires_at"]))
        out["max_bytes"] = self.settings.upload_max_bytes
        for name in ("size", "ingestion_id"):
            if doc.get(name) is not None:
                out[name] = doc[name]
        if urls and doc["status"] == PENDING:
            out.update(self._urls(doc))
        return out

    # -- arrival ---------------------------------------------------------------------------
    def get(self, upload_id: str) -> Record:
        """The upload's record; NotFound for an unknown or expired one."""
        try:
            record = self.records.get(KIND, check_id(upload_id))
        except NotFound:
            raise NotFound(f"upload {upload_id} does not exist (or it expired and was "
                           "removed)") from None
        if self._expired(record, time.time()) and self.holder(record) is None:
            raise NotFound(f"upload {upload_id} expired at {_iso(float(record.doc['expires_at']))};"
                           " announce a new one with POST /uploads")
        return record

    @staticmethod
    def _expired(record: Record, now: float) -> bool:
        # An upload an ingestion holds does not expire under it (the ingestion ends it).
        return record.status == EXPIRED or (record.status != INGESTING
                                            and float(record.doc["expires_at"]) <= now)

    def status(self, upload_id: str) -> dict[str, Any]:
        """``GET /uploads/{id}``: pending until the bytes are there, then received (size), with
        the batch jobs scoring it (while one runs, it cannot be ingested)."""
        record = self._refresh(self.get(upload_id))
        out = self.describe(record, urls=True)
        if running := self._running_jobs(record):
            out["batch_jobs"] = running
        return out

    def _refresh(self, record: Record) -> Record:
        """A pending single-PUT upload on S3 has arrived once its object exists."""
        if record.status != PENDING or not self.on_s3 or "multipart_id" in record.doc:
            return record
        try:
            size, version = self.backends.datasets.stat(record.doc["key"])
        except NotFound:
            return record
        return self._received(record, record.doc["key"], size, version)

    def _received(self, record: Record, key: str, size: int,
                  version: str | None = None) -> Record:
        """Mark ``record`` received with the object ``key`` at ``version`` (S3: its ETag; what
        reads it later read at that version: a second PUT to a presigned URL does not mix
        into them); PayloadTooLarge (the object removed) beyond the limit."""
        limit = self.settings.upload_max_bytes
        if size > limit:
            self.backends.datasets.delete(key)
            raise PayloadTooLarge(f"upload {record.id} has {size} bytes, over the upload limit of "
                                  f"{limit} bytes (MLFN_UPLOAD_MAX_BYTES); it was removed")
        if size == 0:
            raise BadRequest(f"upload {record.id} is empty; send the file's bytes")
        declared = record.doc.get("declared_size")
        if declared is not None and size != int(declared):
            self.backends.datasets.delete(key)
            raise BadRequest(f"upload {record.id} was announced with size={declared} bytes but "
                             f"{size} arrived; they were removed: send the whole file again")
        try:
            return self.records.update(record, {**record.doc, "status": RECEIVED, "size": size,
                                                "key": key, "version": version})
        except StaleRecord:
            current = self.records.get(KIND, record.id)
            if current.doc.get("key") != key:  # another PUT of the same upload won
                self.backends.datasets.delete(key)
                raise Conflict(f"upload {record.id} was sent twice at once; the other copy was "
                               "kept") from None
            return current

    def receive(self, upload_id: str, path: Path | None, body: bytes) -> dict[str, Any]:
        """The service's own upload URL: the body (spooled to ``path`` by the HTTP adapter, or
        in memory as ``body``) becomes the upload's object. Conflict once it has arrived."""
        record = self.get(upload_id)
        if self.on_s3:
            raise BadRequest("this service keeps uploads on S3: PUT the bytes to the presigned "
                             "URL that POST /uploads answered")
        if record.status != PENDING:
            raise Conflict(f"upload {upload_id} has arrived already (status {record.status}); "
                           "announce a new one with POST /uploads")
        key = f"{PREFIX}{upload_id}.{uuid.uuid4().hex[:12]}"
        if path is not None:
            size = path.stat().st_size
            self._check_size(size)
            self.backends.datasets.put_file(key, path, move=True)  # the spooled body
        else:
            size = len(body)
            self._check_size(size)
            self.backends.datasets.put(key, body)
        try:
            return self.describe(self._received(record, key, size))
        except BadRequest:
            self.backends.datasets.delete(key)
            raise

    def _check_size(self, size: int) -> None:
        if size > self.settings.upload_max_bytes:
            raise PayloadTooLarge(f"the body has {size} bytes; the upload limit is "
                                  f"{self.settings.upload_max_bytes} (MLFN_UPLOAD_MAX_BYTES)")

    def complete(self, upload_id: str) -> dict[str, Any]:
        """``POST /uploads/{id}/complete``: finish an S3 multipart upload from the parts S3
        holds (every part but the last ``part_bytes`` long, as announced)."""
        record = self.get(upload_id)
        if record.status != PENDING:
            return self.describe(record)
        if "multipart_id" not in record.doc:
            raise BadRequest(f"upload {upload_id} is a single PUT: there is nothing to complete")
        client, bucket = self._s3()
        key, multipart_id = record.doc["key"], record.doc["multipart_id"]
        pages = client.get_paginator("list_parts").paginate(Bucket=bucket, Key=key,
                                                            UploadId=multipart_id)
        parts = sorted((p for page in pages for p in page.get("Parts", [])),
                       key=lambda p: p["PartNumber"])
        expected = int(record.doc["parts"])
        missing = sorted(set(range(1, expected + 1)) - {p["PartNumber"] for p in parts})
        if missing:
            raise BadRequest(f"upload {upload_id}: part {missing[0]} has not arrived ({len(parts)} "
                             f"of {expected} parts are there); PUT it to its URL, then complete")
        extra = [p["PartNumber"] for p in parts if p["PartNumber"] > expected]
        if extra:
            raise BadRequest(f"upload {upload_id}: part {extra[0]} was not announced (there are "
                             f"{expected} parts)")
        for p in parts[:-1]:
            if p["Size"] != record.doc["part_bytes"]:
                raise BadRequest(f"upload {upload_id}: part {p['PartNumber']} has {p['Size']} "
                                 f"bytes; every part but the last must have "
                                 f"{record.doc['part_bytes']}")
        size = sum(int(p["Size"]) for p in parts)
        if size > self.settings.upload_max_bytes:
            self._abort(record)
            raise PayloadTooLarge(f"upload {upload_id} has {size} bytes, over the upload limit "
                                  f"of {self.settings.upload_max_bytes} bytes; it was removed")
        completed = client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=multipart_id,
            MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]}
                                       for p in parts]})
        return self.describe(self._received(record, key, size, completed.get("ETag")))

    def _abort(self, record: Record) -> None:
        if "multipart_id" in record.doc and record.status == PENDING:
            client, bucket = self._s3()
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=record.doc["key"],
                                              UploadId=record.doc["multipart_id"])
            except Exception as exc:  # done or aborted already; the lifecycle rule is the backstop
                log.info("upload %s: abort: %s", record.id, exc)

    # -- use by an ingestion ---------------------------------------------------------------
    def take(self, upload_id: str, model: str, ingestion_id: str) -> Record:
        """Hand the upload to ``ingestion_id`` (received -> ingesting, one compare-and-set):
        BadRequest unless it belongs to ``model`` and has arrived, Conflict if another
        ingestion has it or had it, or a batch job still reads it (an ingested upload's file is
        removed)."""
        for _ in range(20):
            record = self.arrived(upload_id, model)
            if record.status in (INGESTING, INGESTED):
                verb = "is being" if record.status == INGESTING else "was"
                raise Conflict(f"upload {upload_id} {verb} ingested by ingestion "
                               f"{record.doc.get('ingestion_id')} (GET /ingestions/"
                               f"{record.doc.get('ingestion_id')}); an upload is ingested once")
            job = self.holder(record)
            if job is not None:
                raise Conflict(f"upload {upload_id} is being scored by batch job {job} (GET "
                               f"/batch_jobs/{job}); ingest it once the job has ended (ingesting "
                               "removes the upload's file)")
            try:
                return self.records.update(record, {**record.doc, "status": INGESTING,
                                                    "ingestion_id": ingestion_id})
            except StaleRecord:
                continue  # taken, held or extended meanwhile: look again
        raise Conflict(f"upload {upload_id} kept changing while it was being taken; try again")

    def check_kind(self, record: Record, image: bool, use: str) -> None:
        """BadRequest naming the query parameter when the upload is plainly the wrong kind of
        file for the model (its first bytes: a zip or not, JSON). Only a received upload is
        looked at: one an ingestion has (or had) is the caller's Conflict."""
        if record.status != RECEIVED:
            return
        with as_arrived(record.id):
            head = self.backends.datasets.read_range(record.doc["key"], 0, HEAD_BYTES,
                                                     record.doc.get("version"))
        problem = kind_problem(record.id, head, record.doc["model"], image, use)
        if problem is not None:
            raise BadRequest(f"query parameter 'upload': {problem}")

    def arrived(self, upload_id: str, model: str) -> Record:
        """The upload's record; BadRequest if it belongs to another model or has not arrived,
        NotFound if it does not exist (or expired)."""
        record = self._refresh(self.get(upload_id))
        if record.doc["model"] != model:
            raise BadRequest(f"query parameter 'upload': upload {upload_id} was announced for "
                             f"model {record.doc['model']!r}, not {model!r}")
        created = record.doc.get("model_created")  # None: announced before uploads kept it
        if created is not None:
            try:
                current: str | None = incarnation(self.backends.experiments.get_model(model))
            except NotFound:
                current = None
            if current != created:
                raise NotFound(f"upload {upload_id} was announced for an earlier model named "
                               f"{model!r}, deleted since; announce a new upload with POST "
                               "/uploads")
        if record.status == PENDING:
            how = ("complete it with POST /uploads/{id}/complete after the last part"
                   if "multipart_id" in record.doc else "PUT the bytes to its URL first")
            raise BadRequest(f"query parameter 'upload': upload {upload_id} has not arrived yet; "
                             f"{how}")
        return record

    # -- use by batch jobs -----------------------------------------------------------------
    def hold(self, upload_id: str, model: str, job_id: str) -> Record:
        """Let batch job ``job_id`` (its record written already) read the upload: the job is
        noted on the upload (ended jobs' notes dropped) and its expiry pushed back, in one
        compare-and-set. While the job has not ended, the upload is neither ingested
        (:meth:`take`) nor expired. Conflict once an ingestion has it."""
        for _ in range(20):
            record = self.arrived(upload_id, model)
            ingestion = record.doc.get("ingestion_id")
            if record.status == INGESTING:
                raise Conflict(f"query parameter 'upload': upload {upload_id} is being ingested "
                               f"by ingestion {ingestion} (GET /ingestions/{ingestion}), which "
                               "removes its file once it succeeds; if that ingestion fails, the "
                               "upload can be scored")
            if record.status == INGESTED:
                raise Conflict(f"query parameter 'upload': upload {upload_id} was ingested by "
                               f"ingestion {ingestion}; its file is no longer kept (its rows are "
                               "in the model's dataset): upload the file again to score it")
            expires_at = max(float(record.doc["expires_at"]),
                             time.time() + self.settings.upload_expiry_seconds)
            try:
                return self.records.update(record, {
                    **record.doc, "batch_jobs": [*self._running_jobs(record), job_id],
                    "expires_at": expires_at, "record_expires": _record_expires(expires_at)})
            except StaleRecord:
                continue
        raise Conflict(f"upload {upload_id} kept changing while a batch job was starting on it; "
                       "try again")

    def holder(self, record: Record) -> str | None:
        """A batch job noted on the upload that has not ended, if any."""
        return next(iter(self._running_jobs(record)), None)

    def _running_jobs(self, record: Record) -> list[str]:
        """The batch jobs noted on the upload that have not ended."""
        return [str(j) for j in record.doc.get("batch_jobs", []) if self._running(j)]

    def _running(self, job_id: str) -> bool:
        from common.batch_jobs import ENDED
        from common.batch_jobs import KIND as JOB

        try:
            job = self.records.get(JOB, job_id)
        except NotFound:
            return False
        if job.status == NEW:  # unless its start died between its record and its queueing
            return not self.state.start_died(job)
        return job.status not in ENDED

    def release_hold(self, upload_id: str, job_id: str) -> None:
        """Batch job ``job_id`` ended: its note goes, and the upload is kept at least
        ``MLFN_UPLOAD_EXPIRY_SECONDS`` from now (a job may end after the expiry counted from
        its start). Best effort: a note left behind names an ended job, which holds nothing."""
        try:
            for _ in range(10):
                record = self.records.get(KIND, upload_id)
                if job_id not in record.doc.get("batch_jobs", []):
                    return
                expires_at = max(float(record.doc["expires_at"]),
                                 time.time() + self.settings.upload_expiry_seconds)
                doc = {**record.doc, "expires_at": expires_at,
                       "batch_jobs": [j for j in record.doc["batch_jobs"] if j != job_id],
                       "record_expires": _record_expires(expires_at)}
                with contextlib.suppress(StaleRecord):
                    self.records.update(record, doc)
                    return
        except NotFound:
            return
        except Exception as exc:  # an outage: the note stays, naming an ended job
            log.warning("upload %s: releasing batch job %s: %s", upload_id, job_id, exc)

    def release(self, upload_id: str, ingestion_id: str, ingested: bool) -> None:
        """The ingestion ended: ``ingested`` (the object removed, the record kept until it
        expires) or not (received again, with a fresh expiry, so it can be ingested again)."""
        for _ in range(10):
            try:
                record = self.records.get(KIND, upload_id)
            except NotFound:
                return
            if record.doc.get("ingestion_id") != ingestion_id or record.status != INGESTING:
                return
            doc = {**record.doc, "status": INGESTED if ingested else RECEIVED}
            if not ingested:
                doc["expires_at"] = time.time() + self.settings.upload_expiry_seconds
                doc["record_expires"] = _record_expires(doc["expires_at"])
            try:
                self.records.update(record, doc)
            except StaleRecord:
                continue
            if ingested:
                with contextlib.suppress(Exception):  # a leftover object is the collector's
                    self.backends.datasets.delete(record.doc["key"])
            return

    def remove_of_model(self, model: str) -> list[str]:
        """A deleted model's uploads go (records, objects, unfinished multipart uploads),
        except one a job still holds (a job started while the model was being deleted: the
        upload then expires as usual). Returns their ids."""
        name = model_name(model)
        gone: list[str] = []
        for record in self.records.with_status(KIND, (PENDING, RECEIVED, INGESTING, INGESTED)):
            if record.doc.get("model") != name:
                continue
            for _ in range(5):  # a write since it was read (an arrival noticed, say): again
                if self._held(record):
                    break
                if self._remove(record):
                    gone.append(record.id)
                    break
                try:
                    record = self.records.get(KIND, record.id)
                except NotFound:
                    break
            else:
                log.warning("upload %s of deleted model %r kept changing; it expires as usual",
                            record.id, name)
        return gone

    def _held(self, record: Record) -> bool:
        """An ingestion that may still run has it, or a batch job that has not ended reads it."""
        return (record.status == INGESTING and self._ingestion_alive(record)) \
            or self.holder(record) is not None

    def _ingestion_alive(self, record: Record) -> bool:
        """Whether the ingestion an ``ingesting`` upload names may still run: not when its
        record is gone, ended (its release did not happen: a crash), or ``new`` a lease ago
        (its start died right after it took the upload)."""
        from common.ingestion import KIND as INGESTION

        try:
            ingestion = self.records.get(INGESTION, str(record.doc.get("ingestion_id")))
        except NotFound:
            return False
        if ingestion.status == NEW:
            return not self.state.start_died(ingestion)
        return ingestion.status in (QUEUED, RUNNING)

    def _remove(self, record: Record) -> bool:
        """Remove an upload: one compare-and-set to ``expired`` first, so that a batch job
        that noted itself on the upload since it was read (or an ingestion that took it) wins
        and the upload stays (False); then its multipart upload, object and record."""
        try:
            self.records.update(record, {**record.doc, "status": EXPIRED})
        except StaleRecord:
            return False
        self._abort(record)
        if record.doc.get("key"):
            self.backends.datasets.delete(record.doc["key"])
        self.records.delete(KIND, record.id)
        return True

    # -- expiry ----------------------------------------------------------------------------
    def expire(self, now: float | None = None, dry_run: bool = False) -> list[str]:
        """Remove the expired uploads (records, objects, unfinished multipart uploads) and the
        upload objects no record names that are older than the expiry (a crash between the
        object and its record, a PUT that lost a race); returns their ids or keys."""
        now = now or time.time()
        gone: list[str] = []
        kept: set[str] = set()
        for record in self.records.with_status(KIND, (PENDING, RECEIVED, INGESTING, INGESTED,
                                                      EXPIRED)):
            # An ingesting upload expires too once its ingestion can no longer run.
            due = self._expired(record, now) or (
                record.status == INGESTING and float(record.doc["expires_at"]) <= now
                and not self._ingestion_alive(record))
            if record.status != EXPIRED and (not due or self.holder(record) is not None):
                if record.doc.get("key"):
                    kept.add(record.doc["key"])
                continue
            if not dry_run and not self._remove(record):
                if record.doc.get("key"):
                    kept.add(record.doc["key"])
                continue
            gone.append(record.id)
        cutoff = now - self.settings.upload_expiry_seconds
        for key, written in self.backends.datasets.listing(PREFIX):
            if key in kept or written.timestamp() >= cutoff:
                continue
            gone.append(key)
            if not dry_run:
                self.backends.datasets.delete(key)
        if gone:
            log.info("%s %d expired uploads", "would remove" if dry_run else "removed", len(gone))
        return gone
