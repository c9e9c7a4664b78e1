"""samaudio-server with a visual prompt: a masked video in the config, over a real loopback connection.

The server runs the golden model with its tiny vision encoder; every stream is compared with the library's
streaming engine run in this process on the same audio and the same video.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from fractions import Fraction

import grpc
import numpy as np
import pytest

from samaudio.v1 import separation_pb2 as pb
from samaudio.v1 import separation_pb2_grpc as pb_grpc
from samaudio_server.servicer import Limits
from server_fixtures import MAX_BATCH, config, make_audio, pieces, separate, start_server, status_of
from video_fixtures import encode_video, tiny_video, vision_model  # noqa: F401

FPS = 25.0


@pytest.fixture(scope="module")
def vision_server(vision_model, golden_processor):
    server, port = start_server(vision_model, golden_processor)
    yield server, port
    server.stop(0)


@pytest.fixture(scope="module")
def stub(vision_server):
    with grpc.insecure_channel(f"127.0.0.1:{vision_server[1]}") as channel:
        yield pb_grpc.SeparationServiceStub(channel)


@pytest.fixture(scope="module")
def clip():
    """A 0.48 s video with its object masks, as raw bytes: (frames (N, 3, H, W), masks (N, H, W))."""
    return tiny_video(frames=12, height=32, width=48, seed=2)


def raw_video(frames, masks=None, fps: float = FPS, **fields) -> pb.MaskedVideo:
    N, _, H, W = frames.shape
    fields.setdefault("width_pixels", W)
    fields.setdefault("height_pixels", H)
    fields.setdefault("frames_per_second", fps)
    fields.setdefault("rgb_frames", frames.permute(0, 2, 3, 1).numpy().tobytes())  # frame, row, pixel, R G B
    if masks is not None:
        fields.setdefault("masks", masks.numpy().astype(np.uint8).tobytes())
    return pb.MaskedVideo(**fields)


def reference(model, processor, cfg: pb.SeparationConfig, sends, video) -> tuple[np.ndarray, np.ndarray]:
    """The library's streaming engine, fed the same pieces and the same VideoPrompt: (target, residual)."""
    from samaudio.streaming import StreamingSeparator

    sep = StreamingSeparator(
        model,
        processor,
        cfg.description,
        sample_rate=cfg.sample_rate_hertz,
        channels=cfg.channel_count,
        chunk_seconds=cfg.chunk_seconds,
        overlap_seconds=cfg.overlap_seconds,
        seed=cfg.seed,
        ode_opt={"method": "midpoint", "options": {"step_size": 1.0 / cfg.solver_steps}},
        max_batch=MAX_BATCH,
        video=video,
    )
    blocks = [b for piece in sends for b in sep.push(piece)] + sep.finish()
    return np.concatenate([b.target for b in blocks]), np.concatenate([b.residual for b in blocks])


# ---------------------------------------------------------------------------------------------- results


def test_stems_with_raw_frames_and_masks_equal_the_library_engine(stub, vision_model, golden_processor, clip):
    from samaudio.streaming import VideoPrompt

    frames, masks = clip
    cfg = config(description="", masked_video=raw_video(frames, masks))
    sends = pieces(make_audio(1.3, 48000, 1, seed=30), 15_000)
    got = separate(stub, cfg, sends)
    prompt = VideoPrompt.from_frames(frames, FPS, masks)
    target, residual = reference(vision_model, golden_processor, cfg, sends, prompt)
    assert got.target_bytes == target.astype("<f4").tobytes()
    assert got.residual_bytes == residual.astype("<f4").tobytes()


def test_stems_with_an_encoded_file_equal_the_library_engine(stub, vision_model, golden_processor, clip):
    from samaudio.streaming import VideoPrompt

    frames, masks = clip
    data = encode_video(frames, Fraction(25, 2), codec="mpeg4")  # 0.96 s at 12.5 fps, lossy
    cfg = config(channels=2, sample_rate=44100, masked_video=pb.MaskedVideo(encoded_file=data))
    sends = pieces(make_audio(1.2, 44100, 2, seed=31), 9_000)
    got = separate(stub, cfg, sends)
    target, residual = reference(vision_model, golden_processor, cfg, sends, VideoPrompt.from_file(data))
    assert np.array_equal(got.target, target) and np.array_equal(got.residual, residual)


def test_masks_sent_with_an_encoded_file_black_out_the_object(stub, vision_model, golden_processor, clip):
    from samaudio.streaming import VideoPrompt

    frames, masks = clip
    data = encode_video(frames, FPS, codec="ffv1")
    video = pb.MaskedVideo(encoded_file=data, masks=masks.numpy().astype(np.uint8).tobytes())
    cfg = config(masked_video=video)
    sends = [make_audio(0.7, 48000, 1, seed=32)]
    got = separate(stub, cfg, sends)
    prompt = VideoPrompt.from_file(data, masks)
    assert np.array_equal(got.target, reference(vision_model, golden_processor, cfg, sends, prompt)[0])


def test_the_video_changes_the_stems(stub, clip):
    frames, masks = clip
    sends = [make_audio(0.8, 48000, 1, seed=33)]
    with_video = separate(stub, config(masked_video=raw_video(frames, masks)), sends)
    without = separate(stub, config(), sends)
    assert np.abs(with_video.target - without.target).max() > 1e-4


def test_accepted_reports_the_video_without_its_bytes(stub, clip):
    frames, _ = clip
    data = encode_video(frames, Fraction(25, 2), codec="mpeg4")
    got = separate(stub, config(masked_video=pb.MaskedVideo(encoded_file=data)), [make_audio(0.3, 48000, 1, seed=34)])
    video = got.accepted.effective_config.masked_video
    assert video.WhichOneof("source") is None and video.masks == b""
    assert (video.frame_count, video.width_pixels, video.height_pixels) == (12, 48, 32)
    assert video.frames_per_second == pytest.approx(12.5)


def test_get_info_says_the_model_takes_masked_videos(stub):
    info = stub.GetInfo(pb.GetInfoRequest())
    assert [m.masked_video_supported for m in info.models] == [True]
    assert info.limits.max_video_bytes == Limits().max_video_bytes


# ---------------------------------------------------------------------------------------------- bad input


def _frames(n: int = 3, h: int = 4, w: int = 6) -> bytes:
    return bytes(n * h * w * 3)


BAD_VIDEOS = {
    "frame bytes not whole frames": (pb.MaskedVideo(width_pixels=6, height_pixels=4, frames_per_second=25,
                                                    rgb_frames=_frames()[:-1]), "215 bytes"),
    "no frames": (pb.MaskedVideo(width_pixels=6, height_pixels=4, frames_per_second=25, rgb_frames=b""), "0 bytes"),
    "zero width": (pb.MaskedVideo(height_pixels=4, frames_per_second=25, rgb_frames=_frames()), "width_pixels=0"),
    "frame rate unset": (pb.MaskedVideo(width_pixels=6, height_pixels=4, rgb_frames=_frames()), "frames_per_second=0"),
    "masks for other frames": (
        pb.MaskedVideo(width_pixels=6, height_pixels=4, frames_per_second=25, rgb_frames=_frames(), masks=bytes(48)),
        "need 72",
    ),
    "neither frames nor a file": (pb.MaskedVideo(width_pixels=6, height_pixels=4, frames_per_second=25), "neither"),
    "a file that does not decode": (pb.MaskedVideo(encoded_file=b"not a video " * 40), "cannot decode"),
}


@pytest.mark.parametrize("case", list(BAD_VIDEOS))
def test_a_bad_video_ends_the_stream_with_invalid_argument_and_says_what_to_change(stub, case):
    video, hint = BAD_VIDEOS[case]
    code, details = status_of(lambda: separate(stub, config(masked_video=video), [make_audio(0.2, 48000, 1, seed=0)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert hint in details


def test_masks_that_do_not_fit_an_encoded_file_get_invalid_argument(stub, clip):
    frames, masks = clip
    video = pb.MaskedVideo(encoded_file=encode_video(frames, FPS), masks=masks[:-1].numpy().astype(np.uint8).tobytes())
    code, details = status_of(lambda: separate(stub, config(masked_video=video), [make_audio(0.2, 48000, 1, seed=0)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "12 frames of 48x32" in details


def test_a_video_larger_than_the_limit_gets_resource_exhausted(vision_model, golden_processor, clip):
    frames, _ = clip
    limit = 5 * 32 * 48 * 3  # five frames
    server, port = start_server(vision_model, golden_processor, limits=Limits(max_video_bytes=limit))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub_ = pb_grpc.SeparationServiceStub(ch)
            audio = [make_audio(0.2, 48000, 1, seed=0)]
            sent, sent_details = status_of(lambda: separate(stub_, config(masked_video=raw_video(frames)), audio))
            data = encode_video(frames, FPS, codec="mpeg4")
            assert len(data) < limit  # small as sent, too large once decoded
            file_video = pb.MaskedVideo(encoded_file=data)
            decoded, decoded_details = status_of(lambda: separate(stub_, config(masked_video=file_video), audio))
            assert stub_.GetInfo(pb.GetInfoRequest()).limits.max_video_bytes == limit
        assert sent == decoded == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(limit) in sent_details and str(limit) in decoded_details
    finally:
        server.stop(0)


def test_a_video_for_a_model_without_vision_encoder_gets_failed_precondition(golden_model, golden_processor, clip):
    frames, masks = clip
    server, port = start_server(golden_model, golden_processor)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub_ = pb_grpc.SeparationServiceStub(ch)
            assert [m.masked_video_supported for m in stub_.GetInfo(pb.GetInfoRequest()).models] == [False]
            cfg = config(masked_video=raw_video(frames, masks))
            code, details = status_of(lambda: separate(stub_, cfg, [make_audio(0.2, 48000, 1, seed=0)]))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "--vision" in details
    finally:
        server.stop(0)


def test_samaudio_server_started_with_vision_takes_masked_videos(golden_dir, clip):
    cmd = [sys.executable, "-m", "samaudio_server.main", "--model", str(golden_dir), "--port", "0", "--device", "cpu",
           "--vision", "--chunk-seconds", "1", "--overlap-seconds", "0.4"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        log, match = [], None
        for line in proc.stderr:  # ends if the process exits
            log.append(line)
            if match := re.search(r"listening on [\d.]+:(\d+)", line):
                break
        assert match, "samaudio-server exited before listening:\n" + "".join(log)
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining its log
        with grpc.insecure_channel(f"127.0.0.1:{match.group(1)}") as ch:
            stub_ = pb_grpc.SeparationServiceStub(ch)
            assert [m.masked_video_supported for m in stub_.GetInfo(pb.GetInfoRequest()).models] == [True]
            audio = make_audio(0.5, 48000, 1, seed=35)
            got = separate(stub_, config(description="", masked_video=raw_video(*clip)), [audio])
        assert got.target.shape == audio.shape and got.accepted.effective_config.masked_video.frame_count == 12
    finally:
        proc.kill()
        proc.wait(timeout=60)
