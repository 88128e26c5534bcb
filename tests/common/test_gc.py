"""common/gc.py: what crashes leave (files without rows) is removed, nothing else, on the local
object store and on S3 (moto server)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from common import context
from common.domain import ExperimentStatus, utcnow
from common.gc import collect
from common.names import artifact_prefix, dataset_part_key, legacy_model_key, model_key
from tests.lifecycle_data import churn_rows

LATER = timedelta(hours=2)


@pytest.fixture(params=["local", "s3"])
def backends(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             fresh_context: None) -> Iterator[object]:
    monkeypatch.setenv("MLFN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFN_DEMO_MODELS", "false")
    monkeypatch.setenv("MLFN_EMF", "false")
    if request.param == "s3":
        request.getfixturevalue("aws")
        monkeypatch.setenv("MLFN_OBJECT_STORE", "s3")
    context.reset()
    context.backends().ensure_cloud_resources()
    yield context.backends()
    context.reset()


def trained(model: str = "churn") -> int:
    life = context.lifecycle()
    life.jobs = None
    life.create_model({"name": model, "task": "classification", "target": "churned"})
    import pandas as pd

    life.add_frame(model, pd.DataFrame(churn_rows(40)))
    exp = life.train_now(model, {"model_class": "logistic_regression"})
    assert exp.status is ExperimentStatus.succeeded, exp.error
    return exp.id


def test_orphans_go_and_everything_else_stays(backends: object) -> None:
    models, datasets = context.backends().models, context.backends().datasets
    store = context.backends().experiments
    kept_id = trained()
    kept = store.get_experiment(kept_id)
    kept_files = set(models.list("churn/"))
    assert kept.artifact_key in kept_files and len(kept_files) > 1  # the model and its logs
    (part,) = store.dataset_parts("churn")
    # What crashes leave: a part never registered, a stale attempt's file, files of a deleted,
    # of a failed and of an unknown model's experiment.
    orphans_data = [dataset_part_key("churn", "never-registered"), dataset_part_key("ghost", "p1")]
    for key in orphans_data:
        datasets.put(key, b"parquet")
    stale = model_key("churn", kept_id, kept.attempts + 1)
    failed = store.create_experiment({"model": "churn", "model_class": "svm"})
    store.update_experiment(failed.id, {"status": ExperimentStatus.failed})
    running = store.create_experiment({"model": "churn", "model_class": "svm"})
    store.update_experiment(running.id, {"status": ExperimentStatus.running, "attempts": 1})
    orphans_models = [stale, model_key("churn", 999_999), legacy_model_key("churn", 999_998),
                      artifact_prefix("churn", 999_999) + "tensorboard/x",
                      model_key("churn", failed.id), model_key("ghost", kept_id)]
    for key in orphans_models:
        models.put(key, b"onnx")
    in_progress = model_key("churn", running.id)
    not_ours = "churn/native.pkl"
    for key in (in_progress, not_ours):
        models.put(key, b"x")

    young = collect(context.backends())  # everything was written just now
    assert young.total == 0
    preview = collect(context.backends(), dry_run=True, now=utcnow() + LATER)
    assert sorted(preview.parts) == sorted(orphans_data)
    assert sorted(preview.models) == sorted(orphans_models)
    assert all(models.exists(k) for k in orphans_models)  # a dry run removes nothing
    done = collect(context.backends(), now=utcnow() + LATER)
    assert sorted(done.models) == sorted(orphans_models)
    assert not any(models.exists(k) for k in orphans_models + [])
    assert not any(datasets.exists(k) for k in orphans_data)
    assert set(models.list("churn/")) == kept_files | {in_progress, not_ours}
    assert datasets.exists(part.key)
    # The survivors still serve.
    assert context.serving().load("churn", kept_id).experiment_id == kept_id


def test_temp_files_of_interrupted_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          fresh_context: None) -> None:
    """The local store writes a temp file, then renames it; a crash in between leaves the temp
    file (S3 writes are atomic and leave none)."""
    monkeypatch.setenv("MLFN_DATA_DIR", str(tmp_path / "data"))
    context.reset()
    root = tmp_path / "data" / "models"
    (root / "churn").mkdir(parents=True)
    old, fresh = root / "churn" / ".tmp-abc", root / "churn" / ".tmp-def"
    old.write_bytes(b"half a model")
    fresh.write_bytes(b"being written")
    hour_ago = time.time() - 7200
    os.utime(old, (hour_ago, hour_ago))
    done = collect(context.backends())
    assert done.temporary == ["churn/.tmp-abc"] and not old.exists() and fresh.exists()


def test_a_removed_part_stays_for_the_versions_that_hold_it(backends: object) -> None:
    kept_id = trained()
    import pandas as pd

    life = context.lifecycle()
    life.add_frame("churn", pd.DataFrame(churn_rows(30, seed=3)))
    store = context.backends().experiments
    first = store.dataset_parts("churn", 1)[0]
    life.remove_part("churn", 1)
    assert first.key not in {p.key for p in store.dataset_parts("churn")}
    collect(context.backends(), now=utcnow() + LATER)
    assert context.backends().datasets.exists(first.key)  # version 1 (experiment's) still has it
    assert store.get_experiment(kept_id).dataset_version == 1
