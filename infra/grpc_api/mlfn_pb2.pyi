from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Document(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: _struct_pb2.Struct
    def __init__(self, json: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Documents(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    def __init__(self, items: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class PartRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _struct_pb2.Struct
    def __init__(self, model: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DataChunk(_message.Message):
    __slots__ = ("model", "content_type", "data")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    model: str
    content_type: str
    data: bytes
    def __init__(self, model: _Optional[str] = ..., content_type: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class RetrainRequest(_message.Message):
    __slots__ = ("model", "request")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    model: str
    request: _struct_pb2.Struct
    def __init__(self, model: _Optional[str] = ..., request: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ExperimentRequest(_message.Message):
    __slots__ = ("experiment_id", "model")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    experiment_id: int
    model: str
    def __init__(self, experiment_id: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("experiment_id", "status", "json")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    experiment_id: int
    status: str
    json: _struct_pb2.Struct
    def __init__(self, experiment_id: _Optional[int] = ..., status: _Optional[str] = ..., json: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("model", "status")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    model: str
    status: str
    def __init__(self, model: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("model", "record", "top_k")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    model: str
    record: _struct_pb2.Struct
    top_k: int
    def __init__(self, model: _Optional[str] = ..., record: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., top_k: _Optional[int] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("model", "records", "data", "content_type", "top_k")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    model: str
    records: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    data: bytes
    content_type: str
    top_k: int
    def __init__(self, model: _Optional[str] = ..., records: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., data: _Optional[bytes] = ..., content_type: _Optional[str] = ..., top_k: _Optional[int] = ...) -> None: ...

class RolloutRequest(_message.Message):
    __slots__ = ("experiment_id", "model", "canary", "guard", "shadow", "sample")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    GUARD_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    experiment_id: int
    model: str
    canary: int
    guard: bool
    shadow: bool
    sample: int
    def __init__(self, experiment_id: _Optional[int] = ..., model: _Optional[str] = ..., canary: _Optional[int] = ..., guard: _Optional[bool] = ..., shadow: _Optional[bool] = ..., sample: _Optional[int] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("model", "outcomes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    model: str
    outcomes: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    def __init__(self, model: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ...) -> None: ...

class WindowRequest(_message.Message):
    __slots__ = ("model", "since")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    since: str
    def __init__(self, model: _Optional[str] = ..., since: _Optional[str] = ...) -> None: ...

class DriftRequest(_message.Message):
    __slots__ = ("model", "experiment_id", "since")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    experiment_id: int
    since: str
    def __init__(self, model: _Optional[str] = ..., experiment_id: _Optional[int] = ..., since: _Optional[str] = ...) -> None: ...
