"""``inference.GRPCInferenceService``: the Open Inference Protocol over gRPC, translated to and
from the data plane the REST routes use (``common/oip/dataplane.py``).

Inputs come in ``raw_input_contents`` (tritonclient's way: one entry per input, in input order)
or in typed ``contents``; when the request was raw, every output is answered raw too, one entry
each in output order, which is where tritonclient's ``as_numpy`` reads them.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import numpy as np

from common import context
from common.errors import BadRequest, NotFound
from common.oip import dataplane
from common.oip.dataplane import InferRequest, InferResponse, RequestedOutput
from common.oip.tensors import Tensor, check_datatype, check_shape, from_raw, to_raw
from infra.grpc_api import inference_pb2 as pb
from infra.grpc_api import inference_pb2_grpc as pb_grpc
from infra.grpc_api.errors import guarded

# Typed contents field of each datatype.
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
            "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
            "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
            "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def parameters_of(params: Any) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = None if choice is None else getattr(value, choice)
    return out


def infer_request(request: pb.ModelInferRequest) -> InferRequest:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = []
    for i, entry in enumerate(request.inputs):
        name = entry.name
        datatype = check_datatype(name, entry.datatype)
        shape = check_shape(name, list(entry.shape))
        if raw:
            data = from_raw(name, datatype, shape, raw[i])
        else:
            field = CONTENTS.get(datatype)
            if field is None:
                raise BadRequest(f"input {name!r}: send {datatype} in raw_input_contents")
            values = list(getattr(entry.contents, field))
            if len(values) != math.prod(shape):
                raise BadRequest(f"input {name!r}: {len(values)} values do not make shape {shape}")
            dtype = object if datatype == "BYTES" else None
            data = np.array(values, dtype=dtype).reshape(shape)
        inputs.append(Tensor(name, datatype, shape, data, parameters_of(entry.parameters)))
    outputs = [RequestedOutput(o.name, parameters_of(o.parameters)) for o in request.outputs]
    return InferRequest(request.model_name, request.model_version or None, inputs, outputs,
                        request.id or None, parameters_of(request.parameters))


def infer_response(response: InferResponse, raw: bool) -> pb.ModelInferResponse:
    out = pb.ModelInferResponse(model_name=response.model, model_version=response.version,
                                id=response.id or "")
    for tensor in response.outputs:
        entry = out.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if raw:
            out.raw_output_contents.append(to_raw(tensor))
        elif tensor.datatype == "BYTES":
            entry.contents.bytes_contents.extend(list(tensor.data.reshape(-1)))
        else:
            getattr(entry.contents, CONTENTS[tensor.datatype]).extend(tensor.data.reshape(-1).tolist())
    return out


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    @guarded
    def ServerLive(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    @guarded
    def ServerReady(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        context.backends()
        return pb.ServerReadyResponse(ready=True)

    @guarded
    def ModelReady(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        try:
            context.dataplane().model_ready(request.name, request.version or None)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @guarded
    def ServerMetadata(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(**dataplane.server_metadata())

    @guarded
    def ModelMetadata(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        doc = context.dataplane().model_metadata(request.name, request.version or None)
        out = pb.ModelMetadataResponse(name=doc["name"], versions=doc["versions"],
                                       platform=doc["platform"])
        for kind in ("inputs", "outputs"):
            for tensor in doc[kind]:
                getattr(out, kind).add(**tensor)
        return out

    @guarded
    def ModelInfer(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        parsed = infer_request(request)
        return infer_response(context.dataplane().infer(parsed), raw=bool(request.raw_input_contents))
