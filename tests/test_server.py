"""samaudio-server over a real loopback connection with the golden model: results, concurrency, cancel, errors.

Every stream is compared with the library's own streaming engine run in this process on the same input.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc
from samaudio_server.servicer import Limits
from server_fixtures import (  # noqa: F401 - channel, golden_server and stub are fixtures, used by name
    Feeder,
    channel,
    collect,
    config,
    golden_server,
    make_audio,
    pieces,
    reference,
    requests,
    separate,
    start_server,
    status_of,
    stream_defaults,
    stub,
    to_bytes,
)

POS, NEG = pb.ANCHOR_SIGN_POSITIVE, pb.ANCHOR_SIGN_NEGATIVE


# ---------------------------------------------------------------------------------------------- results


def test_stems_equal_the_library_engine_bit_for_bit(stub, golden_model, golden_processor):
    cfg = config(sample_rate=48000, channels=1, solver_steps=None)  # the model's default solver
    audio = make_audio(2.3, 48000, 1, seed=1)
    sends = pieces(audio, 17_000)
    got = separate(stub, cfg, sends)
    target, residual = reference(golden_model, golden_processor, cfg, sends)
    assert got.target_bytes == target.astype("<f4").tobytes()
    assert got.residual_bytes == residual.astype("<f4").tobytes()


def test_stereo_at_44100_comes_back_at_the_input_rate_channels_and_length(stub, golden_model, golden_processor):
    cfg = config(sample_rate=44100, channels=2, anchors=[(POS, 0.2, 0.9), (NEG, 1.1, 1.5)])
    audio = make_audio(1.9, 44100, 2, seed=2)
    sends = pieces(audio, 10_007)
    got = separate(stub, cfg, sends)
    assert got.target.shape == got.residual.shape == audio.shape
    target, residual = reference(golden_model, golden_processor, cfg, sends)
    assert np.array_equal(got.target, target) and np.array_equal(got.residual, residual)


def test_int16_stems_are_the_float_stems_rounded(stub, golden_model, golden_processor):
    cfg = config(sample_format=pb.SAMPLE_FORMAT_INT16_LE, channels=2)
    audio16 = np.frombuffer(to_bytes(make_audio(1.5, 48000, 2, seed=3), cfg.sample_format), "<i2").reshape(-1, 2)
    as_float = audio16.astype(np.float32) / 32768  # what the server hands the library
    sends = pieces(as_float, 20_000)
    got = separate(stub, cfg, sends)
    target, residual = reference(golden_model, golden_processor, cfg, sends)
    assert got.target_bytes == to_bytes(target, cfg.sample_format)
    assert got.residual_bytes == to_bytes(residual, cfg.sample_format)


def test_blocks_are_contiguous_and_progress_and_summary_count_every_frame(stub):
    cfg = config()
    audio = make_audio(2.1, 48000, 1, seed=4)
    got = separate(stub, cfg, pieces(audio, 9_000))
    start = 0
    for block in got.blocks:
        assert block.start_frame == start and block.frame_count * 4 == len(block.target_audio)
        start += block.frame_count
    assert start == len(audio)
    done = [p.frames_done for p in got.progress]
    assert done == sorted(done) and done[-1] == len(audio) == got.progress[-1].frames_known
    s = got.summary
    assert s.frames_in == s.frames_out == len(audio)
    assert s.windows >= 3 and s.model_evaluations >= s.windows and s.elapsed_seconds > 0


def test_each_progress_follows_the_stem_blocks_it_counts_and_one_summary_ends_the_stream(stub):
    """The protocol text: audio may go out before `accepted` (all of it here, at once), a progress message
    never counts frames whose block has not come yet, and exactly one summary comes, last."""
    cfg = config(sample_rate=44100, channels=2)
    audio = make_audio(1.7, 44100, 2, seed=6)
    received, kinds = 0, []
    for response in stub.Separate(requests(cfg, pieces(audio, 7_001))):
        kinds.append(response.WhichOneof("streaming_response"))
        if kinds[-1] == "stem_block":
            received += response.stem_block.frame_count
        elif kinds[-1] == "progress":
            assert response.progress.frames_done <= received
            assert response.progress.frames_done <= response.progress.frames_known <= len(audio)
    assert kinds[0] == "accepted" and kinds.count("summary") == 1 and kinds[-1] == "summary"
    assert "progress" in kinds and received == len(audio)


def test_every_stream_logs_one_line_with_its_peer_frames_windows_time_and_outcome_never_the_token(
    golden_model, golden_processor, caplog
):
    cfg = config()
    audio = make_audio(1.3, 48000, 1, seed=9)
    token = (("authorization", "Bearer s3cret-token"),)
    server, port = start_server(golden_model, golden_processor, token="s3cret-token")
    caplog.set_level(logging.INFO, logger="samaudio_server")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.SeparationServiceStub(ch)
            collect(stub.Separate(requests(cfg, pieces(audio, 9_000)), metadata=token), cfg)
            feeder = Feeder()
            cancelled = stub.Separate(iter(feeder), metadata=token)
            feeder.put(pb.SeparateRequest(config=cfg))
            assert next(cancelled).HasField("accepted")
            cancelled.cancel()
            deadline = time.monotonic() + 30
            while len(lines := [r.getMessage() for r in caplog.records if "stream from" in r.getMessage()]) < 2:
                assert time.monotonic() < deadline, lines
                time.sleep(0.05)
    finally:
        server.stop(0)

    done, stopped = sorted(lines, key=lambda line: "CANCELLED" in line)
    assert "stream from ipv4:127.0.0.1:" in done
    assert f"{len(audio)} frames ({len(audio) / 48000:.2f} s of audio)" in done and done.endswith(", OK")
    assert "CANCELLED by the client" in stopped
    assert "s3cret" not in caplog.text


def test_accepted_reports_the_effective_settings(stub):
    cfg = pb.SeparationConfig(
        description="a chirp", sample_rate_hertz=48000, channel_count=1, sample_format=pb.SAMPLE_FORMAT_FLOAT32_LE
    )
    got = separate(stub, cfg, [make_audio(0.5, 48000, 1, seed=5)])
    eff = got.accepted.effective_config
    assert eff.model == "golden" and eff.seed == 0 and eff.solver_steps == 16
    assert (eff.chunk_seconds, eff.overlap_seconds) == (1.0, 0.4)  # this server's defaults
    assert list(eff.stems) == [pb.STEM_TARGET, pb.STEM_RESIDUAL]
    assert got.accepted.model_sample_rate_hertz == 48000


def test_the_server_default_solver_steps_are_the_steps_run(golden_model, golden_processor):
    server, port = start_server(golden_model, golden_processor, defaults=stream_defaults(solver_steps=8))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            cfg = config(solver_steps=None)  # no steps in the request: the server's default
            got = separate(pb_grpc.SeparationServiceStub(ch), cfg, [make_audio(0.5, 48000, 1, seed=5)])
        assert got.accepted.effective_config.solver_steps == 8
        assert got.summary.model_evaluations == got.summary.windows * 2 * 8  # midpoint: 2 evaluations a step
    finally:
        server.stop(0)


def test_windows_per_stream_call_and_per_device_batch_are_separate_settings(golden_model, golden_processor):
    defaults = stream_defaults(windows_per_stream_call=1, windows_per_device_batch=3)
    server, port = start_server(golden_model, golden_processor, defaults=defaults)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            got = separate(pb_grpc.SeparationServiceStub(ch), config(), [make_audio(2.3, 48000, 1, seed=5)])
        assert got.summary.windows >= 3
        assert server.worker.max_batch == 3  # the device may batch 3 windows a call...
        assert server.worker.largest_batch == 1  # ...but this lone stream hands over one window at a time
    finally:
        server.stop(0)


def test_text_is_encoded_on_the_device_thread(golden_model, golden_processor, monkeypatch):
    threads = []
    encode = golden_model.encode_text

    def recording(texts):
        threads.append(threading.current_thread().name)
        return encode(texts)

    monkeypatch.setattr(golden_model, "encode_text", recording)
    server, port = start_server(golden_model, golden_processor)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            separate(pb_grpc.SeparationServiceStub(ch), config(), [make_audio(0.5, 48000, 1, seed=5)])
    finally:
        server.stop(0)
    assert threads == ["samaudio-device"]  # the one thread that owns the model, once per stream


def test_only_the_stems_asked_for_come_back(stub):
    cfg = config(stems=[pb.STEM_RESIDUAL])
    audio = make_audio(0.7, 48000, 1, seed=6)
    got = separate(stub, cfg, [audio])
    assert got.target_bytes == b"" and got.residual.shape == audio.shape


def test_large_blocks_are_split_to_fit_the_response_size_limit(golden_model, golden_processor):
    server, port = start_server(golden_model, golden_processor, limits=Limits(max_response_bytes=40_000))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            cfg = config(channels=2)
            audio = make_audio(1.2, 48000, 2, seed=7)
            got = separate(pb_grpc.SeparationServiceStub(ch), cfg, [audio])
        assert all(len(b.target_audio) + len(b.residual_audio) <= 40_000 for b in got.blocks)
        assert got.target.shape == audio.shape
    finally:
        server.stop(0)


# ---------------------------------------------------------------------------------------------- concurrency


def test_concurrent_streams_each_get_their_own_result(stub, golden_server, golden_model, golden_processor):
    server, _ = golden_server
    streams = [
        (config(description="a chirp", seed=0), make_audio(1.7, 48000, 1, seed=10), 8_000),
        (config(description="noise", channels=2, sample_rate=44100), make_audio(1.4, 44100, 2, seed=11), 11_025),
        (config(description="", anchors=[(POS, 0.1, 0.8)], seed=3), make_audio(1.9, 48000, 1, seed=12), 30_000),
        (
            config(description="a tone", sample_format=pb.SAMPLE_FORMAT_INT16_LE),
            make_audio(1.2, 48000, 1, seed=13),
            5_000,
        ),
    ]
    calls_before = server.worker.model_calls
    start = threading.Barrier(len(streams))

    def run(item):
        cfg, audio, n = item
        start.wait(30)
        return separate(stub, cfg, pieces(audio, n))

    with concurrent.futures.ThreadPoolExecutor(len(streams)) as pool:
        results = list(pool.map(run, streams))
    assert server.worker.model_calls > calls_before
    for (cfg, audio, n), got in zip(streams, results, strict=True):
        if cfg.sample_format == pb.SAMPLE_FORMAT_INT16_LE:
            audio = np.frombuffer(to_bytes(audio, cfg.sample_format), "<i2").reshape(audio.shape) / np.float32(32768)
        target, residual = reference(golden_model, golden_processor, cfg, pieces(audio, n))
        if cfg.sample_format == pb.SAMPLE_FORMAT_INT16_LE:  # rounding may flip where batching moved the last bit
            np.testing.assert_allclose(got.target, target, atol=1.5 / 32768)
        else:  # batched with other streams: same windows, same noise; tolerance for float summation order only
            np.testing.assert_allclose(got.target, target, atol=1e-5)
            np.testing.assert_allclose(got.residual, residual, atol=1e-5)


def test_a_bad_stream_does_not_disturb_a_running_one(stub, golden_model, golden_processor):
    cfg = config()
    audio = make_audio(1.6, 48000, 1, seed=14)
    sends = pieces(audio, 12_000)
    feeder = Feeder()
    call = stub.Separate(iter(feeder))
    feeder.put(pb.SeparateRequest(config=cfg))
    responses = iter(call)
    first = next(responses)
    assert first.HasField("accepted")
    feeder.put(pb.SeparateRequest(audio_content=to_bytes(sends[0], cfg.sample_format)))
    bad = np.full((100, 1), np.nan, np.float32)
    code, _ = status_of(lambda: separate(stub, cfg, [bad]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    for piece in sends[1:]:
        feeder.put(pb.SeparateRequest(audio_content=to_bytes(piece, cfg.sample_format)))
    feeder.close()
    got = collect([first, *responses], cfg)
    target, _ = reference(golden_model, golden_processor, cfg, sends)
    np.testing.assert_allclose(got.target, target, atol=1e-5)


# ---------------------------------------------------------------------------------------------- cancel


def test_cancel_mid_stream_frees_the_stream_and_the_server_keeps_serving(stub, golden_server):
    server, _ = golden_server
    cfg = config()
    feeder = Feeder()
    call = stub.Separate(iter(feeder))
    feeder.put(pb.SeparateRequest(config=cfg))
    for piece in pieces(make_audio(3.0, 48000, 1, seed=15), 24_000):
        feeder.put(pb.SeparateRequest(audio_content=to_bytes(piece, cfg.sample_format)))
    responses = iter(call)
    while not next(responses).HasField("stem_block"):  # the stream is mid-way: windows done, more queued
        pass
    assert server.servicer.gate.active >= 1
    call.cancel()
    assert server.servicer.gate.wait_idle(timeout=60), "the cancelled stream was never freed"
    feeder.close()
    audio = make_audio(0.9, 48000, 1, seed=16)
    assert separate(stub, cfg, [audio]).target.shape == audio.shape


# ---------------------------------------------------------------------------------------------- bad input


def _audio_bytes(frames: int = 4800, channels: int = 1) -> bytes:
    return make_audio(frames / 48000, 48000, channels, seed=0).astype("<f4").tobytes()


BAD_STREAMS = {
    "audio before config": ([pb.SeparateRequest(audio_content=_audio_bytes())], "first request must carry the config"),
    "no request at all": ([], "first request must carry the config"),
    "a second config": ([pb.SeparateRequest(config=config()), pb.SeparateRequest(config=config())], "one config"),
    "unsupported sample rate": ([pb.SeparateRequest(config=config(sample_rate=1000))], "sample_rate_hertz=1000"),
    "unset sample format": (
        [pb.SeparateRequest(config=config(sample_format=pb.SAMPLE_FORMAT_UNSPECIFIED))],
        "SAMPLE_FORMAT_FLOAT32_LE",
    ),
    "zero channels": ([pb.SeparateRequest(config=config(channels=0))], "channel_count=0"),
    "bytes not a whole frame": (
        [pb.SeparateRequest(config=config(channels=2)), pb.SeparateRequest(audio_content=b"\0" * 12)],
        "12 bytes",
    ),
    "non-finite samples": (
        [
            pb.SeparateRequest(config=config()),
            pb.SeparateRequest(audio_content=np.array([0.0, np.inf, 0.1], "<f4").tobytes()),
        ],
        "finite",
    ),
    "anchor start after end": ([pb.SeparateRequest(config=config(anchors=[(POS, 2.0, 1.0)]))], "2"),
    "anchor before zero": ([pb.SeparateRequest(config=config(anchors=[(NEG, -1.0, 1.0)]))], "-1"),
    "anchor without sign": (
        [pb.SeparateRequest(config=config(anchors=[(pb.ANCHOR_SIGN_UNSPECIFIED, 0.0, 1.0)]))],
        "ANCHOR_SIGN_POSITIVE",
    ),
    "empty description without anchors": ([pb.SeparateRequest(config=config(description=" "))], "description"),
    "empty description with only negative anchors": (
        [pb.SeparateRequest(config=config(description="", anchors=[(NEG, 0.0, 1.0)]))],
        "positive anchor",
    ),
    "chunk not longer than overlap": (
        [pb.SeparateRequest(config=config(chunk_seconds=1.0, overlap_seconds=1.0))],
        "overlap",
    ),
    "unknown model": ([pb.SeparateRequest(config=config(model="facebook/sam-audio-huge"))], "golden"),
    "too many solver steps": ([pb.SeparateRequest(config=config(solver_steps=100_000))], "solver_steps=100000"),
}


@pytest.mark.parametrize("case", list(BAD_STREAMS))
def test_bad_input_ends_the_stream_with_invalid_argument_and_says_what_to_change(stub, case):
    sends, hint = BAD_STREAMS[case]
    code, details = status_of(lambda: list(stub.Separate(iter(sends))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert hint in details


def test_more_streams_than_the_limit_get_resource_exhausted(golden_model, golden_processor):
    server, port = start_server(golden_model, golden_processor, limits=Limits(max_streams=1))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub_ = pb_grpc.SeparationServiceStub(ch)
            feeder = Feeder()
            held = stub_.Separate(iter(feeder))
            feeder.put(pb.SeparateRequest(config=config()))
            assert next(iter(held)).HasField("accepted")  # one stream running
            code, details = status_of(lambda: list(stub_.Separate(requests(config(), []))))
            feeder.close()
            list(held)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-streams" in details
    finally:
        server.stop(0)


def test_a_stream_longer_than_the_limit_gets_resource_exhausted(golden_model, golden_processor):
    server, port = start_server(golden_model, golden_processor, limits=Limits(max_stream_seconds=0.5))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            sends = [np.zeros((20_000, 1), np.float32)] * 2  # 0.83 s
            code, details = status_of(lambda: separate(pb_grpc.SeparationServiceStub(ch), config(), sends))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "0.5 s" in details
    finally:
        server.stop(0)


# ------------------------------------------------------------------------------ info, health, reflection


def test_get_info_describes_models_formats_and_limits(stub):
    info = stub.GetInfo(pb.GetInfoRequest())
    assert [(m.name, m.selected_by_default, m.sample_rate_hertz) for m in info.models] == [("golden", True, 48000)]
    assert set(info.sample_formats) == {pb.SAMPLE_FORMAT_FLOAT32_LE, pb.SAMPLE_FORMAT_INT16_LE}
    assert info.limits.max_streams == Limits().max_streams and info.limits.max_request_bytes > 0
    assert info.server_version and not info.authentication_required


def test_health_is_serving_for_the_server_and_the_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "samaudio.v1.SeparationService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services_and_serves_the_proto(channel):
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="samaudio.v1.SeparationService"),
    ]
    listed, files = list(reflection.ServerReflectionInfo(iter(asks)))
    names = {s.name for s in listed.list_services_response.service}
    assert {"samaudio.v1.SeparationService", "grpc.health.v1.Health"} <= names
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto.FromString(files.file_descriptor_response.file_descriptor_proto[0])
    assert proto.package == "samaudio.v1" and [s.name for s in proto.service] == ["SeparationService"]


def test_every_library_error_has_a_status_code():
    import samaudio.errors
    from samaudio_server.errors import status_code

    classes = [c for c in vars(samaudio.errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    base = samaudio.errors.SAMAudioError
    unmapped = [c.__name__ for c in classes if c is not base and status_code(c()) == grpc.StatusCode.INTERNAL]
    assert not unmapped, f"add these to samaudio_server.errors.STATUS_CODES: {unmapped}"
