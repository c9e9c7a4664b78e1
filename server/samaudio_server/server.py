"""`create_server`: the gRPC server around a loaded model, with health, reflection, tokens, TLS and draining."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from concurrent import futures
from typing import Any, Callable, Iterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import samaudio
from samaudio.defaults import STREAM_DEFAULTS, StreamDefaults
from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc
from samaudio_server.errors import TooManyStreamsError, UnauthenticatedError, UnparseableRequestError, status_code
from samaudio_server.servicer import Limits, SeparationServicer, Unparseable
from samaudio_server.worker import BatchingWorker

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SeparationService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
STOP_GRACE_SECONDS = 2.0  # for GetInfo/reflection calls in flight once every stream has finished
# The thread pool: max_streams for Separate, SIDE_STREAMS for long-lived calls that are not Separate (health
# watches, reflection), and RESERVED_THREADS that only short calls can reach (health checks, GetInfo, refusals):
# idle side streams cannot take them, so health always answers (issue 19).
SIDE_STREAMS = 4
RESERVED_THREADS = 4


# Calls that carry no audio and answer without a token: probes carry no tokens, and a client learns from GetInfo
# (`authentication_required`) that it needs one before it has one (issue 17). Reflection stays behind the token.
OPEN_METHODS = (f"/{HEALTH_SERVICE_NAME}/", f"/{SERVICE_NAME}/GetInfo")


class TokenInterceptor(grpc.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every call except `OPEN_METHODS` (health checks, GetInfo)."""

    def __init__(self, token: str):
        self._expected = token.encode()

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith(OPEN_METHODS):
            return continuation(details)
        got = dict(details.invocation_metadata or ()).get("authorization")
        scheme, _, credentials = str(got or "").strip().partition(" ")
        # auth schemes are case-insensitive (RFC 9110 11.1): "bearer" is "Bearer"
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._expected):
            return continuation(details)
        why = "no authorization metadata" if got is None else "a wrong token"
        # who failed, never what they sent: the header may hold a real token for another server
        logger.warning("refused %s: %s", details.method, why)
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
    return _handler_like(handler, refuse, _tolerant(handler.request_deserializer))


class ParseGuard(grpc.ServerInterceptor):
    """Every method, hardened against what a careless or hostile client sends (issue 19).

    - A request that does not parse (random bytes, invalid UTF-8) is INVALID_ARGUMENT: the deserializer hands the
      method an `Unparseable` instead of failing inside gRPC (INTERNAL, and a stream left half-ended).
    - Long-lived calls other than Separate (health watches, reflection) are capped at `side_streams` at once, so
      idle ones cannot take the threads short calls need; beyond the cap they get RESOURCE_EXHAUSTED.
    """

    def __init__(self, side_streams: int):
        self.side_streams = side_streams
        self._side = 0
        self._lock = threading.Lock()

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        deserialize = _tolerant(handler.request_deserializer)
        behavior = _behavior(handler)
        long_lived = (handler.request_streaming or handler.response_streaming) and details.method != SEPARATE_METHOD
        if long_lived:
            with self._lock:
                if self._side >= self.side_streams:
                    return _refusing_handler(
                        handler,
                        TooManyStreamsError(
                            f"this server serves at most {self.side_streams} health watches and reflection calls at "
                            "once: close idle ones, or use health Check"
                        ),
                    )
                self._side += 1
            behavior = self._counted(behavior, handler.response_streaming)
        return _handler_like(handler, _unparseable_aborts(behavior, handler.response_streaming), deserialize)

    def _release(self) -> None:
        with self._lock:
            self._side -= 1

    def _counted(self, behavior: Callable, response_streaming: bool) -> Callable:
        if response_streaming:

            def run_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from behavior(request, context)
                finally:
                    self._release()

            return run_stream

        def run(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return behavior(request, context)
            finally:
                self._release()

        return run


SEPARATE_METHOD = f"/{SERVICE_NAME}/Separate"


def _tolerant(deserializer: Callable | None) -> Callable | None:
    """`deserializer`, returning an `Unparseable` where it would raise (gRPC would answer INTERNAL)."""
    if deserializer is None:
        return None
    name = getattr(getattr(deserializer, "__self__", None), "__name__", "the method's request type")

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as e:  # noqa: BLE001 - DecodeError, and UnicodeDecodeError for invalid UTF-8
            return Unparseable(name, len(data), e)

    return deserialize


def _behavior(handler: grpc.RpcMethodHandler) -> Callable:
    return next(
        b
        for b in (handler.unary_unary, handler.unary_stream, handler.stream_unary, handler.stream_stream)
        if b is not None
    )


def _unparseable_aborts(behavior: Callable, response_streaming: bool) -> Callable:
    """`behavior`, ending the call with INVALID_ARGUMENT when its request (or the next one it reads) is unparseable.

    Separate reads its requests through `_TimedRequests`, which raises the error itself; other methods get
    requests that raise it when iterated, or a check before they run."""

    def requests(request_or_iterator: Any) -> Any:
        if isinstance(request_or_iterator, Unparseable):
            raise request_or_iterator.error
        if isinstance(request_or_iterator, Iterator):
            return _checked(request_or_iterator)
        return request_or_iterator

    def refuse(e: UnparseableRequestError, context: grpc.ServicerContext) -> None:
        logger.info("call ended with INVALID_ARGUMENT: %s", e)
        context.abort(status_code(e), str(e))

    if response_streaming:

        def run_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from behavior(requests(request), context)
            except UnparseableRequestError as e:
                refuse(e, context)

        return run_stream

    def run(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(requests(request), context)
        except UnparseableRequestError as e:
            refuse(e, context)

    return run


def _checked(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Unparseable):
            raise request.error
        yield request


def _handler_like(handler: grpc.RpcMethodHandler, behavior: Callable, deserializer: Callable | None) -> Any:
    kind = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return kind(behavior, request_deserializer=deserializer, response_serializer=handler.response_serializer)


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
        left = max(0.0, deadline - time.monotonic())
        done = self.stop(min(STOP_GRACE_SECONDS, left) if clean else 0, wait=max(left, STOP_GRACE_SECONDS))
        # gRPC's stop may hang on a stream a client left half-ended (issue 19): the caller exits all the same
        return clean and done.is_set()

    def stop(self, grace: float | None = None, wait: float | None = None) -> threading.Event:
        """Stop as grpc.Server.stop(grace), waiting at most `wait` s (None: until done) for it and the worker."""
        self.servicer.gate.close()
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        until = None if wait is None else time.monotonic() + wait
        done = self.grpc_server.stop(grace)
        if not done.wait(wait):
            logger.warning("the gRPC server did not stop within %.1f s", wait)
        self.worker.close(timeout=30 if until is None else max(0.0, until - time.monotonic()))
        return done

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)

    def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)


def transport_options(limits: Limits) -> list[tuple[str, int]]:
    """gRPC channel arguments of the server: message sizes, keepalive and idle connections (issue 19)."""
    ms = lambda seconds: int(seconds * 1000)  # noqa: E731
    return [
        ("grpc.max_receive_message_length", limits.max_request_bytes),
        # anything a request may carry can be echoed in a response (the config in `accepted`): send >= receive
        ("grpc.max_send_message_length", max(limits.max_request_bytes, limits.max_response_bytes * 2, 4 << 20)),
        ("grpc.keepalive_time_ms", ms(limits.keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", ms(limits.keepalive_timeout_seconds)),
        ("grpc.max_connection_idle_ms", ms(limits.max_connection_idle_seconds)),
        # clients may ping an idle connection every 10 s (gRPC's default refuses pings without calls)
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


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
    threads = (limits.max_streams or 32) + SIDE_STREAMS + RESERVED_THREADS
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="samaudio-rpc"),
        interceptors=[ParseGuard(SIDE_STREAMS), *([TokenInterceptor(token)] if token is not None else [])],
        # No call waits for a thread: beyond the pool, gRPC answers RESOURCE_EXHAUSTED at once.
        maximum_concurrent_rpcs=threads,
        options=transport_options(limits),
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
