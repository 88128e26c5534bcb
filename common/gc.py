"""What a crash can leave behind, and its removal (``mlfn gc``; the server runs it at start-up).

Writes are ordered so that a crash never leaves a row without its file: a dataset part's file is
written before its row, a deletion removes the rows before the files. What a crash can leave is
the other kind, files without rows:

- temp files of an interrupted atomic write (a local store's ``.tmp-*``);
- dataset part files that were never registered (the upload died between file and row), or
  whose model is gone;
- model files of experiments that are gone, failed, or of an attempt other than the one that
  succeeded (a stale attempt, a crash during a delete);
- uploads (``common/uploads.py``) past their expiry, never ingested or abandoned: record and
  object (and an S3 multipart upload never completed), and upload objects without a record;
- scratch files under ``<data dir>/tmp`` of a process that was killed: request bodies spooled
  by the HTTP adapter (``body-*``) and the temporary directories (``tmp*``) of ingestions and
  batch job assemblies. They are removed when nothing under them changed for ``scratch_age``:
  at least ``MLFN_UPLOAD_EXPIRY_SECONDS`` (a day), since a live one belongs to one request or
  one task attempt on an upload and is written as it progresses, whereas its longest quiet
  spell (one transfer to the store of a finished file) has no bound of its own;
- records of ingestions and batch jobs (and their chunks) past their expiry (30 days): SQL has
  no TTL; with them the batch outputs under ``_batch/<job>/`` whose job has no record.

Files younger than ``min_age`` are left alone: a write in progress looks like an orphan until
its row is written. Files of queued or running experiments, and keys the service does not name,
are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common.backends import Backends
from common.domain import ExperimentStatus, utcnow
from common.names import is_experiment_file, recorded_artifact_prefix
from common.settings import Settings

log = logging.getLogger("mlfn.gc")

# <model>/<experiment id, 10 digits> followed by "-", "/" or "." (common/names.py's layout)
EXPERIMENT_FILE = re.compile(r"([a-z0-9][a-z0-9_-]{0,63})/([0-9]{10})[-/.]")
PART_FILE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}/parts/[0-9A-Za-z_-]{1,64}\.parquet")
DEFAULT_MIN_AGE = timedelta(hours=1)


@dataclass
class Collected:
    temporary: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    scratch: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    batch_outputs: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(found) for found in (self.temporary, self.parts, self.models, self.uploads,
                                            self.scratch, self.records, self.batch_outputs))


SCRATCH_NAMES = ("body-", "tmp")  # tempfile names under <data dir>/tmp (prefix "body-", default "tmp")


def scratch_age(settings: Settings, min_age: timedelta = DEFAULT_MIN_AGE) -> timedelta:
    """How long a scratch file must have been left unchanged before it is removed."""
    return max(min_age, timedelta(seconds=settings.upload_expiry_seconds))


def _changed(path: Path) -> float:
    """The latest modification time of ``path`` and, for a directory, of everything in it."""
    latest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for inner in path.rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                latest = max(latest, inner.lstat().st_mtime)
    return latest


def collect_scratch(settings: Settings, cutoff: datetime, dry_run: bool = False) -> list[str]:
    """Remove the scratch files and directories under ``<data dir>/tmp`` unchanged since
    ``cutoff``; their paths relative to the data dir."""
    root = settings.data_dir / "tmp"
    if not root.is_dir():
        return []
    gone = []
    for path in sorted(root.iterdir()):
        if not path.name.startswith(SCRATCH_NAMES):
            continue
        try:
            if datetime.fromtimestamp(_changed(path), UTC) >= cutoff:
                continue
            if not dry_run:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        except FileNotFoundError:  # its owner finished and removed it meanwhile
            continue
        gone.append(path.relative_to(settings.data_dir).as_posix())
    return gone


def collect_records(backends: Backends, cutoff: datetime, now: datetime,
                    dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Remove the ingestion and batch job records past their expiry, then the batch outputs
    (``_batch/<job>/...``, written older than ``cutoff``) whose job has no record; returns
    ``kind/id`` of the records and the keys of the outputs."""
    from common import batch_jobs, ingestion
    from common.errors import NotFound
    from common.storage.records import record_store

    records = record_store(backends.experiments)
    kinds = (ingestion.KIND, batch_jobs.KIND, batch_jobs.CHUNK)
    expired = records.delete_expired(kinds, now.timestamp(), dry_run=dry_run)
    gone_jobs = {record_id for kind, record_id in expired if kind == batch_jobs.KIND}
    known: dict[str, bool] = {}
    outputs = []
    for key, written in backends.datasets.listing(batch_jobs.PREFIX):
        job_id = key[len(batch_jobs.PREFIX):].split("/", 1)[0]
        if written >= cutoff or not batch_jobs.JOB_ID.fullmatch(job_id):
            continue
        if job_id not in known:
            if job_id in gone_jobs:
                known[job_id] = False
            else:
                try:
                    records.get(batch_jobs.KIND, job_id)
                    known[job_id] = True
                except NotFound:
                    known[job_id] = False
        if not known[job_id]:
            outputs.append(key)
    if not dry_run:
        for key in outputs:
            backends.datasets.delete(key)
    return [f"{kind}/{record_id}" for kind, record_id in expired], outputs


def collect(backends: Backends, min_age: timedelta = DEFAULT_MIN_AGE, dry_run: bool = False,
            now: datetime | None = None) -> Collected:
    """Remove (or with ``dry_run`` only list) the orphans older than ``min_age`` (scratch
    files: ``scratch_age``)."""
    now = now or utcnow()
    cutoff = now - min_age
    out = Collected()
    out.scratch = collect_scratch(backends.settings, now - scratch_age(backends.settings, min_age),
                                  dry_run)
    if not dry_run:
        out.temporary = backends.models.remove_temporary(cutoff) + \
            backends.datasets.remove_temporary(cutoff)
    store = backends.experiments
    # Every part of every version (removed parts stay: older versions still hold them).
    registered = {p.key for m in store.list_models() for p in store.all_dataset_parts(m.name)}
    for key, written in backends.datasets.listing(""):
        if written < cutoff and PART_FILE.fullmatch(key) and key not in registered:
            out.parts.append(key)
    experiments = {e.id: e for e in store.list_experiments()}
    for key, written in backends.models.listing(""):
        found = EXPERIMENT_FILE.match(key)
        if written >= cutoff or found is None:
            continue
        model, experiment_id = found[1], int(found[2])
        if not is_experiment_file(key, model, experiment_id):
            continue
        exp = experiments.get(experiment_id)
        if exp is not None and exp.model == model:
            if exp.status in (ExperimentStatus.queued, ExperimentStatus.running):
                continue
            if exp.status is ExperimentStatus.succeeded:
                prefix = recorded_artifact_prefix(model, experiment_id, exp.artifact_key)
                if key == exp.artifact_key or (prefix is not None and key.startswith(prefix)):
                    continue
        out.models.append(key)
    from common.uploads import Uploads

    out.uploads = Uploads(backends).expire(now=now.timestamp(), dry_run=dry_run)
    out.records, out.batch_outputs = collect_records(backends, cutoff, now, dry_run)
    if not dry_run:
        for key in out.parts:
            backends.datasets.delete(key)
        for key in out.models:
            backends.models.delete(key)
    if out.total:
        log.info("%s %d temp files, %d dataset part files, %d model files, %d scratch files "
                 "left by earlier crashes; %d expired records, %d batch outputs without a job",
                 "would remove" if dry_run else "removed", len(out.temporary), len(out.parts),
                 len(out.models), len(out.scratch), len(out.records), len(out.batch_outputs))
    return out
