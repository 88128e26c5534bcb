"""Validated names and the only place object keys are built (no path traversal possible).

An experiment's files are per training attempt: its ONNX model at
``<model>/<id:010d>-a<attempt>.onnx`` and its other artefacts (TensorBoard logs) under
``<model>/<id:010d>/a<attempt>/``. Attempts never share a key, so an attempt whose job was taken
over can never overwrite what a later attempt wrote; the experiment records the key of the
attempt that succeeded (``artifact_key``). Experiments trained before keys were per attempt
keep their files at ``<model>/<id:010d>.onnx`` and under ``<model>/<id:010d>/``.

It also holds the rule for free text that becomes a name (a target or column name, a class
label): no control characters. It imports nothing heavy, so the handlers that create a model and
the training code that parses uploads check the same rule.
"""

from __future__ import annotations

import re

from common.errors import BadRequest

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f]")
"""Refused in target and column names and class labels: they end up in the schema, the model's
metadata and every response, where a NUL or a line break is never meant."""


def control_character(text: str) -> str | None:
    """The first control character of ``text`` as ``U+XXXX``, or None."""
    found = CONTROL_CHARACTERS.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def check_text(field: str, value: str, what: str = "names") -> str:
    """Return ``value`` unless it contains a control character (U+0000-U+001F, U+007F); then
    raise :class:`BadRequest`: "<field> contains the control character U+XXXX; <what> must be
    printable text"."""
    char = control_character(value)
    if char is not None:
        raise BadRequest(f"{field} contains the control character {char}; {what} must be "
                         "printable text")
    return value


def model_name(value: object) -> str:
    """Return ``value`` if it is a valid model name, else raise :class:`BadRequest`."""
    if not isinstance(value, str) or not MODEL_NAME.fullmatch(value):
        raise BadRequest(
            f"invalid model name {value!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


def _stem(model: str, experiment_id: int) -> str:
    return f"{model_name(model)}/{int(experiment_id):010d}"


def _attempt(attempt: int) -> int:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"an attempt number starts at 1, not {attempt!r}")
    return attempt


def model_key(model: str, experiment_id: int, attempt: int = 1) -> str:
    """The ONNX file one attempt writes (the first attempt's unless ``attempt`` says)."""
    return f"{_stem(model, experiment_id)}-a{_attempt(attempt)}.onnx"


def artifact_prefix(model: str, experiment_id: int, attempt: int = 1) -> str:
    """Where one attempt writes its other artefacts (``tensorboard/...`` below it)."""
    return f"{_stem(model, experiment_id)}/a{_attempt(attempt)}/"


def legacy_model_key(model: str, experiment_id: int) -> str:
    """The model file of an experiment trained before keys were per attempt."""
    return f"{_stem(model, experiment_id)}.onnx"


def recorded_artifact_prefix(model: str, experiment_id: int, artifact_key: str | None) -> str | None:
    """The artefact prefix of the attempt whose model file is ``artifact_key``: that attempt's,
    or the experiment's whole prefix for an experiment trained before keys were per attempt;
    None without a model file."""
    if artifact_key is None:
        return None
    stem = _stem(model, experiment_id)
    found = re.fullmatch(re.escape(stem) + r"-a([0-9]{1,9})\.onnx", artifact_key)
    if found is not None and int(found[1]) >= 1:
        return artifact_prefix(model, experiment_id, int(found[1]))
    return f"{stem}/"


def experiment_files_prefix(model: str, experiment_id: int) -> str:
    """A prefix every file of the experiment starts with (filter with
    :func:`is_experiment_file`: it also starts the keys of experiment ids with more digits)."""
    return _stem(model, experiment_id)


def is_experiment_file(key: str, model: str, experiment_id: int) -> bool:
    """Whether ``key`` is one of the experiment's files, of any attempt or layout."""
    stem = _stem(model, experiment_id)
    return key.startswith(stem) and (key[len(stem):len(stem) + 1] in ("/", "-", "."))


def dataset_part_key(model: str, part_id: str) -> str:
    if not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", part_id):
        raise BadRequest(f"invalid dataset part id {part_id!r}")
    return f"{model_name(model)}/parts/{part_id}.parquet"
