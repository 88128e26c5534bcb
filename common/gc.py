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
  object (and an S3 multipart upload never completed), and upload objects without a record.

Files younger than ``min_age`` are left alone: a write in progress looks like an orphan until
its row is written. Files of queued or running experiments, and keys the service does not name,
are never touched.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from common.backends import Backends
from common.domain import ExperimentStatus, utcnow
from common.names import is_experiment_file, recorded_artifact_prefix

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

    @property
    def total(self) -> int:
        return len(self.temporary) + len(self.parts) + len(self.models) + len(self.uploads)


def collect(backends: Backends, min_age: timedelta = DEFAULT_MIN_AGE, dry_run: bool = False,
            now: datetime | None = None) -> Collected:
    """Remove (or with ``dry_run`` only list) the orphans older than ``min_age``."""
    cutoff = (now or utcnow()) - min_age
    out = Collected()
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

    out.uploads = Uploads(backends).expire(dry_run=dry_run)
    if not dry_run:
        for key in out.parts:
            backends.datasets.delete(key)
        for key in out.models:
            backends.models.delete(key)
    if out.total:
        log.info("%s %d temp files, %d dataset part files, %d model files left by earlier "
                 "crashes", "would remove" if dry_run else "removed", len(out.temporary),
                 len(out.parts), len(out.models))
    return out
