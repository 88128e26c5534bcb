"""The REST wire format of the Open Inference Protocol: JSON requests and answers, and Triton's
binary tensor data extension (``Inference-Header-Content-Length``: the JSON header, then each
binary input or output in order, ``binary_data_size`` bytes each).

tritonclient's HTTP defaults are the binary form without a Content-Type; MLServer's codecs send
JSON with ``parameters.content_type``; both arrive here as the same :class:`InferRequest`.
"""

from __future__ import annotations

from typing import Any

import orjson

from common.errors import BadRequest
from common.oip.dataplane import InferRequest, InferResponse, RequestedOutput
from common.oip.tensors import Tensor, check_datatype, check_shape, from_json, from_raw, to_json, to_raw

HEADER_LENGTH = "inference-header-content-length"


def _parameters(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: parameters must be a JSON object")
    return value


def parse_infer(model: str, version: str | None, headers: dict[str, str],
                body: bytes) -> InferRequest:
    """An infer request body (JSON, or JSON + binary tensors) as an :class:`InferRequest`."""
    raw_length = headers.get(HEADER_LENGTH)
    binary = memoryview(b"")
    if raw_length is not None:
        if not raw_length.strip().isdigit() or int(raw_length) > len(body):
            raise BadRequest(f"header Inference-Header-Content-Length must be the length of the "
                             f"JSON part (at most {len(body)}), not {raw_length[:40]!r}")
        length = int(raw_length)
        if length == 0:
            raise BadRequest("a body without a JSON header (Inference-Header-Content-Length: 0) "
                             "is not supported; send the JSON inference header first")
        binary = memoryview(body)[length:]
        body = body[:length]
    if not body:
        raise BadRequest("the body is empty; send an inference request")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest('the body must be {"inputs": [...]}')
    entries = doc.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    inputs, offset = [], 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BadRequest(f"inputs[{i}] must be an object with a string 'name'")
        name = entry["name"]
        for key in ("shape", "datatype"):
            if key not in entry:
                raise BadRequest(f"input {name!r} has no {key!r}")
        datatype = check_datatype(name, entry["datatype"])
        shape = check_shape(name, entry["shape"])
        parameters = _parameters(f"input {name!r}", entry.get("parameters"))
        size = parameters.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be a byte count")
            if offset + size > len(binary):
                raise BadRequest(f"input {name!r}: binary_data_size {size} runs past the end of "
                                 f"the binary data ({len(binary) - offset} bytes left)")
            data = from_raw(name, datatype, shape, binary[offset:offset + size])
            offset += size
        elif "data" in entry:
            data = from_json(name, datatype, shape, entry["data"])
        else:
            raise BadRequest(f"input {name!r} has neither 'data' nor "
                             "parameters.binary_data_size")
        inputs.append(Tensor(name, datatype, shape, data, parameters))
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data are not claimed by any "
                         "input's binary_data_size")
    outputs = []
    for i, entry in enumerate(doc.get("outputs") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BadRequest(f"outputs[{i}] must be an object with a string 'name'")
        outputs.append(RequestedOutput(entry["name"],
                                       _parameters(f"output {entry['name']!r}", entry.get("parameters"))))
    request_id = doc.get("id")
    return InferRequest(model, version, inputs, outputs,
                        None if request_id is None else str(request_id),
                        _parameters("the request", doc.get("parameters")))


def encode_infer(response: InferResponse, request: InferRequest) -> tuple[bytes, dict[str, str]]:
    """The answer body and its headers: binary outputs where the request asked for them
    (``binary_data`` on an output wins over the request's ``binary_data_output``)."""
    default = request.parameters.get("binary_data_output") is True
    wanted = {o.name: o.parameters for o in request.outputs}
    outputs, blobs = [], []
    for tensor in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                 "shape": tensor.shape}
        binary = wanted.get(tensor.name, {}).get("binary_data", default) is True
        if binary:
            blob = to_raw(tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = to_json(tensor)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model, "model_version": response.version,
                           "outputs": outputs}
    if response.id is not None:
        doc["id"] = response.id
    header = orjson.dumps(doc)
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream",
                                      HEADER_LENGTH: str(len(header))}
