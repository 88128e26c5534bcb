"""Validated names and the only place object keys are built (no path traversal possible)."""

from __future__ import annotations

import re

from common.errors import BadRequest

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def model_name(value: object) -> str:
    """Return ``value`` if it is a valid model name, else raise :class:`BadRequest`."""
    if not isinstance(value, str) or not MODEL_NAME.fullmatch(value):
        raise BadRequest(
            f"invalid model name {value!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


def model_key(model: str, experiment_id: int) -> str:
    return f"{model_name(model)}/{int(experiment_id):010d}.onnx"


def artifact_prefix(model: str, experiment_id: int) -> str:
    return f"{model_name(model)}/{int(experiment_id):010d}/"


def dataset_part_key(model: str, part_id: str) -> str:
    if not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", part_id):
        raise BadRequest(f"invalid dataset part id {part_id!r}")
    return f"{model_name(model)}/parts/{part_id}.parquet"
