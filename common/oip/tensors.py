"""Tensors of the Open Inference Protocol (v2) as NumPy arrays: datatypes, shapes, the raw
little-endian encoding of Triton's binary tensor data extension (BYTES elements as a 4-byte
little-endian length followed by the bytes), and JSON ``data`` lists.

Used by the REST codec (``common/oip/rest.py``) and the gRPC servicer alike; nothing here knows
a transport.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import BadRequest

# OIP datatype -> NumPy dtype (little-endian); BYTES are object arrays of bytes.
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
NUMERIC = frozenset(DTYPES) - {"BOOL"}
MAX_ELEMENTS = 2**31


@dataclass
class Tensor:
    """One named input or output: ``data`` is an array of ``shape`` (object of bytes for BYTES)."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


def check_shape(name: str, shape: Any) -> list[int]:
    if (not isinstance(shape, list | tuple)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers, "
                         f"not {shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise BadRequest(f"input {name!r}: shape {list(shape)} has too many elements")
    return [int(d) for d in shape]


def check_datatype(name: str, datatype: Any) -> str:
    if datatype != "BYTES" and datatype not in DTYPES:
        raise BadRequest(f"input {name!r}: unknown datatype {datatype!r}; use one of "
                         f"{', '.join(sorted([*DTYPES, 'BYTES']))}")
    return str(datatype)


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> np.ndarray:
    """A tensor from its raw bytes (binary tensor data, gRPC raw_input_contents)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return bytes_from_raw(name, raw, count).reshape(shape)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(f"input {name!r}: {len(raw)} bytes of {datatype} data do not make shape "
                         f"{shape} ({count * dtype.itemsize} bytes)")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def bytes_from_raw(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    """``count`` BYTES elements, each a 4-byte little-endian length and that many bytes."""
    view = memoryview(raw)
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(view):
            raise BadRequest(f"input {name!r}: the BYTES data ends inside element {i}'s length")
        (size,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + size > len(view):
            raise BadRequest(f"input {name!r}: BYTES element {i} says {size} bytes; the data ends "
                             "before")
        out[i] = bytes(view[pos:pos + size])
        pos += size
    if pos != len(view):
        raise BadRequest(f"input {name!r}: {len(view) - pos} bytes left after {count} BYTES "
                         "elements")
    return out


def from_json(name: str, datatype: str, shape: list[int], data: Any) -> np.ndarray:
    """A tensor from its JSON ``data``: row-major, flat or nested."""
    count = math.prod(shape)
    flat = _flatten(name, data)
    if len(flat) != count:
        raise BadRequest(f"input {name!r}: {len(flat)} values do not make shape {shape} "
                         f"({count} values)")
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        for i, value in enumerate(flat):
            if not isinstance(value, str):
                raise BadRequest(f"input {name!r} (element {i}): BYTES values in JSON are "
                                 f"strings, not {value!r}")
            out[i] = value.encode()
        return out.reshape(shape)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise BadRequest(f"input {name!r}: BOOL values are true or false")
        return np.array(flat, dtype=bool).reshape(shape)
    for i, value in enumerate(flat):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"input {name!r} (element {i}): expected a number, got {value!r}")
    try:
        return np.array(flat, dtype=DTYPES[datatype] if datatype != "FP16" else np.float64
                        ).reshape(shape)
    except OverflowError:
        raise BadRequest(f"input {name!r}: a value does not fit {datatype}") from None


def _flatten(name: str, data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: data must be a JSON array")
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def to_raw(tensor: Tensor) -> bytes:
    """The raw little-endian bytes of an output (binary data, gRPC raw_output_contents)."""
    if tensor.datatype == "BYTES":
        parts = []
        for value in tensor.data.reshape(-1):
            blob = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(blob)))
            parts.append(blob)
        return b"".join(parts)
    return np.ascontiguousarray(tensor.data, dtype=DTYPES[tensor.datatype]).tobytes()


def to_json(tensor: Tensor) -> list[Any]:
    """An output's JSON ``data``: flat, row-major; BYTES as UTF-8 strings."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()
