"""The gRPC server beside the HTTP one (``mlfn serve --grpc-port``): the inference protocol
(``inference.GRPCInferenceService``), the life cycle (``mlfn.v1.Mlfn``), ``grpc.health.v1``
and server reflection (so ``grpcurl list`` works).

API Gateway does not carry gRPC: it runs where ``mlfn serve`` runs (docker-compose, a container
on ECS/Fargate behind an ALB with a gRPC target group).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.settings import Settings
from infra.grpc_api import inference_pb2, inference_pb2_grpc, mlfn_pb2, mlfn_pb2_grpc
from infra.grpc_api.inference import InferenceService
from infra.grpc_api.lifecycle import LifecycleService

log = logging.getLogger("mlfn.grpc")
SERVICES = (inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            mlfn_pb2.DESCRIPTOR.services_by_name["Mlfn"].full_name)


def start(host: str, port: int, settings: Settings, shared_port: bool = False) -> grpc.Server:
    """A started server on ``host:port`` (``shared_port``: other processes of ``mlfn serve
    --workers N`` bind the same port; otherwise a port in use is an error)."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=16, thread_name_prefix="mlfn-grpc"),
        options=[("grpc.so_reuseport", 1 if shared_port else 0),
                 ("grpc.max_receive_message_length", settings.max_body_bytes),
                 ("grpc.max_send_message_length", 64 * 1024 * 1024)])
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(), server)
    mlfn_pb2_grpc.add_MlfnServicer_to_server(LifecycleService(), server)
    checks = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    for name in ("", *SERVICES):
        checks.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise SystemExit(f"the gRPC port {port} is in use: pass --grpc-port with a free port, "
                         "or --grpc-port 0 to run without gRPC")
    server.start()
    log.info("gRPC on %s:%s (%s)", host, bound, ", ".join(SERVICES))
    return server
