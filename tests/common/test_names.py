"""Object keys: one per training attempt, and the layout of experiments trained before that."""

from __future__ import annotations

import pytest

from common.names import (
    artifact_prefix,
    experiment_files_prefix,
    is_experiment_file,
    legacy_model_key,
    model_key,
    recorded_artifact_prefix,
)


def test_every_attempt_has_keys_of_its_own() -> None:
    assert model_key("m", 7) == model_key("m", 7, 1) == "m/0000000007-a1.onnx"
    assert model_key("m", 7, 2) == "m/0000000007-a2.onnx"
    assert artifact_prefix("m", 7, 2) == "m/0000000007/a2/"
    assert legacy_model_key("m", 7) == "m/0000000007.onnx"
    for bad in (0, -1, True, "2"):
        with pytest.raises(ValueError):
            model_key("m", 7, bad)  # type: ignore[arg-type]


def test_the_recorded_attempt_names_where_its_artefacts_are() -> None:
    assert recorded_artifact_prefix("m", 7, model_key("m", 7, 3)) == "m/0000000007/a3/"
    assert recorded_artifact_prefix("m", 7, legacy_model_key("m", 7)) == "m/0000000007/"
    assert recorded_artifact_prefix("m", 7, None) is None


def test_experiment_files_exclude_other_experiments() -> None:
    prefix = experiment_files_prefix("m", 1_000_000_000)
    mine = ["m/1000000000.onnx", "m/1000000000-a2.onnx", "m/1000000000/a1/tensorboard/x"]
    theirs = ["m/10000000001-a1.onnx", "m/10000000001/a1/x", "n/1000000000-a1.onnx"]
    assert all(k.startswith(prefix) and is_experiment_file(k, "m", 1_000_000_000) for k in mine)
    assert not any(is_experiment_file(k, "m", 1_000_000_000) for k in theirs)
