"""``mlfn.v1.Mlfn``: the REST API over gRPC, one RPC per route. Each RPC builds the HTTP request
its REST twin would receive and has it answered by the same route table and guarded call
(``common.web.guard.dispatch``), so there is no life-cycle logic here: only the translation of
messages to requests and of answers to messages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import cache
from typing import Any

import grpc
import orjson
from google.protobuf import json_format, struct_pb2

from common import context
from common.errors import BadRequest, PayloadTooLarge, ServiceError
from common.web.guard import check_received_length, dispatch
from common.web.request import Reply, Request
from common.web.routing import RouteTable
from infra.grpc_api import mlfn_pb2 as pb
from infra.grpc_api import mlfn_pb2_grpc as pb_grpc
from infra.grpc_api.errors import guarded, metadata_of

TERMINAL = ("succeeded", "failed")
WATCH_INTERVAL = 0.5


@cache
def routes() -> RouteTable:
    from infra.local.server import all_routes

    return RouteTable(all_routes())


class Failed(ServiceError):
    """A REST answer with an error status, carried to the status-code mapping."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def plain(value: Any) -> Any:
    """A Struct's JSON with integral numbers as integers (Struct numbers are doubles)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def to_json(message: struct_pb2.Struct) -> Any:
    return plain(json_format.MessageToDict(message))


def struct_of(doc: Any) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(doc)
    return out


def call(grpc_context: grpc.ServicerContext, method: str, path: str,
         query: dict[str, Any] | None = None, body: bytes = b"",
         content_type: str = "application/json", headers: dict[str, str] | None = None) -> Any:
    """Answer as the REST route would; the JSON answer, or raise its error."""
    metadata = metadata_of(grpc_context)
    values = {k: [str(v)] for k, v in (query or {}).items() if v not in (None, "")}
    sent = {"content-type": content_type, **(headers or {})}
    for key in ("x-api-key", "x-request-id"):
        if key in metadata:
            sent[key] = metadata[key]
    reply: Reply = dispatch(routes(), Request(method, path, values, sent, body), context.settings())
    doc = orjson.loads(reply.body) if reply.body else None
    if reply.status >= 400:
        raise Failed(reply.status, doc.get("detail", doc.get("error", "")) if doc else "")
    return doc


def documents(items: list[Any]) -> pb.Documents:
    return pb.Documents(items=[struct_of(i) for i in items])


def experiment(doc: dict[str, Any]) -> pb.Experiment:
    return pb.Experiment(experiment_id=int(doc["experiment_id"]), status=str(doc["status"]),
                         json=struct_of(doc))


class LifecycleService(pb_grpc.MlfnServicer):
    @guarded
    def ListModels(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return documents(call(grpc_context, "GET", "/models"))

    @guarded
    def CreateModel(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        body = orjson.dumps(to_json(request.model))
        return pb.Document(json=struct_of(call(grpc_context, "POST", "/models", body=body)))

    @guarded
    def ModelClasses(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return documents(call(grpc_context, "GET", "/model_classes"))

    @guarded
    def AddData(self, chunks: Iterator[Any], grpc_context: grpc.ServicerContext) -> Any:
        model = content_type = ""
        parts, received = [], 0
        limit = context.settings().max_body_bytes
        for i, chunk in enumerate(chunks):
            if i == 0:
                model, content_type = chunk.model, chunk.content_type or "text/csv"
            elif chunk.model and chunk.model != model:
                raise BadRequest(f"chunk {i} names model {chunk.model!r}, the first {model!r}")
            received += len(chunk.data)
            try:
                check_received_length(limit, received)
            except PayloadTooLarge:
                raise PayloadTooLarge(f"the upload has more than {limit} bytes; the limit is "
                                      f"{limit} (MLFN_MAX_BODY_BYTES)") from None
            parts.append(chunk.data)
        if not model:
            raise BadRequest("the first chunk must name the model")
        doc = call(grpc_context, "PUT", "/add_data", {"model": model}, b"".join(parts),
                   content_type)
        return pb.Document(json=struct_of(doc))

    @guarded
    def Datasets(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return pb.Document(json=struct_of(call(grpc_context, "GET", "/datasets",
                                               {"model": request.model})))

    @guarded
    def RemoveDatasetPart(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        doc = call(grpc_context, "DELETE", f"/datasets/parts/{request.version}",
                   {"model": request.model})
        return pb.Document(json=struct_of(doc))

    @guarded
    def DeleteModel(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        call(grpc_context, "DELETE", f"/models/{request.model}")
        return pb.Empty()

    @guarded
    def Retrain(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        doc = call(grpc_context, "PUT", "/retrain", {"model": request.model},
                   orjson.dumps(to_json(request.request)))
        return experiment(doc)

    @guarded
    def GetExperiment(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return experiment(self._metrics(request, grpc_context))

    def _metrics(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return call(grpc_context, "GET", f"/metrics/{request.experiment_id}",
                    {"model": request.model})

    @guarded
    def WatchExperiment(self, request: Any, grpc_context: grpc.ServicerContext) -> Iterator[Any]:
        last = None
        while grpc_context.is_active():
            doc = self._metrics(request, grpc_context)
            if doc["status"] != last:
                last = doc["status"]
                yield experiment(doc)
            if last in TERMINAL:
                return
            time.sleep(WATCH_INTERVAL)

    @guarded
    def ListExperiments(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return documents(call(grpc_context, "GET", "/experiments",
                              {"model": request.model, "status": request.status}))

    @guarded
    def Deploy(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        doc = call(grpc_context, "POST", f"/deploy/{request.experiment_id}", {"model": request.model})
        return pb.Document(json=struct_of(doc))

    @guarded
    def Deployments(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return documents(call(grpc_context, "GET", "/deployments", {"model": request.model}))

    @guarded
    def DeleteExperiment(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        call(grpc_context, "DELETE", f"/experiments/{request.experiment_id}", {"model": request.model})
        return pb.Empty()

    def _forward(self, request: Any, grpc_context: grpc.ServicerContext) -> pb.Document:
        headers = {"x-top-k": str(request.top_k)} if request.top_k else {}
        doc = call(grpc_context, "POST", "/forward", {"model": request.model},
                   orjson.dumps(to_json(request.record)), headers=headers)
        return pb.Document(json=struct_of(doc))

    @guarded
    def Forward(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return self._forward(request, grpc_context)

    @guarded
    def ForwardStream(self, requests: Iterator[Any], grpc_context: grpc.ServicerContext) -> Iterator[Any]:
        for request in requests:
            yield self._forward(request, grpc_context)

    def _batch(self, path: str, request: Any, grpc_context: grpc.ServicerContext) -> pb.Document:
        if request.records and request.data:
            raise BadRequest("send records or data (with its content_type), not both")
        if request.records:
            body = orjson.dumps({"records": [to_json(r) for r in request.records]})
            kind = "application/json"
        else:
            body, kind = request.data, request.content_type or "text/csv"
        headers = {"x-top-k": str(request.top_k)} if request.top_k else {}
        doc = call(grpc_context, "POST", path, {"model": request.model}, body, kind, headers)
        return pb.Document(json=struct_of(doc))

    @guarded
    def ForwardBatch(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return self._batch("/forward_batch", request, grpc_context)

    @guarded
    def Evaluate(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return self._batch("/evaluate", request, grpc_context)

    # -- rollouts --------------------------------------------------------------------------------
    @guarded
    def Rollout(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return pb.Document(json=struct_of(call(grpc_context, "GET", "/rollout",
                                               {"model": request.model})))

    @guarded
    def StartRollout(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        query = {"model": request.model, "canary": request.canary or None,
                 "guard": "true" if request.guard else None,
                 "shadow": "true" if request.shadow else None, "sample": request.sample or None}
        return pb.Document(json=struct_of(call(grpc_context, "POST",
                                               f"/deploy/{request.experiment_id}", query)))

    @guarded
    def EndCanary(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return pb.Document(json=struct_of(call(grpc_context, "DELETE", "/canary",
                                               {"model": request.model})))

    @guarded
    def EndShadow(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return pb.Document(json=struct_of(call(grpc_context, "DELETE", "/shadow",
                                               {"model": request.model})))

    @guarded
    def Feedback(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        body = orjson.dumps([to_json(o) for o in request.outcomes])
        return pb.Document(json=struct_of(call(grpc_context, "POST", "/feedback",
                                               {"model": request.model}, body)))

    @guarded
    def LiveMetrics(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return pb.Document(json=struct_of(call(grpc_context, "GET", "/live_metrics",
                                               {"model": request.model, "since": request.since})))

    @guarded
    def Drift(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        query = {"model": request.model, "experiment": request.experiment_id or None,
                 "since": request.since}
        return pb.Document(json=struct_of(call(grpc_context, "GET", "/drift", query)))

    @guarded
    def Metadata(self, request: Any, grpc_context: grpc.ServicerContext) -> Any:
        return pb.Document(json=struct_of(call(grpc_context, "GET", "/metadata",
                                               {"model": request.model})))

