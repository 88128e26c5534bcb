"""The Open Inference Protocol (v2) data plane: server and model metadata, readiness and infer,
on plain values. The REST routes (``functions/inference/routes.py``, Lambda and the local
server) and the gRPC servicer (``infra/grpc/inference.py``) only translate their wire formats
to and from these calls, as KServe's ``protocol/dataplane.py`` is used by its REST and gRPC
servers.

A model is one of ours by name; a version is an experiment id (as a string): no version means
the deployed experiment, a version that is not a succeeded experiment of the model is a 404.
Inputs are one tensor per feature column (``[N]`` or ``[N, 1]``, as MLServer's pandas codec
sends them), or, for an all-numeric model, one ``[N, n_features]`` tensor in the metadata's
feature order; image models take their ``pixels``. Numbers are checked as ``/forward`` checks
them (finite, within float32); NaN is a missing value, imputed in the graph as a JSON null is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.domain import FeatureKind, Task
from common.errors import BadRequest
from common.inference.inputs import FLOAT32_MAX, categorical_value
from common.inference.onnx_model import OnnxModel
from common.oip.tensors import NUMERIC, Tensor
from common.serving import Serving

SERVER_NAME = "mlfn"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "onnx_onnxv1"


@dataclass
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    model: str
    version: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferResponse:
    model: str
    version: str
    outputs: list[Tensor]
    id: str | None = None


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


def tensor_metadata(onnx_model: OnnxModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's inputs and outputs as OIP tensor metadata."""
    if onnx_model.image is not None:
        inputs = [{"name": "pixels", "datatype": "FP32", "shape": [-1, onnx_model.image.n_pixels]}]
    else:
        inputs = [{"name": f.name, "datatype": "FP32" if f.kind is FeatureKind.numeric else "BYTES",
                   "shape": [-1, 1]} for f in onnx_model.features]
    if onnx_model.task is Task.regression:
        outputs = [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
    else:
        outputs = [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                   {"name": "probabilities", "datatype": "FP32",
                    "shape": [-1, len(onnx_model.classes)]}]
    return inputs, outputs


class DataPlane:
    """The OIP operations over the service's serving use cases."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving

    def model_metadata(self, model: str, version: str | None) -> dict[str, Any]:
        onnx_model = self.serving.load_version(model, version)
        inputs, outputs = tensor_metadata(onnx_model)
        parameters: dict[str, Any] = {"experiment_id": onnx_model.experiment_id,
                                      "task": onnx_model.task.value}
        if onnx_model.task is Task.classification:
            # The column order of "probabilities" (OIP metadata has no field for it).
            parameters["classes"] = json.dumps([str(c) for c in onnx_model.classes])
        return {"name": model, "versions": [str(v) for v in self.serving.versions(model)],
                "platform": PLATFORM, "inputs": inputs, "outputs": outputs,
                "parameters": parameters}

    def model_ready(self, model: str, version: str | None) -> dict[str, Any]:
        self.serving.load_version(model, version)  # NotFound (404) unless it can serve
        return {"name": model, "ready": True}

    def infer(self, request: InferRequest) -> InferResponse:
        model = request.model
        with self.serving.monitor.observe("infer", model) as obs:
            if request.version:
                onnx_model = self.serving.load_version(model, request.version)
            else:  # the deployed experiment, or the canary for its share of the requests
                onnx_model, obs.role, _ = self.serving.route(model)
            obs.experiment_id = onnx_model.experiment_id
            feeds, rows = self.feeds(onnx_model, request.inputs)
            obs.feeds = feeds  # counted for drift by the monitoring writer (tabular models)
            scores = onnx_model.scores(feeds)
            outputs = self.outputs(onnx_model, scores, request.outputs)
            obs.rows = rows
            obs.predictions(scores.labels if scores.labels is not None
                            else scores.values.tolist(),  # type: ignore[union-attr]
                            onnx_model.task is Task.regression)
        return InferResponse(model, str(onnx_model.experiment_id), outputs, request.id)

    # -- inputs -------------------------------------------------------------------------------
    def feeds(self, onnx_model: OnnxModel, inputs: list[Tensor]) -> tuple[dict[str, np.ndarray], int]:
        """The ONNX feeds of ``inputs``, checked as /forward checks records; and the row count."""
        if not inputs:
            raise BadRequest("the request has no inputs")
        names = [t.name for t in inputs]
        if len(set(names)) != len(names):
            raise BadRequest(f"input {next(n for n in names if names.count(n) > 1)!r} is given twice")
        if onnx_model.image is not None:
            return self._pixels(onnx_model, inputs)
        features = onnx_model.features
        by_name = {f.name: f for f in features}
        if (len(inputs) == 1 and inputs[0].name not in by_name and len(inputs[0].shape) == 2
                and all(f.kind is FeatureKind.numeric for f in features)):
            return self._matrix(onnx_model, inputs[0])
        unknown = [n for n in names if n not in by_name]
        if unknown:
            hint = ""
            if len(inputs) == 1 and all(f.kind is FeatureKind.numeric for f in features):
                hint = f", or one FP32/FP64 tensor [N, {len(features)}] in the metadata's order"
            raise BadRequest(f"input {unknown[0]!r} is not a feature of model "
                             f"{onnx_model.metadata.get('model')!r}; send one input per feature "
                             f"{sorted(by_name)}{hint}")
        missing = [f.name for f in features if f.name not in names]
        if missing:
            raise BadRequest(f"missing input{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(repr(m) for m in missing)}")
        rows = None
        feeds: dict[str, np.ndarray] = {}
        for tensor in inputs:
            shape = tensor.shape
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
                raise BadRequest(f"input {tensor.name!r}: shape {shape} is not [N] or [N, 1]")
            if rows is None:
                rows = self._check_rows(shape[0])
            elif shape[0] != rows:
                raise BadRequest(f"input {tensor.name!r} has {shape[0]} rows, input "
                                 f"{inputs[0].name!r} has {rows}")
            column = tensor.data.reshape(-1)
            if by_name[tensor.name].kind is FeatureKind.numeric:
                feeds[tensor.name] = numeric_column(tensor.name, tensor.datatype, column).reshape(-1, 1)
            else:
                feeds[tensor.name] = categorical_column(tensor.name, tensor.datatype, column)
        assert rows is not None
        return feeds, rows

    def _check_rows(self, rows: int) -> int:
        if rows < 1:
            raise BadRequest("the inputs have no rows")
        limit = self.serving.settings.max_batch_rows
        if rows > limit:
            raise BadRequest(f"the batch has {rows} rows; the limit is {limit}")
        return rows

    def _matrix(self, onnx_model: OnnxModel, tensor: Tensor) -> tuple[dict[str, np.ndarray], int]:
        features = onnx_model.features
        rows, columns = tensor.shape
        if columns != len(features):
            raise BadRequest(f"input {tensor.name!r}: shape {tensor.shape}; the model has "
                             f"{len(features)} features, so [N, {len(features)}]")
        self._check_rows(rows)
        matrix = numeric_column(tensor.name, tensor.datatype, tensor.data.reshape(-1)).reshape(
            rows, columns)
        columns_first = np.ascontiguousarray(matrix.T)[:, :, np.newaxis]
        return dict(zip((f.name for f in features), columns_first, strict=True)), rows

    def _pixels(self, onnx_model: OnnxModel, inputs: list[Tensor]) -> tuple[dict[str, np.ndarray], int]:
        from common.images import INPUT_NAME

        spec = onnx_model.image
        assert spec is not None
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise BadRequest(f"an image model takes one input {INPUT_NAME!r} "
                             f"[N, {spec.n_pixels}] of pixels in [0, 1]")
        tensor = inputs[0]
        if len(tensor.shape) != 2 or tensor.shape[1] != spec.n_pixels:
            raise BadRequest(f"input {INPUT_NAME!r}: shape {tensor.shape}; the model takes "
                             f"[N, {spec.n_pixels}] ({spec.width}x{spec.height}, {spec.mode})")
        rows = self._check_rows(tensor.shape[0])
        pixels = numeric_column(tensor.name, tensor.datatype, tensor.data.reshape(-1))
        if np.isnan(pixels).any():
            raise BadRequest(f"input {INPUT_NAME!r}: pixels must be numbers, not NaN")
        return {INPUT_NAME: pixels.reshape(rows, spec.n_pixels)}, rows

    # -- outputs ------------------------------------------------------------------------------
    def outputs(self, onnx_model: OnnxModel, scores: Any,
                requested: list[RequestedOutput]) -> list[Tensor]:
        rows = len(scores.values) if scores.values is not None else len(scores.labels)
        available: dict[str, Tensor] = {}
        if onnx_model.task is Task.regression:
            available["prediction"] = Tensor("prediction", "FP32", [rows],
                                             scores.values.astype(np.float32))
        else:
            labels = np.array([str(c).encode() for c in scores.labels], dtype=object)
            available["label"] = Tensor("label", "BYTES", [rows], labels)
            available["probabilities"] = Tensor(
                "probabilities", "FP32", [rows, len(onnx_model.classes)],
                scores.probabilities.astype(np.float32))
        if not requested:
            return list(available.values())
        out = []
        for wanted in requested:
            if wanted.name not in available:
                raise BadRequest(f"output {wanted.name!r} does not exist; this model has "
                                 f"{', '.join(repr(n) for n in available)}")
            tensor = available[wanted.name]
            out.append(Tensor(tensor.name, tensor.datatype, tensor.shape, tensor.data,
                              dict(wanted.parameters)))
        return out


def numeric_column(name: str, datatype: str, values: np.ndarray) -> np.ndarray:
    """A numeric feature's values as float32, refused (naming the input and row) unless finite
    and within float32 range; NaN is a missing value."""
    if datatype not in NUMERIC:
        raise BadRequest(f"input {name!r} is numeric: send FP32, FP64 or an integer type, not "
                         f"{datatype}")
    as_float = values.astype(np.float64)
    bad = np.flatnonzero(np.isinf(as_float) | (np.abs(np.nan_to_num(as_float)) > FLOAT32_MAX))
    if bad.size:
        row, value = int(bad[0]), float(as_float[bad[0]])
        what = ("is not a finite number" if math.isinf(value)
                else "is outside the float32 range")
        raise BadRequest(f"input {name!r} (row {row}): {value} {what}")
    return as_float.astype(np.float32)


def categorical_column(name: str, datatype: str, values: np.ndarray) -> np.ndarray:
    """A categorical feature's values as strings (BYTES as UTF-8; integers as their decimal
    text, as /forward reads a JSON integer)."""
    out = np.empty(len(values), dtype=object)
    if datatype == "BYTES":
        for i, value in enumerate(values):
            try:
                text = value.decode() if isinstance(value, bytes) else str(value)
            except UnicodeDecodeError:
                raise BadRequest(f"input {name!r} (row {i}): not UTF-8 text") from None
            out[i] = categorical_value(name, text, i)
    elif datatype in NUMERIC and datatype not in ("FP16", "FP32", "FP64"):
        for i, value in enumerate(values):
            out[i] = categorical_value(name, int(value), i)
    else:
        raise BadRequest(f"input {name!r} is categorical: send BYTES (strings), not {datatype}")
    return out.reshape(-1, 1)
