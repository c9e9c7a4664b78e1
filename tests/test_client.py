"""The thin client library against a real server on loopback serving the golden model.

The client must hand back exactly what the library's streaming engine computes for the same input (float32 goes
over the wire unchanged), put span prompts on the timeline of what it sends, and turn every failure into one
`CallError` carrying the gRPC code and the server's message.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import grpc
import numpy as np
import pytest
import soundfile as sf
from samaudio_client import AsyncClient, CallError, Client, ClientError, SeparatedBlock, Span, SpanError
from server_fixtures import (  # noqa: F401 - fixtures are used by name
    CHUNK_SECONDS,
    OVERLAP_SECONDS,
    SOLVER_STEPS,
    golden_server,
    make_audio,
    reference,
    start_server,
)

from samaudio.v1 import separation_pb2 as pb

OPTIONS = {"chunk_seconds": CHUNK_SECONDS, "overlap_seconds": OVERLAP_SECONDS, "solver_steps": SOLVER_STEPS}


def expected(model, processor, audio, sample_rate, description, anchors=()):
    """The library engine's stems for `audio` with the test OPTIONS, sent in the client's block size."""
    cfg = pb.SeparationConfig(
        description=description,
        anchors=[
            pb.Anchor(
                sign=pb.ANCHOR_SIGN_POSITIVE if s == "+" else pb.ANCHOR_SIGN_NEGATIVE, start_seconds=a, end_seconds=b
            )
            for s, a, b in anchors
        ],
        sample_rate_hertz=sample_rate,
        channel_count=audio.shape[1],
        sample_format=pb.SAMPLE_FORMAT_FLOAT32_LE,
        seed=0,
        **OPTIONS,
    )
    return reference(model, processor, cfg, [audio])


@pytest.fixture(scope="module")
def client(golden_server):
    _, port = golden_server
    with Client(f"127.0.0.1:{port}") as c:
        yield c


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_separate_returns_the_engines_stems_at_the_inputs_shape(client, golden_model, golden_processor):
    audio = make_audio(1.37, 44100, 2, seed=1)  # (frames, 2)

    stems = client.separate(audio, 44100, "a chirp", **OPTIONS)

    target, residual = expected(golden_model, golden_processor, audio, 44100, "a chirp")
    assert stems.target.shape == stems.residual.shape == audio.shape
    assert stems.target.dtype == np.float32
    np.testing.assert_array_equal(stems.target, target)
    np.testing.assert_array_equal(stems.residual, residual)


def test_separate_of_one_dimensional_audio_returns_one_dimensional_stems(client):
    audio = make_audio(0.61, 48000, 1, seed=2)[:, 0]  # (frames,)

    stems = client.separate(audio, 48000, "a chirp", **OPTIONS)

    assert stems.target.shape == stems.residual.shape == audio.shape


def test_separate_file_region_equals_separate_of_the_same_frames(client, tmp_path):
    audio = make_audio(2.3, 44100, 2, seed=3)
    sf.write(tmp_path / "in.wav", audio, 44100, subtype="FLOAT")

    from_file = client.separate_file(tmp_path / "in.wav", "a chirp", start=0.5, duration=1.2, **OPTIONS)

    first, frames = round(0.5 * 44100), round(1.2 * 44100)
    from_array = client.separate(audio[first : first + frames], 44100, "a chirp", **OPTIONS)
    np.testing.assert_array_equal(from_file.target, from_array.target)
    np.testing.assert_array_equal(from_file.residual, from_array.residual)


def test_spans_on_the_files_timeline_reach_the_server_on_the_regions_timeline(
    client, golden_model, golden_processor, tmp_path
):
    audio = make_audio(2.0, 48000, 1, seed=4)
    sf.write(tmp_path / "in.wav", audio, 48000, subtype="FLOAT")

    stems = client.separate_file(
        tmp_path / "in.wav", "a chirp", ["+1.0:1.5", ("-", 0.6, 0.8)], start=0.5, duration=1.25, **OPTIONS
    )

    region = audio[24000 : 24000 + 60000]
    target, _ = expected(golden_model, golden_processor, region, 48000, "a chirp", [("+", 0.5, 1.0), ("-", 0.1, 0.3)])
    np.testing.assert_array_equal(stems.target, target)


def test_a_span_outside_the_region_is_refused_before_any_call(closed_port, tmp_path):
    sf.write(tmp_path / "in.wav", np.zeros((48000, 1), np.float32), 48000)

    with Client(f"127.0.0.1:{closed_port}") as c, pytest.raises(SpanError, match=r"outside .* 0\.2\.\.0\.7 s"):
        c.separate_file(tmp_path / "in.wav", "x", [Span("+", 0.6, 0.9)], start=0.2, duration=0.5)


def test_on_block_gets_contiguous_blocks_and_the_summary_is_returned(client, tmp_path):
    audio = make_audio(1.9, 44100, 2, seed=5)
    sf.write(tmp_path / "in.wav", audio, 44100, subtype="FLOAT")
    blocks: list[SeparatedBlock] = []

    summary = client.separate_file(tmp_path / "in.wav", "a chirp", on_block=blocks.append, **OPTIONS)

    assert [b.start for b in blocks] == list(np.cumsum([0] + [len(b.target) for b in blocks[:-1]]))
    assert sum(len(b.target) for b in blocks) == len(audio) == summary.frames_in == summary.frames_out
    assert summary.windows > 1 and summary.model_evaluations > 0
    assert (summary.settings.chunk_seconds, summary.settings.solver_steps) == (CHUNK_SECONDS, SOLVER_STEPS)


def test_progress_reaches_every_frame(client):
    audio = make_audio(1.5, 48000, 1, seed=6)
    seen: list[tuple[int, int]] = []

    client.separate(audio, 48000, "a chirp", on_progress=lambda done, known: seen.append((done, known)), **OPTIONS)

    assert seen and seen[-1] == (len(audio), len(audio))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_wrong_token_raises_unauthenticated_with_the_servers_message(golden_model, golden_processor):
    server, port = start_server(golden_model, golden_processor, token="s3cret")
    try:
        with Client(f"127.0.0.1:{port}", token="wrong") as c, pytest.raises(CallError) as err:
            c.separate(np.zeros((4800, 1), np.float32), 48000, "x", **OPTIONS)
        with Client(f"127.0.0.1:{port}", token="s3cret") as c:
            assert c.separate(np.zeros((4800, 1), np.float32), 48000, "x", **OPTIONS).target.shape == (4800, 1)
    finally:
        server.stop(0)

    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "wrong token" in err.value.message and "UNAUTHENTICATED" in str(err.value)


def test_a_stream_over_the_servers_limit_raises_resource_exhausted_without_retrying(golden_model, golden_processor):
    from samaudio_server.servicer import Limits

    server, port = start_server(golden_model, golden_processor, limits=Limits(max_stream_seconds=0.5))
    try:
        with Client(f"127.0.0.1:{port}") as c, pytest.raises(CallError) as err:
            c.separate(np.zeros((48000, 1), np.float32), 48000, "x", **OPTIONS)
    finally:
        server.stop(0)

    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "0.5" in err.value.message and "tries" not in err.value.message


def test_an_unreachable_server_is_retried_then_raises_unavailable(closed_port):
    with Client(f"127.0.0.1:{closed_port}", retries=2, backoff_seconds=0.01) as c, pytest.raises(CallError) as err:
        c.separate(np.zeros((4800, 1), np.float32), 48000, "x")

    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert "after 3 tries" in err.value.message


def test_a_draining_server_is_not_retried_and_not_called_unreachable(golden_model, golden_processor, caplog):
    server, port = start_server(golden_model, golden_processor)
    server.servicer.gate.close()  # what drain() does first: new streams get UNAVAILABLE with the server's message
    try:
        with caplog.at_level(logging.INFO, logger="samaudio_client"):
            with Client(f"127.0.0.1:{port}", retries=3, backoff_seconds=0.01) as c, pytest.raises(CallError) as err:
                c.separate(np.zeros((4800, 1), np.float32), 48000, "x", **OPTIONS)
    finally:
        server.stop(0)

    assert err.value.code == grpc.StatusCode.UNAVAILABLE and "shutting down" in err.value.message
    assert "tries" not in err.value.message and "is the server running" not in err.value.message
    assert "retrying" not in caplog.text


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("gpu-box", "gpu-box:50051"),
        ("10.0.0.7", "10.0.0.7:50051"),
        ("gpu-box:7000", "gpu-box:7000"),
        ("::1", "[::1]:50051"),
        ("[::1]", "[::1]:50051"),
        ("[::1]:7000", "[::1]:7000"),
        ("unix:/tmp/samaudio.sock", "unix:/tmp/samaudio.sock"),
    ],
)
def test_a_target_without_a_port_dials_50051_not_443(target, expected):
    with Client(target) as c:
        assert c.target == expected


class _StartOnRetry(logging.Handler):
    """Starts a built server the moment the client logs its first retry: a server that comes up late."""

    def __init__(self, server):
        super().__init__()
        self.server, self.retries = server, 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.retries += 1
            if self.retries == 1:
                self.server.start()


def test_a_stream_that_has_not_started_is_retried_until_the_server_is_up(golden_model, golden_processor):
    from samaudio_server.server import create_server

    server, port = create_server("127.0.0.1:0", model=golden_model, processor=golden_processor)  # built, not started
    handler = _StartOnRetry(server)
    logger = logging.getLogger("samaudio_client.client")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with Client(f"127.0.0.1:{port}", retries=5, backoff_seconds=0.2) as c:
            stems = c.separate(np.zeros((4800, 2), np.float32), 48000, "x", **OPTIONS)
    finally:
        logger.removeHandler(handler)
        server.stop(0)

    assert handler.retries >= 1
    assert stems.target.shape == (4800, 2)


def test_info_reports_health_models_formats_and_limits(client):
    info = client.info()

    assert info.health == "SERVING"
    assert [m.name for m in info.models] == ["golden"] and info.models[0].default
    assert info.models[0].sample_rate == 48000
    assert "SAMPLE_FORMAT_FLOAT32_LE" in info.sample_formats
    assert info.limits["max_stream_seconds"] > 0 and not info.authentication_required
    assert info.version


def test_the_async_client_gives_the_same_stems_as_the_blocking_one(client, golden_server, tmp_path):
    _, port = golden_server
    audio = make_audio(0.7, 44100, 2, seed=7)
    sf.write(tmp_path / "in.wav", audio, 44100, subtype="FLOAT")

    async def separate():
        async with AsyncClient(f"127.0.0.1:{port}") as c:
            info = await c.info()
            return info, await c.separate_file(tmp_path / "in.wav", "a chirp", ["+0.2:0.5"], **OPTIONS)

    info, stems = asyncio.run(separate())

    blocking = client.separate(audio, 44100, "a chirp", ["+0.2:0.5"], **OPTIONS)
    assert info.health == "SERVING"
    np.testing.assert_array_equal(stems.target, blocking.target)
    np.testing.assert_array_equal(stems.residual, blocking.residual)


def test_an_unknown_option_is_a_type_error_naming_the_known_ones(client):
    with pytest.raises(TypeError, match="chunk_secs.*known: model, chunk_seconds"):
        client.separate(np.zeros((100, 1), np.float32), 48000, "x", chunk_secs=1.0)


def test_several_descriptions_come_back_by_name_from_one_stream(client):
    audio = (np.round(make_audio(1.3, 44100, 2, seed=8) * 2**23) / 2**23).astype(np.float32)  # a 24-bit source

    stems = client.separate(audio, 44100, ["a chirp", "low hum", "a chirp"], null_sum=True, **OPTIONS)
    alone = client.separate(audio, 44100, "low hum", **OPTIONS)

    assert list(stems.targets) == ["a chirp", "low hum", "a chirp (2)"]
    np.testing.assert_allclose(stems["low hum"], alone.target, atol=1e-6, rtol=0)  # its single-prompt stream
    np.testing.assert_array_equal(stems.target, stems["a chirp"])
    assert np.array_equal(stems["a chirp"] + stems["low hum"] + stems["a chirp (2)"] + stems["residual"], audio)
    with pytest.raises(KeyError, match="the stems are a chirp, low hum, a chirp \\(2\\), residual"):
        stems["drums"]


def test_spans_with_several_descriptions_are_refused_before_any_call(closed_port):
    with Client(f"127.0.0.1:{closed_port}", retries=0) as c:
        with pytest.raises(ClientError, match="spans and a video prompt mark one sound"):
            c.separate(np.zeros((100, 1), np.float32), 48000, ["a", "b"], ["+0:0.001"])


def test_on_step_moves_inside_one_window(golden_server):
    _, port = golden_server
    seen: list[tuple[int, int]] = []

    async def separate():
        async def on_step(done: int, planned: int) -> None:  # an async callback is awaited too
            seen.append((done, planned))

        async with AsyncClient(f"127.0.0.1:{port}") as c:
            return await c.separate(make_audio(0.5, 48000, 1, seed=9), 48000, "a chirp", on_step=on_step,
                                    chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS, solver_steps=3)

    stems = asyncio.run(separate())

    assert stems.summary.windows == 1
    assert seen == [(n, 6) for n in range(1, 7)]  # 3 midpoint steps: 6 evaluations, each one told


def test_the_names_exported_before_still_name_the_same_classes():
    import samaudio_client

    assert samaudio_client.ServerError is CallError and samaudio_client.SamaudioError is ClientError
    assert samaudio_client.StemBlock is SeparatedBlock
    assert not {"ServerError", "SamaudioError", "StemBlock"} & set(samaudio_client.__all__)  # not advertised
