"""`samaudio-server` as a process: SIGTERM drains (running streams finish, new ones get UNAVAILABLE); a model
that cannot be had offline is a clear message, not a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc
from server_fixtures import (
    STARTUP_SECONDS,
    Feeder,
    collect,
    config,
    make_audio,
    pieces,
    requests,
    status_of,
    to_bytes,
)
from server_fixtures import server_command as _server_command
from server_fixtures import server_process as serve


@pytest.fixture
def server_process(golden_dir):
    """A `samaudio-server --port 0` process on the golden model folder -> (process, port, stderr lines)."""
    args = ["--model", str(golden_dir), "--device", "cpu", "--chunk-seconds", "1", "--overlap-seconds", "0.4"]
    with serve(*args, "--grace", "120") as running:
        yield running


def test_sigterm_lets_running_streams_finish_and_refuses_new_ones(server_process):
    proc, port, log = server_process
    cfg = config()
    audio = make_audio(2.2, 48000, 1, seed=20)
    sends = pieces(audio, 24_000)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.SeparationServiceStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="samaudio.v1.SeparationService"))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

        feeder = Feeder()
        running = stub.Separate(iter(feeder))
        feeder.put(pb.SeparateRequest(config=cfg))
        responses = iter(running)
        first = next(responses)
        assert first.HasField("accepted")  # the stream is in flight

        proc.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        code, details = status_of(lambda: list(stub.Separate(requests(cfg, sends))))
        assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details

        for piece in sends:
            feeder.put(pb.SeparateRequest(audio_content=to_bytes(piece, cfg.sample_format)))
        feeder.close()
        got = collect([first, *responses], cfg)
        watch.cancel()
    assert got.target.shape == audio.shape and got.summary.frames_out == len(audio)
    assert proc.wait(timeout=120) == 0, "".join(log)


def test_a_hub_model_missing_offline_exits_with_a_message_that_says_what_to_do(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [*_server_command(), "--model", "facebook/sam-audio-small", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=STARTUP_SECONDS,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "facebook/sam-audio-small" in done.stderr and "--model takes a name from `samaudio models`" in done.stderr


def test_version_and_help_show_every_default_and_the_exit_codes():
    version = subprocess.run([*_server_command(), "--version"], capture_output=True, text=True, timeout=120)
    text = subprocess.run([*_server_command(), "--help"], capture_output=True, text=True, timeout=120).stdout
    from samaudio import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"samaudio-server {__version__}"
    flat = " ".join(text.split())
    for default in ("(default: 10.0)", "(default: 2.0)", "(default: 30.0)", "(default: float32)", "(default: INFO)"):
        assert default in flat, default
    assert "Exit status: 0 stopped cleanly" in flat


def test_sigterm_exits_within_the_grace_period_after_garbage_and_idle_streams(golden_dir):
    # issue 19: after unparseable streams the drain waited without bound for gRPC's stop; streams that never end
    # (a config, then nothing) must not hold the process past the grace period either
    grace = 2.0
    args = ["--model", str(golden_dir), "--device", "cpu", "--grace", str(grace), "--audio-timeout", "0"]
    hold = threading.Event()
    with serve(*args) as (proc, port, log), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            raw = ch.stream_stream(
                "/samaudio.v1.SeparationService/Separate",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )

            def garbage():
                yield os.urandom(4096)
                hold.wait(60)

            def idle():
                yield pb.SeparateRequest(config=config()).SerializeToString()
                hold.wait(60)

            calls = [raw(garbage()) for _ in range(4)] + [raw(idle()) for _ in range(4)]
            pb_grpc.SeparationServiceStub(ch).GetInfo(pb.GetInfoRequest(), timeout=30)  # the streams are out
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace + 30)
            except subprocess.TimeoutExpired:
                pytest.fail("samaudio-server still runs 30 s after its grace period:\n" + "".join(log[-20:]))
            elapsed = time.monotonic() - t0
        finally:
            hold.set()
            for call in calls:
                call.cancel()
    assert elapsed < grace + 5, f"exit took {elapsed:.1f} s with a grace of {grace} s"
    assert not any("Traceback" in line for line in log), "".join(log)
