"""Asynchronous, all-or-nothing ingestion of an upload (``PUT /add_data?model=&upload=ID``):
202 with an ingestion id, ``GET /ingestions/{id}`` for its status.

The upload (a CSV file with a header row, as ``add_data`` takes) is read ``MLFN_INGEST_CHUNK_ROWS``
rows at a time and every chunk gets exactly ``add_data``'s checks (``datasets.conform``, the
functions ``/forward`` uses), with the row numbers of the whole file; each checked chunk is one
row group of a Parquet file on local disk. Only when the last row passed is the file stored and
registered as one dataset part, so the whole file becomes one new dataset version or nothing
changes and the ingestion says which row was wrong. A first upload of a model (no feature schema
yet) is read twice: once to infer the schema from every row, as ``add_data`` infers it from the
whole body, then to check and write.

An image model's upload is a zip archive of labelled images, as ``add_data`` takes: it is read
entry by entry from the object's file (``common.archives.iter_images``: ``add_data``'s checks and
``MLFN_ARCHIVE_*`` limits, labels resolved before any image is decoded), each image decoded by
``common.images.preprocess`` and written, a chunk of images (``image_frame``) per row group, to
the same kind of local Parquet file, registered the same way; a bad entry fails the ingestion
with its name.

Crashes: the part's key is fixed by the ingestion id, and an attempt fences itself (a
compare-and-set on the ingestion record, ``common/tasks.py``) just before it registers the
part, so a retry after a crash either finds the part registered (and only records success) or
starts over; a part file stored but never registered is an orphan ``mlfn gc`` removes. The one
window left is a takeover during the single registering write itself, which needs a whole lease
(``MLFN_JOB_LEASE_SECONDS``) to pass inside one store write.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import logging
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from common.backends import Backends
from common.domain import Feature, FeatureKind, ModelRecord, Task
from common.errors import BadRequest, Conflict, NotFound, SchemaConflict, ServiceError
from common.names import check_text, dataset_part_key, model_name
from common.payloads import not_utf8, not_utf8_in
from common.storage.records import Record, record_store
from common.tasks import (
    FAILED,
    MAX_ATTEMPTS,
    NEW,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Lease,
    Lost,
    TaskQueue,
    TaskState,
    iso_now,
)
from common.uploads import HEAD_BYTES, Uploads, as_arrived, incarnation, refuse_kind

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("mlfn.ingestion")

KIND = "ingestion"
INGESTION_ID = re.compile(r"[0-9a-f]{32}")
ROW = re.compile(r"\(row ([0-9]+)\)")
IMAGE_CHUNK_BYTES = 32 * 1024 * 1024  # decoded pixels held at once by an image ingestion
RECORD_DAYS = 30  # DynamoDB TTL of an ingestion record


def check_id(ingestion_id: str) -> str:
    if not INGESTION_ID.fullmatch(ingestion_id):
        raise BadRequest(f"invalid ingestion id {ingestion_id[:40]!r}: ingestions are named by the "
                         "32 hexadecimal characters PUT /add_data?upload= answered")
    return ingestion_id


class RowError(BadRequest):
    """A row of the file failed its check; ``row`` is its 0-based number among the data rows."""

    def __init__(self, detail: str, row: int | None) -> None:
        super().__init__(detail)
        self.row = row


def _shifted(exc: BadRequest, offset: int) -> RowError:
    """``exc`` raised on a chunk, its "(row N)" renumbered as a row of the whole file."""
    found = ROW.search(exc.detail)
    if found is None:
        return RowError(exc.detail, None)
    row = int(found[1]) + offset
    return RowError(ROW.sub(f"(row {row})", exc.detail, count=1), row)


class CsvChunks:
    """The rows of a CSV file, ``size`` at a time, with ``csv_rows``'s checks (UTF-8, one header
    naming distinct, printable, non-empty columns, every row the header's width) and the row
    numbers of the whole file."""

    def __init__(self, raw: IO[bytes], size: int) -> None:
        self.size, self.raw = size, raw
        self.reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))
        self.header = self._header()

    def _next(self, row: int) -> list[str] | None:
        try:
            while True:
                got = next(self.reader)
                if got:
                    return got
        except StopIteration:
            return None
        except UnicodeDecodeError:
            raise self._not_utf8(row) from None
        except csv.Error as exc:
            raise RowError(f"malformed CSV (line {self.reader.line_num}, row {row}): {exc}",
                           row) from None

    def _not_utf8(self, row: int) -> RowError:
        """The file read again from its start with the bytes escaped, for the row that holds
        the first byte that is not UTF-8 (the strict decoder fails a block of 8 KiB ahead of
        the row the reader is on)."""
        self.raw.seek(0)
        text = io.TextIOWrapper(self.raw, encoding="utf-8-sig", errors="surrogateescape",
                                newline="")
        detail = not_utf8_in(text) or not_utf8(f"row {row} or after it")
        text.detach()  # the file is closed by whoever opened it
        found = ROW.search(detail)
        return RowError(detail, None if found is None else int(found[1]))

    def _header(self) -> list[str]:
        header = self._next(0)
        if header is None:
            raise BadRequest("the CSV is empty; it needs a header row")
        if len(set(header)) != len(header):
            # curl -d @file drops the line breaks, which leaves one long "header"
            one_line = "" if self._next(0) is not None else (
                " (the file is a single line: send files with curl --data-binary @file, not -d)")
            raise BadRequest(f"the CSV header repeats a column: {header[:12]}{one_line}")
        if any(not name.strip() for name in header):
            raise BadRequest("the CSV header has an empty column name")
        for name in header:
            check_text(f"column {name!r} of the CSV header", name, "column names")
        return header

    def __iter__(self) -> Iterator[tuple[int, list[list[str | None]]]]:
        """(number of the chunk's first row, its rows with empty cells as None)."""
        start, rows = 0, list[list[str | None]]()
        width = len(self.header)
        while True:
            row = self._next(start + len(rows))
            if row is None:
                break
            if len(row) != width:
                i = start + len(rows)
                raise RowError(f"malformed CSV: row {i} has {len(row)} fields, the header has "
                               f"{width}", i)
            rows.append([cell if cell != "" else None for cell in row])
            if len(rows) == self.size:
                yield start, rows
                start, rows = start + len(rows), []
        if rows:
            yield start, rows
        elif start == 0:
            raise BadRequest("the CSV has no data rows (a header row, then one row per example)")


class Ingestions:
    def __init__(self, backends: Backends, queue: TaskQueue | None) -> None:
        self.backends = backends
        self.settings = backends.settings
        self.store = backends.experiments
        self.uploads = Uploads(backends)
        self.records = record_store(backends.experiments)
        self.state = TaskState(self.records, self.settings.job_lease_seconds,
                               self.settings.job_heartbeat_seconds)
        self.queue = queue

    # -- requests --------------------------------------------------------------------------
    def start(self, model: str, upload_id: str) -> dict[str, Any]:
        """Queue the ingestion of ``upload_id`` into ``model``'s dataset (202)."""
        name = model_name(model)
        record = self.store.get_model(name)  # a clear 404 for an unknown model
        # clear 404s and 400s before anything is written: unknown, another model's, not
        # arrived, plainly the wrong kind of file for the model
        arrived = self.uploads.arrived(upload_id, name)
        self.uploads.check_kind(arrived, record.image is not None, "ingest")
        ingestion_id = uuid.uuid4().hex
        doc = {"ingestion_id": ingestion_id, "model": name, "upload_id": upload_id,
               "model_created": incarnation(record),
               "status": NEW, "attempts": 0, "rows_read": 0, "created_at": iso_now()}
        expires = int(time.time()) + RECORD_DAYS * 86_400
        created = self.records.create(KIND, ingestion_id, {**doc, "record_expires": expires},
                                      expires=expires)
        try:
            upload = self.uploads.take(upload_id, name, ingestion_id)
        except BaseException:
            self.records.delete(KIND, ingestion_id)
            raise
        queued = self.records.update(created, {**created.doc, "status": QUEUED,
                                               "filename": upload.doc.get("filename"),
                                               "size": upload.doc.get("size")})
        if self.queue is not None:
            try:
                self.queue.submit({"task": "ingest", "id": ingestion_id})
            except ServiceError as exc:
                self._fail(queued, exc)
                raise
        return self.describe(queued)

    def get(self, ingestion_id: str) -> Record:
        try:
            return self.records.get(KIND, check_id(ingestion_id))
        except NotFound:
            raise NotFound(f"ingestion {ingestion_id} does not exist") from None

    def status(self, ingestion_id: str, model: str | None = None) -> dict[str, Any]:
        record = self.get(ingestion_id)
        if model is not None and record.doc["model"] != model_name(model):
            raise NotFound(f"ingestion {ingestion_id} belongs to model {record.doc['model']!r}, "
                           f"not {model!r}")
        return self.describe(record)

    def unfinished(self, model: str) -> list[str]:
        """The ids of ``model``'s ingestions that have not ended, oldest first. One whose start
        died before it took its upload is not one of them."""
        name = model_name(model)
        found = [r for r in self.records.with_status(KIND, (NEW, QUEUED, RUNNING))
                 if r.doc.get("model") == name and not self.state.start_died(r)]
        return [r.id for r in sorted(found, key=lambda r: str(r.doc.get("created_at", "")))]

    def remove_of_model(self, model: str) -> list[str]:
        """A deleted model's ended ingestions' records go (their parts went with its dataset);
        one started while the model was being deleted fails on its own and expires."""
        name = model_name(model)
        gone = [r.id for r in self.records.with_status(KIND, (NEW, SUCCEEDED, FAILED))
                if r.doc.get("model") == name and (r.status != NEW or self.state.start_died(r))]
        for ingestion_id in gone:
            self.records.delete(KIND, ingestion_id)
        return gone

    @staticmethod
    def describe(record: Record) -> dict[str, Any]:
        doc = record.doc
        out = {k: doc.get(k) for k in ("ingestion_id", "model", "upload_id", "status",
                                        "attempts", "rows_read", "created_at")}
        out["status"] = QUEUED if out["status"] == NEW else out["status"]
        if doc.get("status") == RUNNING and doc.get("phase"):
            out["phase"] = doc["phase"]  # "inferring schema", "checking rows", ...
        for name in ("filename", "size", "started_at", "finished_at", "rows_added",
                     "dataset_version", "error", "row"):
            if doc.get(name) is not None:
                out[name] = doc[name]
        out["url"] = f"/ingestions/{doc['ingestion_id']}"
        return out

    # -- workers ---------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """On start-up: start this process's task pool, which runs what is queued and retries
        a ``running`` ingestion once its lease lapses (its worker died). Returns the ids
        claimable now."""
        ids = self.claimable()
        if self.queue is not None:
            self.queue.start()
            if ids:
                self.queue.submit({"task": "ingest", "id": ids[0]})  # wakes a worker for all
        return ids

    def claimable(self) -> list[str]:
        return [r.id for r in self.records.with_status(KIND, (QUEUED, RUNNING))
                if self.state.claimable(r)]

    def run(self, ingestion_id: str) -> Record:
        """Claim and run one ingestion (a worker's entry point). Conflict if another worker
        holds it; the finished record otherwise (or the queued one, after a transient error
        that leaves it for a later attempt)."""
        record = self.records.get(KIND, ingestion_id)
        lease = self.state.claim(record, self._give_up)
        if lease is None:
            return self.records.get(KIND, ingestion_id)
        try:
            done = self._ingest(lease)
        except Lost:
            raise
        except ServiceError as exc:
            if exc.status >= 500:
                return self._again(lease, exc)
            done = self._finish(lease, exc)
        except Exception as exc:  # an outage or a bug: retried, then failed
            log.exception("ingestion %s, attempt %s", ingestion_id, lease.attempt)
            return self._again(lease, exc)
        return done

    def _again(self, lease: Lease, exc: BaseException) -> Record:
        detail = exc.detail if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
        if lease.attempt >= MAX_ATTEMPTS:
            return self._finish(lease, exc)
        return lease.write(status=QUEUED, last_error=detail)

    def _finish(self, lease: Lease, exc: BaseException) -> Record:
        detail = exc.detail if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
        done = lease.write(status=FAILED, error=detail, finished_at=iso_now(),
                           row=getattr(exc, "row", None))
        self.uploads.release(done.doc["upload_id"], done.id, ingested=False)
        return done

    def _give_up(self, record: Record) -> None:
        self._fail(record, ServiceError(f"{MAX_ATTEMPTS} attempts ran out of their lease (their "
                                        "workers stopped); nothing was added"))

    def _fail(self, record: Record, exc: ServiceError) -> None:
        with contextlib.suppress(Exception):
            self.records.update(record, {**record.doc, "status": FAILED, "error": exc.detail,
                                         "finished_at": iso_now()})
        self.uploads.release(record.doc["upload_id"], record.id, ingested=False)

    def _ingest(self, lease: Lease) -> Record:
        doc = lease.doc
        try:
            model = self.store.get_model(doc["model"])
        except NotFound:
            model = None
        if model is None or doc.get("model_created", incarnation(model)) != incarnation(model):
            raise NotFound(f"model {doc['model']!r} was deleted after this ingestion started; "
                           "nothing was ingested")
        upload = self.uploads.records.get("upload", doc["upload_id"])
        if upload.doc.get("ingestion_id") != lease.record.id:
            raise BadRequest(f"upload {doc['upload_id']} is not held by this ingestion")
        key = dataset_part_key(model.name, f"ingest-{lease.record.id}")
        done = self._registered(model.name, key)
        if done is None:
            with tempfile.TemporaryDirectory(dir=self._scratch()) as tmp:
                path = Path(tmp) / "part.parquet"
                if model.image is not None:
                    rows = self._write_images(upload, model, path, lease)
                    lease.write(phase="registering")  # the fence: this attempt still holds it
                    done = self._register(model, key, path, rows, None, upload.doc.get("filename"))
                else:
                    done = self._ingest_rows(upload, model, key, path, lease)
        version, rows = done
        finished = lease.write(status=SUCCEEDED, finished_at=iso_now(), rows_added=rows,
                               rows_read=rows, dataset_version=version, error=None, row=None)
        self.uploads.release(doc["upload_id"], lease.record.id, ingested=True)
        return finished

    def _ingest_rows(self, upload: Record, model: ModelRecord, key: str, path: Path,
                     lease: Lease) -> tuple[int, int]:
        """A CSV upload: checked and written at ``path``, then registered as the part ``key``."""
        features = model.features
        if features is None:
            features = self._infer(upload, model, lease)
        for _ in range(3):
            rows = self._write(upload, model, features, path, lease)
            lease.write(phase="registering")  # the fence: this attempt still holds it
            try:
                return self._register(model, key, path, rows, features, upload.doc.get("filename"))
            except SchemaConflict as exc:  # another first upload fixed its schema
                features = exc.stored
                model = self.store.get_model(model.name)
        raise Conflict(f"model {model.name!r}: the feature schema is being set concurrently; "
                       "retry")

    def _scratch(self) -> Path:
        path = self.settings.data_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _registered(self, model: str, key: str) -> tuple[int, int] | None:
        for part in self.store.all_dataset_parts(model):
            if part.key == key:
                return part.version, part.rows
        return None

    @contextlib.contextmanager
    def _opened(self, upload: Record) -> Iterator[BinaryIO]:
        """The upload's object as it arrived (its version: ObjectChanged naming the upload once
        it was replaced), downloaded or opened; closed after."""
        with as_arrived(upload.id), self.backends.datasets.open_read(
                upload.doc["key"], upload.doc.get("version")) as raw:
            yield raw

    @contextlib.contextmanager
    def _chunks(self, upload: Record) -> Iterator[CsvChunks]:
        with self._opened(upload) as raw:
            head = raw.read(HEAD_BYTES)
            raw.seek(0)
            refuse_kind(upload.id, head, upload.doc["model"], False, "ingest")
            yield CsvChunks(raw, self.settings.ingest_chunk_rows)

    def _frame(self, header: list[str], rows: list[list[str | None]]) -> pd.DataFrame:
        import pandas as pd

        frame = pd.DataFrame(rows, columns=header, dtype=object)
        frame.attrs["source"] = "csv"  # CSV cells are text: the schema decides the types
        return frame

    def _infer(self, upload: Record, model: ModelRecord, lease: Lease) -> list[Feature]:
        """A first upload's schema from every row, as ``infer_features`` infers it from a whole
        body: a column is numeric when every cell reads as a number."""
        import pandas as pd

        with self._chunks(upload) as chunks:
            header = chunks.header
            if model.target not in header:
                from common.training.frames import infer_features

                infer_features(pd.DataFrame(columns=header), model.target)  # names the problem
            numeric = {name: True for name in header if name != model.target}
            seen = dict.fromkeys(numeric, False)
            for start, rows in chunks:
                frame = self._frame(header, rows)
                for name in numeric:
                    values = frame[name].dropna()
                    if len(values):
                        seen[name] = True
                        if numeric[name]:
                            numeric[name] = bool(pd.to_numeric(values, errors="coerce").notna().all())
                lease.renew(rows_read=start + len(rows), phase="inferring schema")
        empty = [name for name, found in seen.items() if not found]
        if empty:
            raise BadRequest(f"column {empty[0]!r} has no values; its type cannot be inferred")
        if not numeric:
            raise BadRequest("the data has no feature columns besides the target")
        return [Feature(name=n, kind=FeatureKind.numeric if v else FeatureKind.categorical)
                for n, v in numeric.items()]

    def _write(self, upload: Record, model: ModelRecord, features: list[Feature], path: Path,
               lease: Lease) -> int:
        """Check every row and write the Parquet part at ``path``, one row group per chunk;
        returns the rows."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from common.training.datasets import conform

        fields = [pa.field(f.name, pa.float64() if f.kind is FeatureKind.numeric else pa.string())
                  for f in features]
        fields.append(pa.field(model.target, pa.float64() if model.task is Task.regression
                               else pa.string()))
        schema = pa.schema(fields)
        rows = 0
        with self._chunks(upload) as chunks, pq.ParquetWriter(path, schema) as writer:
            for start, chunk in chunks:
                try:
                    part = conform(self._frame(chunks.header, chunk), model, features)
                except BadRequest as exc:
                    raise _shifted(exc, start) from None
                writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))
                rows = start + len(chunk)
                lease.renew(rows_read=rows, phase="checking rows")
        return rows

    def _write_images(self, upload: Record, model: ModelRecord, path: Path, lease: Lease) -> int:
        """A zip upload of labelled images: read entry by entry from the object's file with
        ``add_data``'s checks and decoding (``read_images``, ``preprocess``, ``image_frame``),
        written at ``path`` as Parquet, one row group per chunk of images; returns the images."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from common.archives import iter_images
        from common.images import preprocess
        from common.training.datasets import image_frame
        from common.training.frames import pixel_columns

        spec = model.image
        assert spec is not None
        fields = [pa.field(c, pa.float32()) for c in pixel_columns(spec)]
        fields.append(pa.field(model.target, pa.float64() if model.task is Task.regression
                               else pa.string()))
        schema = pa.schema(fields)
        # A chunk's pixels stay near IMAGE_CHUNK_BYTES whatever the image size.
        size = max(1, min(self.settings.ingest_chunk_rows, IMAGE_CHUNK_BYTES // (4 * spec.n_pixels)))
        rows = 0
        with self._opened(upload) as raw, pq.ParquetWriter(path, schema) as writer:
            refuse_kind(upload.id, raw.read(HEAD_BYTES), model.name, True, "ingest")
            raw.seek(0)
            images = iter_images(raw, self.settings.upload_archive_limits, labelled=True,
                                 decode=lambda name, blob: preprocess(blob, spec, name=name),
                                 numbered=True)
            try:
                while chunk := list(itertools.islice(images, size)):
                    frame = image_frame([i.data for i in chunk], [i.label for i in chunk],
                                        [i.name for i in chunk], model)
                    writer.write_table(pa.Table.from_pandas(frame, schema=schema,
                                                            preserve_index=False))
                    rows += len(chunk)
                    lease.renew(rows_read=rows, phase="checking images")
            except BadRequest as exc:  # a bad entry's "(row N)" becomes the ingestion's row
                raise _shifted(exc, 0) from None
        return rows

    def _register(self, model: ModelRecord, key: str, path: Path, rows: int,
                  features: list[Feature] | None, filename: str | None) -> tuple[int, int]:
        """Store the part file, then register it (fixing ``features`` on a first upload of a
        tabular model; None for images); on a refusal the file is removed again (as
        ``Lifecycle._store_part`` does)."""
        self.backends.datasets.put_file(key, path)
        first = model.features is None
        try:
            part = self.store.add_dataset_part(model.name, key, rows, features if first else None,
                                               "upload", filename)
        except ServiceError:
            self.backends.datasets.delete(key)
            raise
        return part.version, part.rows
