"""`create_server`: the gRPC server around a loaded model, with health, reflection, tokens, TLS and draining."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from concurrent import futures
from typing import Any, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import samaudio
from samaudio.defaults import STREAM_DEFAULTS, StreamDefaults
from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc
from samaudio_server.errors import UnauthenticatedError, status_code
from samaudio_server.servicer import Limits, SeparationServicer
from samaudio_server.worker import BatchingWorker

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SeparationService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
STOP_GRACE_SECONDS = 2.0  # for GetInfo/reflection calls in flight once every stream has finished
EXTRA_THREADS = 8  # beyond max_streams: GetInfo, health watches, reflection, and refusing streams over the limit


# Calls that carry no audio and answer without a token: probes carry no tokens, and a client learns from GetInfo
# (`authentication_required`) that it needs one before it has one (issue 17). Reflection stays behind the token.
OPEN_METHODS = (f"/{HEALTH_SERVICE_NAME}/", f"/{SERVICE_NAME}/GetInfo")


class TokenInterceptor(grpc.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every call except `OPEN_METHODS` (health checks, GetInfo)."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith(OPEN_METHODS):
            return continuation(details)
        got = dict(details.invocation_metadata or ()).get("authorization")
        if got is not None and hmac.compare_digest(str(got).encode(), self._expected):
            return continuation(details)
        why = "no authorization metadata" if got is None else "a wrong token"
        error = UnauthenticatedError(
            f"this server needs the metadata 'authorization: Bearer <token>' and got {why}: send the token the "
            "server was started with"
        )
        return _refusing_handler(continuation(details), error)


def _refusing_handler(handler: grpc.RpcMethodHandler | None, error: Exception) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that ends the call with `error`'s status, reading nothing."""

    def refuse(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        context.abort(status_code(error), str(error))

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(refuse)
    kind = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return kind(
        refuse, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class SeparationServer:
    """A started-or-not gRPC server (start/stop/wait_for_termination as grpc.Server) that can also drain."""

    def __init__(self, server: grpc.Server, servicer: SeparationServicer, health_servicer: Any, worker: BatchingWorker):
        self.grpc_server = server
        self.servicer = servicer
        self.health = health_servicer
        self.worker = worker

    def start(self) -> None:
        self.grpc_server.start()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)

    def drain(self, grace: float) -> bool:
        """Refuse new streams (UNAVAILABLE, health NOT_SERVING); let running ones finish within `grace` s; stop.

        Returns True when every stream finished in time.
        """
        deadline = time.monotonic() + grace
        self.servicer.gate.close()  # before health says so: a client that saw NOT_SERVING is refused
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        logger.info("draining: %d stream(s) running, grace %.1f s", self.servicer.gate.active, grace)
        clean = self.servicer.gate.wait_idle(grace)
        if not clean:
            logger.warning(
                "grace period over with %d stream(s) still running: cancelling them", self.servicer.gate.active
            )
        # only short calls and health watches are left: they need not hold the process for the whole grace
        self.stop(min(STOP_GRACE_SECONDS, max(0.0, deadline - time.monotonic())) if clean else 0)
        return clean

    def stop(self, grace: float | None = None) -> threading.Event:
        self.servicer.gate.close()
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        done = self.grpc_server.stop(grace)
        done.wait()
        self.worker.close(timeout=30)
        return done

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)

    def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)


def create_server(
    address: str = "127.0.0.1:0",
    *,
    model: Any,
    processor: Any,
    model_name: str = "samaudio",
    limits: Limits = Limits(),
    defaults: StreamDefaults = STREAM_DEFAULTS,
    max_queue: int = 32,
    token: str | None = None,
    tls_cert: bytes | None = None,
    tls_key: bytes | None = None,
    worker: BatchingWorker | None = None,
) -> tuple[SeparationServer, int]:
    """Build (not start) a server for `model` on `address`; returns it and the port bound (for ':0').

    `defaults` fills what a stream's config leaves unset and sizes the batches: each stream hands its worker up
    to `defaults.windows_per_stream_call` windows at once, and the device thread runs up to
    `defaults.windows_per_device_batch` windows, across streams, per model call. `token` turns on bearer-token
    auth; `tls_cert`/`tls_key` (PEM bytes) turn on TLS. `worker` defaults to a `BatchingWorker` running the
    library's windows on `model`'s device.
    """
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both a certificate and its private key (--tls-cert and --tls-key)")
    worker = worker or BatchingWorker.for_model(
        model, processor, max_batch=defaults.windows_per_device_batch, max_queue=max_queue
    )
    servicer = SeparationServicer(
        model,
        processor,
        worker,
        model_name=model_name,
        limits=limits,
        defaults=defaults,
        version=samaudio.__version__,
        authentication_required=token is not None,
    )
    threads = (limits.max_streams or 32) + EXTRA_THREADS
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="samaudio-rpc"),
        interceptors=[TokenInterceptor(token)] if token is not None else [],
        options=[
            ("grpc.max_receive_message_length", limits.max_request_bytes),
            ("grpc.max_send_message_length", max(limits.max_response_bytes * 2, 4 * 1024 * 1024)),
        ],
    )
    pb_grpc.add_SeparationServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)  # SERVING once started
    reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
    if tls_cert is not None:
        port = server.add_secure_port(address, grpc.ssl_server_credentials([(tls_key, tls_cert)]))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {address}: is the port in use?")
    return SeparationServer(server, servicer, health_servicer, worker), port
