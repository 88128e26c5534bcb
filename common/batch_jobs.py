"""Batch scoring jobs: ``POST /batch_jobs?model=[&experiment=]&upload=ID`` scores a received CSV
upload (``common/uploads.py``; for an image model a zip of images) in chunks, 202 with a job id;
``GET /batch_jobs/{id}`` shows its progress and, once done, where to download the result.

A job runs as tasks on revisioned records (``common/storage/records.py``) with the lease,
fencing and retry of ``common/tasks.py``, on the workers the ingestions use (the embedded task
pool, or SQS messages on the batch queue for the score worker):

1. *plan* (the job record, ``phase: plan``): one pass over the upload finds the byte offsets of
   row boundaries (quote-aware: a quoted field may hold a line break) and cuts the file into
   chunks of about ``MLFN_BATCH_CHUNK_BYTES``, each recorded as a chunk record with its byte
   range and the number of its first row; the header's columns get ``/forward_batch``'s checks.
   A zip of images for an image model: its central directory (read by byte ranges, with the
   checks ``/forward_batch`` makes of an archive) is cut into runs of consecutive images of
   about ``MLFN_BATCH_CHUNK_BYTES`` compressed, each chunk the run's first image and count.
2. *score* (one chunk record each): the chunk's byte range is read and scored with one ONNX run.
   A plain chunk (no quotes, only finite numbers and non-empty categories) is read in one pass
   of NumPy's C reader; any other goes through ``csv`` and the validation of ``/forward_batch``
   (same predictions, row numbers of the whole file). Its output CSV is stored at a key fixed by
   the job and chunk number; then the chunk is added to the job's ``done`` map (a compare-and-
   set), and the write that completes the map also queues the job's last phase. A retried chunk
   (its worker died) writes the same key with the same bytes, and ``done`` is keyed by chunk:
   every row is in the result exactly once whatever was retried. An image chunk reads the
   archive's directory and its own entries by byte ranges (no download of the whole zip),
   decodes them as ``/forward_batch`` does and scores them in one run.
3. *assemble* (the job record again, ``phase: assemble``): the chunk outputs, in order, become
   one CSV, stored with one atomic write (local: a temporary file renamed; S3: a PUT or
   multipart upload visible only once complete) at ``_batch/<job>/result.csv``, and only then
   is the job ``succeeded`` with the result's key. A job never exposes a half-written result.

A row that fails validation fails the whole job with the row named (as an ingestion does), and
its chunk outputs are removed. Every job scores the experiment it was given, or the one deployed
when it was created, for all its chunks.

The scoring path imports no pandas or scikit-learn (the score worker runs on the ONNX layer).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from common.backends import Backends
from common.errors import BadRequest, Conflict, NotFound, ObjectChanged, ServiceError
from common.names import model_name
from common.storage.ranged import open_ranged
from common.storage.records import Record, StaleRecord, record_store
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
from common.uploads import HEAD_BYTES, Uploads, as_arrived, incarnation, presigned_url, refuse_kind

log = logging.getLogger("mlfn.batch_jobs")

KIND, CHUNK = "batch_job", "batch_chunk"
SCORING = "scoring"  # the chunks are being scored: the job record itself is not claimable
ENDED = (SUCCEEDED, FAILED)
PREFIX = "_batch/"
JOB_ID = re.compile(r"[0-9a-f]{32}")
RECORD_DAYS = 30
OUTPUT_ROW = "row"
OUTPUT_FILE = "file"  # a zip's rows: the image's name in the archive, as /forward_batch's files
IMAGE_CHUNK_PIXEL_BYTES = 64 * 1024 * 1024
# The last zip a worker process scored chunks of (BatchJobs._archive): its key, the open
# archive, its entries and the ranged file under it.
_ARCHIVE: dict[str, tuple[tuple[int, str, str | None], Any, list[Any], Any]] = {}
_ARCHIVE_LOCK = threading.Lock()


def check_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise BadRequest(f"invalid batch job id {job_id[:40]!r}: batch jobs are named by the 32 "
                         "hexadecimal characters POST /batch_jobs answered")
    return job_id


def chunk_id(job_id: str, index: int) -> str:
    return f"{job_id}-{index:06d}"


def chunk_key(job_id: str, index: int) -> str:
    return f"{PREFIX}{job_id}/chunks/{index:06d}.csv"


def result_key(job_id: str) -> str:
    return f"{PREFIX}{job_id}/result.csv"


def _detail(exc: BaseException) -> str:
    return exc.detail if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"


ROW = re.compile(r"\(row ([0-9]+)\)")
BARE_ROW = re.compile(r"\brow ([0-9]+)\b")


def _row_of(detail: str) -> int | None:
    """The row an error names: "(row N)" first (a file name in it may hold "row 7" too)."""
    found = ROW.search(detail) or BARE_ROW.search(detail)
    return None if found is None else int(found[1])


def _plain_rows(block: bytes) -> int:
    """The rows of ``block``: whole lines with no quote character and no carriage return but
    in CRLF; its lines that are not empty (a lone LF or CRLF is no row for csv; a line of
    spaces is one)."""
    import numpy as np

    buf = np.frombuffer(block, dtype=np.uint8)
    breaks = np.flatnonzero(buf == 0x0A)
    lengths = np.diff(breaks, prepend=-1) - 1  # each line's bytes before its break
    empty = (lengths == 0) | ((lengths == 1) & (buf[np.maximum(breaks - 1, 0)] == 0x0D))
    return len(breaks) - int(empty.sum()) + (not block.endswith(b"\n"))


def _crs_in_crlf(data: bytes) -> bool:
    """Whether every CR of ``data`` is followed by an LF (no CR at all: one memchr)."""
    import numpy as np

    if b"\r" not in data:
        return True
    buf = np.frombuffer(data, dtype=np.uint8)
    after = np.flatnonzero(buf == 0x0D) + 1
    return bool(after[-1] < len(buf) and (buf[after] == 0x0A).all())


_SPECIAL = re.compile(rb'[",\r\n]')
# A line that is one row of unquoted cells without quotes and quoted cells: csv reads it so.
_PLAIN_RECORD = re.compile(rb'(?:"(?:[^"]|"")*"|[^",\r\n]*)(?:,(?:"(?:[^"]|"")*"|[^",\r\n]*))*'
                           rb'\r?\n?')
# The states of Python's csv reader (the default dialect) that matter for where rows end.
_RECORD, _FIELD_START, _FIELD, _QUOTED, _QUOTE = range(5)


class _RowCounter:
    """Rows of a CSV exactly as Python's ``csv`` module reads them (comma, double quotes
    doubled inside quotes, a quote elsewhere in a field a plain character, CR, LF or CRLF
    ending a row, empty lines no rows), over bytes fed in order: a piece starting at a row
    boundary with no quote and no lone CR is counted with NumPy (``_plain_rows``); the others
    go through csv's state machine, byte by byte over the quotes, commas and line breaks."""

    def __init__(self) -> None:
        self.rows = 0
        self.state = _RECORD
        self.eat_lf = False  # a CR just ended a line: an LF right after it belongs to it

    @property
    def at_boundary(self) -> bool:
        return self.state == _RECORD

    def feed(self, data: bytes) -> None:
        if self.eat_lf and data[:1] == b"\n":
            data = data[1:]
        self.eat_lf = False
        if not data:
            return
        if self.state == _RECORD and b'"' not in data and _crs_in_crlf(data):
            self.rows += _plain_rows(data)
            return
        self._scan(data)

    def end(self) -> None:
        """The end of the file: an unterminated last row counts (csv reads it)."""
        if self.state != _RECORD:
            self.rows += 1
            self.state = _RECORD

    def _scan(self, data: bytes) -> None:
        for line in io.BytesIO(data):  # lines end at LF only: a lone CR goes to the machine
            if self.state == _RECORD and not self.eat_lf:
                if line in (b"\n", b"\r\n", b"\r"):
                    continue  # an empty line
                if _PLAIN_RECORD.fullmatch(line):  # one whole row of well-formed cells
                    self.rows += 1
                    continue
            self._machine(line)

    def _machine(self, data: bytes) -> None:
        state, after = self.state, 0
        eat_at = 0 if self.eat_lf else -1  # where an LF is part of the CRLF before it
        for match in _SPECIAL.finditer(data):
            at = match.start()
            if at > after and state in (_RECORD, _FIELD_START, _QUOTE):
                state = _FIELD  # other characters: a field (after a closing quote: csv keeps them)
            after = at + 1
            char = data[at]
            if char == 0x22:  # "
                state = {_RECORD: _QUOTED, _FIELD_START: _QUOTED, _FIELD: _FIELD,
                         _QUOTED: _QUOTE, _QUOTE: _QUOTED}[state]
            elif char == 0x2C:  # ,
                if state != _QUOTED:
                    state = _FIELD_START
            elif state == _QUOTED:
                pass  # a line break inside a quoted cell
            elif char == 0x0A and at == eat_at:
                pass
            else:  # CR or LF ending a line: a row unless the line was empty
                if state != _RECORD:
                    self.rows += 1
                state = _RECORD
                if char == 0x0D:
                    eat_at = at + 1
        if len(data) > after and state in (_RECORD, _FIELD_START, _QUOTE):
            state = _FIELD
        self.state = state
        self.eat_lf = eat_at == len(data)


def _read_line(raw: Any, block: bytes, limit: int) -> bytes:
    """``block`` completed to the end of its line: through the next LF, CR or CRLF (a file of
    classic Mac line ends has no LF at all); the bytes read past it are given back (``raw`` is
    seekable). BadRequest past ``limit`` bytes without a line end."""
    while not block.endswith((b"\n", b"\r")):
        more = raw.read(64 * 1024)
        if not more:
            return block
        cut = min((i for i in (more.find(b"\n"), more.find(b"\r")) if i >= 0), default=-1)
        if cut < 0:
            block += more
            if len(block) > limit:
                raise BadRequest(f"malformed CSV: a line longer than {limit} bytes (no line "
                                 "break; is it a CSV file?)")
            continue
        if more[cut] == 0x0D and more[cut + 1:cut + 2] == b"\n":
            cut += 1
        raw.seek(cut + 1 - len(more), io.SEEK_CUR)
        return block + more[:cut + 1]
    if block.endswith(b"\r"):  # its LF may follow
        following = raw.read(1)
        if following == b"\n":
            return block + following
        if following:
            raw.seek(-1, io.SEEK_CUR)
    return block


HEADER_LIMIT = 16 * 1024 * 1024  # a header row longer than this is refused


def plan_chunks(raw: Any, chunk_bytes: int,
                renew: Callable[[], None] = lambda: None) -> tuple[bytes, list[dict[str, int]]]:
    """The header row and the chunks of a CSV file read from ``raw`` (seekable): byte ranges
    that start and end at row boundaries, each about ``chunk_bytes`` long, with the number of
    their first data row, rows counted as csv reads them (``_RowCounter``: quoted cells over
    line breaks, CR, LF or CRLF line ends, empty lines no rows). ``renew`` is called after each
    chunk (the plan's lease, on a file of gigabytes)."""
    header = b""
    counter = _RowCounter()
    while counter.rows == 0:  # empty lines before it; a quoted line break in it
        line = _read_line(raw, b"", HEADER_LIMIT)
        if not line:
            break
        header += line
        if len(header) > HEADER_LIMIT:
            raise BadRequest(f"malformed CSV: the header row is longer than {HEADER_LIMIT} bytes")
        counter.feed(line)
    if not counter.at_boundary:  # the file ends inside the header
        counter.end()
    offset = len(header)
    counter = _RowCounter()
    chunks: list[dict[str, int]] = []
    start, first = offset, 0
    while True:
        block = raw.read(max(chunk_bytes, 1))
        if not block:
            break
        block = _read_line(raw, block, max(chunk_bytes, 1) + HEADER_LIMIT)
        offset += len(block)
        counter.feed(block)
        if counter.at_boundary and offset - start >= chunk_bytes and counter.rows > first:
            chunks.append({"start": start, "end": offset, "first_row": first,
                           "rows": counter.rows - first})
            start, first = offset, counter.rows
            renew()
    counter.end()
    if counter.rows > first:
        chunks.append({"start": start, "end": offset, "first_row": first,
                       "rows": counter.rows - first})
    return header, chunks


def _checked_numbers(values: Any) -> Any:
    """``values`` (float64) as a float32 feed column, or None when one is not plain: NaN, inf or
    beyond float32 (the value-by-value path then names the row)."""
    import numpy as np

    from common.inference.inputs import FLOAT32_MAX

    if not np.abs(values).max() <= FLOAT32_MAX:  # also False for NaN and inf
        return None
    return values.astype(np.float32).reshape(-1, 1)


_LOADTXT_STRIPS = re.compile(rb"[\x1c-\x1f]")  # separators np.loadtxt takes for whitespace


def _fast_feeds(features: list[Any], header: list[str], data: bytes,
                rows: int) -> dict[str, Any] | None:
    """The ONNX feeds of a chunk (UTF-8 ``data``) read in whole-array passes, when the chunk is
    plain: no quote character (unquoted CSV splits the same way in every reader), no lone
    carriage return, exactly ``rows`` rows of the header's width, every numeric cell a number
    within float32 and every categorical cell non-empty. Plain decimals are read by
    :func:`common.plain_csv.plain_columns`, anything else ``float()`` reads by NumPy's C reader
    (``np.loadtxt``). None otherwise: the rows then go through ``csv`` and the checks of
    ``/forward_batch``, which name the culprit."""
    import numpy as np

    from common.domain import FeatureKind
    from common.plain_csv import plain_columns

    if not rows or b'"' in data:
        return None
    if not _crs_in_crlf(data):  # a lone CR ends a row for csv, not for loadtxt
        return None
    kinds = {f.name: f.kind for f in features}
    numeric = [i for i, name in enumerate(header) if kinds.get(name) is FeatureKind.numeric]
    text = [i for i, name in enumerate(header) if kinds.get(name) is FeatureKind.categorical]
    plain = plain_columns(data, len(header), numeric, text, rows)
    if plain is not None:
        columns = dict(zip(numeric + text, plain[0] + plain[1], strict=True))
    else:
        if _LOADTXT_STRIPS.search(data):  # loadtxt strips these around a number, float() not
            return None
        fields = [(f"c{i}", "f8" if i in numeric else "O") for i in range(len(header))]
        try:
            table = np.loadtxt(io.StringIO(data.decode("utf-8")), dtype=np.dtype(fields),
                               delimiter=",", comments=None, quotechar=None, ndmin=1)
        except ValueError:  # a cell that is not a number, a row of another width
            return None
        if len(table) != rows:
            return None
        limit = csv.field_size_limit()  # csv refuses a longer cell: so does this path
        if any(max(map(len, table[f"c{i}"].tolist()), default=0) > limit
               for i in range(len(header)) if i not in numeric):
            return None
        columns = {i: table[f"c{i}"] for i in numeric + text}
    feeds: dict[str, Any] = {}
    for i in sorted(columns):
        column = columns[i]
        if i in numeric:
            feeds[header[i]] = _checked_numbers(column)
            if feeds[header[i]] is None:
                return None
        else:
            if (column == "").any():
                return None
            feeds[header[i]] = column.reshape(-1, 1)
    return feeds


def _plain_feeds(features: list[Any], header: list[str],
                 rows: list[list[str]]) -> dict[str, Any] | None:
    """The ONNX feeds of CSV rows in one NumPy call per column when every cell is plain (a
    finite number within float32 for a numeric feature, a non-empty string for a categorical
    one): the feeds ``feeds_from_records`` builds from the same cells. None otherwise, and the
    rows then go through ``OnnxModel.predict`` value by value, which names the culprit."""
    import numpy as np

    from common.domain import FeatureKind

    if not rows:
        return None
    columns = dict(zip(header, zip(*rows, strict=True), strict=True))
    feeds: dict[str, Any] = {}
    for f in features:
        cells = columns[f.name]
        if f.kind is FeatureKind.numeric:
            try:  # float(), as parse_csv_cell reads a cell; "" and text raise
                values = np.array(list(map(float, cells)), dtype=np.float64)
            except ValueError:
                return None
            feeds[f.name] = _checked_numbers(values)
            if feeds[f.name] is None:
                return None
        else:
            if "" in cells:
                return None
            feeds[f.name] = np.array(cells, dtype=object).reshape(-1, 1)
    return feeds


def _csv_cell(value: Any) -> str:
    """``value`` as ``csv.writer`` writes it in a row (quoted when it must be: a delimiter, a
    quote, or a line break, which csv only quotes when it is in the line terminator)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow([value])
    return buf.getvalue()[:-2]


def _float_texts(values: Any) -> list[str]:
    """``repr`` of each float64 of ``values``, computed once per distinct value when values
    repeat (a forest's probabilities are averages of few leaf values: a few hundred distinct
    ones in a chunk of thousands of rows)."""
    import numpy as np

    values = np.ascontiguousarray(values, dtype=np.float64)
    # by bit pattern: 0.0 and -0.0 are equal floats but distinct texts
    distinct, index = np.unique(values.view(np.int64), return_inverse=True)
    if len(distinct) > len(values) // 2:
        return list(map(repr, values.tolist()))
    texts = list(map(repr, distinct.view(np.float64).tolist()))
    return [texts[i] for i in index.tolist()]


def plan_image_chunks(sizes: list[int], chunk_bytes: int, cap: int) -> list[dict[str, int]]:
    """Runs of consecutive images (their compressed ``sizes``, in archive order) of about
    ``chunk_bytes`` and at most ``cap`` images each: the first image's number and the count."""
    chunks: list[dict[str, int]] = []
    first, size = 0, 0
    for i, entry in enumerate(sizes):
        size += entry
        if size >= chunk_bytes or i + 1 - first >= cap:
            chunks.append({"first_row": first, "rows": i + 1 - first})
            first, size = i + 1, 0
    if first < len(sizes):
        chunks.append({"first_row": first, "rows": len(sizes) - first})
    return chunks


def output_rows(first: int, scores: Any, classes: list[Any], files: list[str] | None = None) -> str:
    """The result rows of scored rows numbered from ``first``: ``row`` (and for a zip the
    image's ``file``), ``prediction`` and, for a classifier, one probability per class in the
    model's order. The text ``csv.writer`` writes
    for the same values (a float as ``repr``: the shortest text that reads back the same
    float), built a column at a time."""
    if scores.values is not None:
        columns = [_float_texts(scores.values)]
    else:
        texts = {c: _csv_cell(c) for c in classes}
        columns = [[texts[c] for c in scores.labels]]
        columns += [_float_texts(column) for column in scores.probabilities.T]
    if files is not None:
        columns.insert(0, [_csv_cell(name) for name in files])
    if not columns[0]:
        return ""
    numbers = map(str, range(first, first + len(columns[0])))
    return "\n".join(map(",".join, zip(numbers, *columns, strict=True))) + "\n"


class BatchJobs:
    def __init__(self, backends: Backends, queue: TaskQueue | None) -> None:
        self.backends = backends
        self.settings = backends.settings
        self.store = backends.experiments
        self.objects = backends.datasets
        self.uploads = Uploads(backends)
        self.records = record_store(backends.experiments)
        self.state = TaskState(self.records, self.settings.job_lease_seconds,
                               self.settings.job_heartbeat_seconds)
        self.queue = queue

    # -- requests --------------------------------------------------------------------------
    def start(self, model: str, upload_id: str, experiment_id: int | None) -> dict[str, Any]:
        """Queue the scoring of upload ``upload_id`` by ``model`` (202)."""
        name = model_name(model)
        record = self.store.get_model(name)  # a clear 404 for an unknown model
        experiment_id = self._experiment(name, experiment_id)
        upload = self._upload(lambda: self.uploads.arrived(upload_id, name))
        self.uploads.check_kind(upload, record.image is not None, "score")
        job_id = uuid.uuid4().hex
        expires = int(time.time()) + RECORD_DAYS * 86_400
        doc = {"job_id": job_id, "model": name, "model_created": incarnation(record),
               "experiment_id": experiment_id,
               "upload_id": upload.id, "key": upload.doc["key"], "size": upload.doc.get("size"),
               "version": upload.doc.get("version"),
               "filename": upload.doc.get("filename"), "status": QUEUED, "phase": "plan",
               "attempts": 0, "done": {}, "created_at": iso_now(), "created_ts": time.time(),
               "record_expires": expires}
        # Recorded "new" (no worker claims it), noted on the upload (an ingestion then sees a
        # job that reads it), and only then queued: a job never runs on an upload it lost.
        created = self.records.create(KIND, job_id, {**doc, "status": NEW}, expires=expires)
        try:
            self._upload(lambda: self.uploads.hold(upload_id, name, job_id))
        except BaseException:
            self.records.delete(KIND, job_id)
            raise
        queued = self.records.update(created, doc)
        self._submit(queued, {"task": "batch_job", "id": job_id})
        return self.describe(queued)

    def _experiment(self, model: str, experiment_id: int | None) -> int:
        if experiment_id is None:
            deployed = self.store.deployed_experiment(model)
            if deployed is None:
                raise NotFound(f"model {model!r} has no deployed experiment: deploy one or name "
                               "it with query parameter 'experiment'")
            return deployed
        try:
            exp = self.store.get_experiment(experiment_id)
        except NotFound:
            raise NotFound(f"query parameter 'experiment': experiment {experiment_id} does not "
                           "exist") from None
        if exp.model != model:
            raise BadRequest(f"query parameter 'experiment': experiment {experiment_id} belongs "
                             f"to model {exp.model!r}, not {model!r}")
        if exp.status.value != SUCCEEDED or not exp.artifact_key:
            raise BadRequest(f"query parameter 'experiment': experiment {experiment_id} is "
                             f"{exp.status.value}; only a succeeded experiment has a model")
        return experiment_id

    @staticmethod
    def _upload(read: Callable[[], Record]) -> Record:
        """The upload ``read`` returns, its errors naming the query parameter."""
        try:
            return read()
        except BadRequest as exc:
            raise BadRequest(exc.detail if exc.detail.startswith("query parameter")
                             else f"query parameter 'upload': {exc.detail}") from None
        except NotFound as exc:
            raise NotFound(f"query parameter 'upload': {exc.detail}") from None

    def _submit(self, record: Record, task: dict[str, Any]) -> None:
        if self.queue is None:
            return
        try:
            self.queue.submit(task)
        except ServiceError as exc:
            self._fail_job(record.id, exc)
            raise

    def get(self, job_id: str) -> Record:
        try:
            return self.records.get(KIND, check_id(job_id))
        except NotFound:
            raise NotFound(f"batch job {job_id} does not exist") from None

    def status(self, job_id: str, model: str | None = None) -> dict[str, Any]:
        record = self.get(job_id)
        if model is not None and record.doc["model"] != model_name(model):
            raise NotFound(f"batch job {job_id} belongs to model {record.doc['model']!r}, not "
                           f"{model!r}")
        return self.describe(record, links=True)

    def of_model(self, model: str) -> list[dict[str, Any]]:
        """The model's jobs (those whose records have not expired), newest first."""
        name = model_name(model)
        created = incarnation(self.store.get_model(name))  # a clear 404 for an unknown model
        # not those of a deleted model of the name (its deletion failed or raced them)
        records = [r for r in self.records.with_status(KIND, (NEW, QUEUED, RUNNING, SCORING, *ENDED))
                   if r.doc.get("model") == name
                   and r.doc.get("model_created", created) == created]
        records.sort(key=lambda r: str(r.doc.get("created_at", "")), reverse=True)
        return [self.describe(r) for r in records]

    def unfinished(self, model: str, experiment_id: int | None = None) -> list[str]:
        """The ids of ``model``'s jobs (those scoring ``experiment_id``, if given) that have not
        ended, oldest first. A job whose start died before it was queued is not one of them."""
        name = model_name(model)
        found = [r for r in self.records.with_status(KIND, (NEW, QUEUED, RUNNING, SCORING))
                 if r.doc.get("model") == name and not self.state.start_died(r)
                 and (experiment_id is None or r.doc.get("experiment_id") == experiment_id)]
        return [r.id for r in sorted(found, key=lambda r: str(r.doc.get("created_at", "")))]

    def remove_of_model(self, model: str) -> list[str]:
        """A deleted model's ended jobs go: their records (the job's and its chunks'), then
        their results and chunk outputs (a crash in between leaves outputs without a job,
        which ``mlfn gc`` removes). A job started while the model was being deleted is left to
        fail on its own (its model is gone) and expire. Returns the job ids."""
        name = model_name(model)
        jobs = [r for r in self.records.with_status(KIND, (NEW, *ENDED))
                if r.doc.get("model") == name and (r.status != NEW or self.state.start_died(r))]
        for job in jobs:
            for index in range(int(job.doc.get("chunks_total") or 0)):
                self.records.delete(CHUNK, chunk_id(job.id, index))
            self.records.delete(KIND, job.id)
        for job in jobs:
            for key in self.objects.list(f"{PREFIX}{job.id}/"):
                self.objects.delete(key)
        return [job.id for job in jobs]

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a job that has not ended: it fails as cancelled (the first end wins: Conflict
        if it ended first), its chunk outputs are removed and no result is published; a
        chunk being scored finishes its run and is dropped."""
        record = self.get(job_id)
        if record.status not in ENDED:
            self._fail_job(job_id, ServiceError(f"cancelled by POST /batch_jobs/{job_id}/cancel"),
                           cancelled=True)
            record = self.get(job_id)
        if not record.doc.get("cancelled"):
            raise Conflict(f"batch job {job_id} {record.status} before it could be cancelled; "
                           "nothing to cancel")
        with contextlib.suppress(Exception):  # an assembly that wrote just before the cancel
            self.objects.delete(result_key(job_id))
        return self.describe(record)

    def describe(self, record: Record, links: bool = False) -> dict[str, Any]:
        doc = record.doc
        out = {k: doc.get(k) for k in ("job_id", "model", "experiment_id", "upload_id",
                                        "status", "created_at")}
        out["status"] = RUNNING if doc["status"] == SCORING or (
            doc["status"] == QUEUED and doc.get("phase") == "assemble") else doc["status"]
        if doc["status"] == NEW:
            out["status"] = QUEUED
        out["phase"] = doc.get("phase")
        done = doc.get("done") or {}
        out["chunks_done"] = len(done)
        out["chunks_total"] = doc.get("chunks_total")
        out["rows_done"] = sum(done.values())
        for name in ("rows", "filename", "size", "started_at", "finished_at", "error", "row",
                     "attempts", "cancelled"):
            if doc.get(name) is not None:
                out[name] = doc[name]
        began, ended = doc.get("scoring_since"), doc.get("scoring_until") or time.time()
        if began and out["rows_done"]:
            out["rows_per_second"] = round(out["rows_done"] / max(ended - began, 1e-6), 1)
        out["url"] = f"/batch_jobs/{doc['job_id']}"
        if links and doc["status"] == SUCCEEDED:
            out["result"] = self._download(doc)
        return out

    def _download(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.settings.object_store == "s3":
            seconds = self.settings.upload_url_seconds
            url = presigned_url(self.backends, "get_object", {"Key": doc["result_key"]}, seconds)
            return {"url": url, "url_expires_in": seconds, "content_type": "text/csv"}
        return {"url": f"/batch_jobs/{doc['job_id']}/result", "content_type": "text/csv"}

    def result(self, job_id: str) -> BinaryIO:
        """The result CSV of a succeeded job, open (the service's own download URL; the caller
        closes it)."""
        record = self.get(job_id)
        if record.status == FAILED:
            why = "was cancelled" if record.doc.get("cancelled") else "failed"
            raise Conflict(f"batch job {job_id} {why} ({record.doc.get('error')}); it has no "
                           "result")
        if record.status != SUCCEEDED:
            raise Conflict(f"batch job {job_id} is {self.describe(record)['status']}; its result "
                           f"is there once it succeeded (GET /batch_jobs/{job_id} says when)")
        return self.objects.open_read(record.doc["result_key"])

    # -- workers ---------------------------------------------------------------------------
    def claimable(self) -> list[dict[str, Any]]:
        """The tasks an embedded worker may run now."""
        records = self.records.with_status(KIND, (QUEUED, RUNNING))
        jobs = [{"task": "batch_job", "id": r.id} for r in records if self.state.claimable(r)]
        planning = {r.id for r in records if r.doc.get("phase") == "plan"}
        chunks = [{"task": "batch_chunk", "id": r.id}
                  for r in self.records.with_status(CHUNK, (QUEUED, RUNNING))
                  if self.state.claimable(r) and r.doc["job_id"] not in planning]
        return jobs + chunks

    def recover(self) -> list[dict[str, Any]]:
        tasks = self.claimable()
        if self.queue is not None:
            self.queue.start()
            if tasks:
                self.queue.submit(tasks[0])
        return tasks

    def run(self, task: dict[str, Any]) -> Record:
        """A worker's entry point: a job's plan or assembly, or one chunk. Conflict if another
        worker holds it; the record as left otherwise."""
        if task.get("task") == "batch_chunk":
            return self.run_chunk(str(task["id"]))
        return self.run_job(str(task["id"]))

    def run_job(self, job_id: str) -> Record:
        record = self.records.get(KIND, job_id)
        lease = self.state.claim(record, self._give_up)
        if lease is None:
            return self.records.get(KIND, job_id)
        try:
            if lease.doc.get("phase") == "assemble":
                return self._assemble(lease)
            return self._plan(lease)
        except Lost:
            raise
        except ServiceError as exc:
            if exc.status >= 500:
                return self._again(lease, exc)
            return self._finish_failed(lease, exc)
        except Exception as exc:
            log.exception("batch job %s, attempt %s", job_id, lease.attempt)
            return self._again(lease, exc)

    def _again(self, lease: Lease, exc: BaseException) -> Record:
        if lease.attempt >= MAX_ATTEMPTS:
            if lease.record.kind == CHUNK:
                self._fail_job(lease.doc["job_id"], exc)
                return lease.write(status=FAILED, error=_detail(exc), finished_at=iso_now())
            return self._finish_failed(lease, exc)
        return lease.write(status=QUEUED, last_error=_detail(exc))

    def _finish_failed(self, lease: Lease, exc: BaseException) -> Record:
        detail = _detail(exc)
        done = lease.write(status=FAILED, error=detail, row=_row_of(detail), finished_at=iso_now())
        self._clean(done)
        return done

    def _give_up(self, record: Record) -> None:
        exc = ServiceError(f"{MAX_ATTEMPTS} attempts ran out of their lease (their workers "
                           "stopped); no result was written")
        if record.kind == CHUNK:
            self._fail_job(record.doc["job_id"], exc)
            with contextlib.suppress(StaleRecord):
                self.records.update(record, {**record.doc, "status": FAILED,
                                             "error": exc.detail})
        else:
            self._fail_job(record.id, exc)

    def _fail_job(self, job_id: str, exc: BaseException, cancelled: bool = False) -> None:
        """Fail the job (the first failure is the one kept) and remove its chunk outputs."""
        detail = _detail(exc)
        for _ in range(20):
            record = self.records.get(KIND, job_id)
            if record.status in (SUCCEEDED, FAILED):
                return
            doc = {**record.doc, "status": FAILED, "error": detail, "row": _row_of(detail),
                   "finished_at": iso_now()}
            if cancelled:
                doc["cancelled"] = True
            try:
                done = self.records.update(record, doc)
            except StaleRecord:
                continue
            self._clean(done)
            return

    def _clean(self, job: Record) -> None:
        """The job has ended: its upload is released, its zip's directory need not stay in
        memory, its chunk outputs go."""
        self.uploads.release_hold(job.doc["upload_id"], job.id)
        with _ARCHIVE_LOCK:
            cached = _ARCHIVE.get("open")
            if cached is not None and cached[0][1] == job.doc.get("key"):
                del _ARCHIVE["open"]
        with contextlib.suppress(Exception):  # leftovers are removed again by a later failure
            for key in self.objects.list(f"{PREFIX}{job.id}/chunks/"):
                self.objects.delete(key)

    # -- plan ------------------------------------------------------------------------------
    def _plan(self, lease: Lease) -> Record:
        doc = lease.doc
        onnx_model = self._model(doc)
        if onnx_model.image is not None:
            return self._plan_images(lease, onnx_model)
        with as_arrived(doc["upload_id"]), \
                self.objects.open_read(doc["key"], doc.get("version")) as raw:
            refuse_kind(doc["upload_id"], raw.read(HEAD_BYTES), doc["model"], False, "score")
            raw.seek(0)
            header, chunks = plan_chunks(raw, self.settings.batch_chunk_bytes, lease.renew)
        columns = self._header(onnx_model, header)
        if not chunks:
            raise BadRequest("the CSV has no data rows (a header row, then one row per example)")
        return self._record_plan(lease, chunks, columns=columns)

    def _plan_images(self, lease: Lease, onnx_model: Any) -> Record:
        doc = lease.doc
        refuse_kind(doc["upload_id"], self._upload_bytes(doc, 0, HEAD_BYTES), doc["model"], True,
                    "score")
        entries = self._archive(doc)[1]  # kept open: this worker's chunks read it
        # decoded pixels of one chunk held at once: float32, at most IMAGE_CHUNK_PIXEL_BYTES
        cap = max(1, min(self.settings.max_batch_rows,
                         IMAGE_CHUNK_PIXEL_BYTES // (4 * onnx_model.image.n_pixels)))
        chunks = plan_image_chunks([info.compress_size for info, _ in entries],
                                   self.settings.batch_chunk_bytes, cap)
        return self._record_plan(lease, chunks, columns=[], input="zip")

    def _record_plan(self, lease: Lease, chunks: list[dict[str, int]], **fields: Any) -> Record:
        doc = lease.doc
        for i, chunk in enumerate(chunks):  # a re-planned job records the same chunks
            with contextlib.suppress(Conflict):
                self.records.create(CHUNK, chunk_id(lease.record.id, i),
                                    {"job_id": lease.record.id, "index": i, **chunk,
                                     "status": QUEUED, "attempts": 0,
                                     "record_expires": doc["record_expires"]},
                                    expires=doc["record_expires"])
            lease.renew()
        planned = lease.write(status=SCORING, phase="score", chunks_total=len(chunks),
                              rows=sum(c["rows"] for c in chunks), scoring_since=time.time(),
                              **fields)
        if self.queue is not None:
            for i in range(len(chunks)):
                self.queue.submit({"task": "batch_chunk", "id": chunk_id(lease.record.id, i)})
        return planned

    def _model(self, doc: dict[str, Any]) -> Any:
        from common import context

        return context.serving().load(doc["model"], int(doc["experiment_id"]))

    @staticmethod
    def _header(onnx_model: Any, header: bytes) -> list[str]:
        """The file's columns, with ``/forward_batch``'s checks (UTF-8, unique, every feature
        there, no unknown column)."""
        from common.payloads import csv_records

        if not header.strip():
            raise BadRequest("the CSV is empty; it needs a header row")
        csv_records(header, onnx_model.features, target=onnx_model.metadata.get("target"))
        return next(csv.reader(io.StringIO(header.decode("utf-8-sig"), newline="")))

    # -- score -----------------------------------------------------------------------------
    def run_chunk(self, chunk: str) -> Record:
        record = self.records.get(CHUNK, chunk)
        try:
            job = self.records.get(KIND, record.doc["job_id"])
        except NotFound:  # its job was removed (expired): nothing to score it for
            with contextlib.suppress(StaleRecord):
                record = self.records.update(record, {**record.doc, "status": FAILED,
                                                      "error": "its job no longer exists"})
            return record
        if job.status in (SUCCEEDED, FAILED):  # nothing left to do for it
            if record.status not in (SUCCEEDED, FAILED):
                with contextlib.suppress(StaleRecord):
                    record = self.records.update(record, {**record.doc, "status": FAILED,
                                                          "error": f"the job {job.status}"})
            return record
        if job.doc.get("phase") == "plan":  # its chunks are recorded before the job's columns
            raise Conflict(f"batch job {job.id} is still being planned; its chunk {chunk} runs "
                           "once the plan is recorded")
        lease = self.state.claim(record, self._give_up)
        if lease is None:
            return self.records.get(CHUNK, chunk)
        try:
            rows = self._score(job, lease)
            self._done(job.id, int(lease.doc["index"]), rows)
            return lease.write(status=SUCCEEDED, rows=rows, finished_at=iso_now())
        except Lost:
            raise
        except ServiceError as exc:
            if exc.status >= 500:
                return self._again(lease, exc)
            self._fail_job(job.id, exc)
            return lease.write(status=FAILED, error=exc.detail, finished_at=iso_now())
        except Exception as exc:
            log.exception("batch chunk %s, attempt %s", chunk, lease.attempt)
            return self._again(lease, exc)

    def _score(self, job: Record, lease: Lease) -> int:
        from common.inference.inputs import feeds_from_records, parse_csv_cell

        doc, chunk = job.doc, lease.doc
        onnx_model = self._model(doc)
        if doc.get("input") == "zip":
            return self._score_images(job, lease, onnx_model)
        header: list[str] = doc["columns"]
        features = {f.name: f for f in onnx_model.features}
        first = int(chunk["first_row"])
        data = self._upload_bytes(doc, int(chunk["start"]), int(chunk["end"]))
        if not data.isascii():  # ASCII is UTF-8 (and checked without a copy)
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                from common.payloads import not_utf8_row

                raise BadRequest(not_utf8_row(data, first, header=False)) from None
        feeds = _fast_feeds(onnx_model.features, header, data, int(chunk["rows"]))
        if feeds is None:
            rows = self._rows(data.decode("utf-8"), first, len(header))
            feeds = _plain_feeds(onnx_model.features, header, rows)
        if feeds is not None:
            scores = onnx_model.scores(feeds)
        else:  # a cell that is not plain: /forward_batch's path, which names the row
            records = [{name: cell if (f := features.get(name)) is None
                        else parse_csv_cell(f, cell, first + i)
                        for name, cell in zip(header, row, strict=True)}
                       for i, row in enumerate(rows)]
            scores = onnx_model.scores(feeds_from_records(
                onnx_model.features, records, first, onnx_model.metadata.get("target")))
        return self._store_output(job, lease, onnx_model, scores)

    def _upload_bytes(self, doc: dict[str, Any], start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` of the job's upload, as it arrived."""
        with as_arrived(doc["upload_id"]):
            return self.objects.read_range(doc["key"], start, end, doc.get("version"))

    def _score_images(self, job: Record, lease: Lease, onnx_model: Any) -> int:
        import numpy as np

        from common.archives import read_entry
        from common.images import INPUT_NAME, preprocess

        spec = onnx_model.image
        first, rows = int(lease.doc["first_row"]), int(lease.doc["rows"])
        archive, entries = self._archive(job.doc)
        taken = entries[first:first + rows]
        pixels = []
        for n, (info, name) in enumerate(taken, 1):
            try:
                with as_arrived(job.doc["upload_id"]):
                    blob = read_entry(archive, info)
                pixels.append(preprocess(blob, spec, name=name))
            except ObjectChanged:
                raise
            except BadRequest as exc:  # the image's number in the archive's order
                raise BadRequest(f"{exc.detail} (row {first + n - 1})") from None
            if n % 500 == 0:
                lease.renew()
        if len(taken) != rows:
            raise ServiceError(f"upload {job.doc['upload_id']} changed under its batch job: "
                               f"chunk {lease.doc['index']} expected {rows} images")
        scores = onnx_model.scores({INPUT_NAME: np.stack(pixels)})
        return self._store_output(job, lease, onnx_model, scores, [n for _, n in taken])

    def _store_output(self, job: Record, lease: Lease, onnx_model: Any, scores: Any,
                      files: list[str] | None = None) -> int:
        """Store the chunk's result rows at its fixed key (and the job's class order, once);
        returns its rows."""
        lease.renew()
        classes = [] if scores.values is not None else onnx_model.classes
        self.objects.put(chunk_key(job.id, int(lease.doc["index"])),
                         output_rows(int(lease.doc["first_row"]), scores, classes, files).encode())
        if classes and "classes" not in job.doc:
            self._set_classes(job.id, [str(c) for c in classes])
        return len(scores.labels if scores.values is None else scores.values)

    def _archive(self, doc: dict[str, Any]) -> tuple[Any, list[Any]]:
        """The upload's zip, open over byte ranges, and its image entries. The central
        directory (~1 KB per entry, seconds for the largest archives) is read and checked once
        per process and archive: a worker scoring chunk after chunk of one job (a warm Lambda
        instance, a `mlfn worker`) keeps the last archive open. Entries are read through
        zipfile's shared file (a lock per read), so task threads can share it."""
        from common.archives import image_entries

        key, version = doc["key"], doc.get("version")
        with _ARCHIVE_LOCK:
            cached = _ARCHIVE.get("open")
            if cached is not None and cached[0] == (id(self.objects), key, version):
                return cached[1], cached[2]
            with as_arrived(doc["upload_id"]):
                raw = open_ranged(self.objects, key, version=version)
                try:
                    archive, entries = image_entries(raw, self.settings.upload_archive_limits)
                except BaseException:
                    raw.close()
                    raise
            # The one it replaces is not closed: a thread may still read from it (it holds
            # no OS resource; it goes with its last reference).
            _ARCHIVE["open"] = ((id(self.objects), key, version), archive, entries, raw)
            return archive, entries

    @staticmethod
    def _rows(text: str, first: int, width: int) -> list[list[str]]:
        reader = csv.reader(io.StringIO(text, newline=""))
        rows: list[list[str]] = []
        try:
            for row in reader:
                if not row:
                    continue
                if len(row) != width:
                    raise BadRequest(f"malformed CSV: row {first + len(rows)} has {len(row)} "
                                     f"fields, the header has {width}")
                rows.append(row)
        except csv.Error as exc:
            raise BadRequest(f"malformed CSV (row {first + len(rows)}): {exc}") from None
        return rows

    def _set_classes(self, job_id: str, classes: list[str]) -> None:
        for _ in range(20):
            record = self.records.get(KIND, job_id)
            if "classes" in record.doc:
                return
            try:
                self.records.update(record, {**record.doc, "classes": classes})
                return
            except StaleRecord:
                continue

    def _done(self, job_id: str, index: int, rows: int) -> None:
        """Add the chunk to the job's ``done`` map; the write that completes it queues the
        assembly (in the same compare-and-set, so exactly one writer does)."""
        for _ in range(100):
            record = self.records.get(KIND, job_id)
            if record.status != SCORING:
                if record.status == FAILED:  # failed while this chunk was scored: no leftovers
                    self.objects.delete(chunk_key(job_id, index))
                return
            done = {**record.doc.get("done", {}), str(index): rows}
            doc = {**record.doc, "done": done}
            last = len(done) == int(record.doc["chunks_total"])
            if last:
                # the assembly gets its own attempts (the plan's are done with)
                doc.update(status=QUEUED, phase="assemble", scoring_until=time.time(),
                           attempts=0, plan_attempts=record.doc.get("attempts"))
            try:
                updated = self.records.update(record, doc)
            except StaleRecord:
                continue
            if last:
                self._submit(updated, {"task": "batch_job", "id": job_id})
            return
        raise Conflict(f"batch job {job_id}: too many concurrent updates; retried later")

    # -- assemble --------------------------------------------------------------------------
    def _assemble(self, lease: Lease) -> Record:
        doc = lease.doc
        job_id = lease.record.id
        names = [OUTPUT_ROW, *([OUTPUT_FILE] if doc.get("input") == "zip" else []), "prediction",
                 *(f"probability_{c}" for c in doc.get("classes", []))]
        scratch = self.settings.data_dir / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            path = Path(tmp) / "result.csv"
            with open(path, "wb") as out:
                out.write((",".join(map(_csv_cell, names)) + "\n").encode())
                for i in range(int(doc["chunks_total"])):
                    out.write(self.objects.get(chunk_key(job_id, i)))
                    lease.renew()
            lease.write(phase="publishing")  # the fence: this attempt still holds the job
            self.objects.put_file(result_key(job_id), path, move=True)
        finished = lease.write(status=SUCCEEDED, phase="done", result_key=result_key(job_id),
                               finished_at=iso_now())
        self._clean(finished)
        return finished
