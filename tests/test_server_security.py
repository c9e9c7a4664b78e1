"""Bearer tokens and TLS on a real loopback server (golden model); health stays open for probes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc
from server_fixtures import config, make_audio, separate, start_server, status_of

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def token_server(golden_model, golden_processor):
    server, port = start_server(golden_model, golden_processor, token=TOKEN)
    yield port
    server.stop(0)


@pytest.fixture(scope="module")
def token_stub(token_server):
    with grpc.insecure_channel(f"127.0.0.1:{token_server}") as ch:
        yield pb_grpc.SeparationServiceStub(ch), ch


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_a_stream_without_a_token_gets_unauthenticated(token_stub):
    stub, _ = token_stub
    code, details = status_of(lambda: separate(stub, config(), [make_audio(0.3, 48000, 1, seed=0)]))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "no authorization metadata" in details


def test_a_wrong_token_gets_unauthenticated(token_stub):
    stub, _ = token_stub
    audio = make_audio(0.3, 48000, 1, seed=0)
    code, details = status_of(lambda: separate(stub, config(), [audio], metadata=_bearer("guess")))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "wrong token" in details


def test_the_unauthenticated_message_names_no_client_flag(token_stub):
    # a REAPER or Node user cannot act on one client's flags: each client adds its own hint
    stub, _ = token_stub
    _, details = status_of(lambda: separate(stub, config(), [make_audio(0.3, 48000, 1, seed=0)]))
    assert "--" not in details and "SAMAUDIO_TOKEN" not in details and "token" in details


def test_get_info_needs_no_token_and_says_one_is_required(token_stub):
    stub, _ = token_stub
    assert stub.GetInfo(pb.GetInfoRequest(), timeout=10).authentication_required


def test_reflection_stays_behind_the_token(token_stub):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    _, ch = token_stub
    ask = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    code, _ = status_of(lambda: list(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(ask)))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_the_right_token_is_served(token_stub):
    stub, _ = token_stub
    info = stub.GetInfo(pb.GetInfoRequest(), metadata=_bearer(TOKEN))
    assert info.authentication_required
    audio = make_audio(0.3, 48000, 1, seed=1)
    assert separate(stub, config(), [audio], metadata=_bearer(TOKEN)).target.shape == audio.shape


def test_health_needs_no_token(token_stub):
    _, ch = token_stub
    reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ---------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[bytes, bytes]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key, PEM, made with the openssl CLI."""
    folder: Path = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert.read_bytes(), key.read_bytes()


@pytest.fixture(scope="module")
def tls_server(golden_model, golden_processor, certificate):
    cert, key = certificate
    server, port = start_server(golden_model, golden_processor, tls_cert=cert, tls_key=key, token=TOKEN)
    yield port
    server.stop(0)


def test_tls_with_a_self_signed_certificate_serves_a_stream(tls_server, certificate):
    cert, _ = certificate
    creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=cert), grpc.access_token_call_credentials(TOKEN)
    )
    with grpc.secure_channel(f"localhost:{tls_server}", creds) as ch:
        audio = make_audio(0.4, 48000, 2, seed=2)
        got = separate(pb_grpc.SeparationServiceStub(ch), config(channels=2), [audio])
    assert got.target.shape == audio.shape and np.isfinite(got.target).all()


def test_tls_server_refuses_plaintext(tls_server):
    with grpc.insecure_channel(f"127.0.0.1:{tls_server}") as ch:
        stub = pb_grpc.SeparationServiceStub(ch)
        code, _ = status_of(lambda: stub.GetInfo(pb.GetInfoRequest(), metadata=_bearer(TOKEN), timeout=10))
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
