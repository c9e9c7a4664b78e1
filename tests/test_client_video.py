"""Visual prompting from the thin client and the `samaudio` command line, against a real server on loopback.

The server runs the golden model with its tiny vision encoder. A video goes out untouched (a file as its bytes,
raw frames as RGB bytes): the stems must equal the library's streaming engine run in this process on the same
audio and the same video, the video starting at the first frame of audio sent (the region's start for a file).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from fractions import Fraction

import grpc
import numpy as np
import pytest
import soundfile as sf
from samaudio_client import AsyncClient, Client, CallError
from samaudio_client.client import Video, VideoError
from server_fixtures import (  # noqa: F401 - fixtures are used by name
    CHUNK_SECONDS,
    MAX_BATCH,
    OVERLAP_SECONDS,
    SOLVER_STEPS,
    golden_server,
    make_audio,
    start_server,
)
from video_fixtures import encode_video, tiny_video, vision_model, write_video  # noqa: F401

OPTIONS = {"chunk_seconds": CHUNK_SECONDS, "overlap_seconds": OVERLAP_SECONDS, "solver_steps": SOLVER_STEPS}
FAST = ["--chunk-seconds", str(CHUNK_SECONDS), "--overlap-seconds", str(OVERLAP_SECONDS), "--steps", str(SOLVER_STEPS)]
FPS = 25.0


@pytest.fixture(scope="module")
def vision_server(vision_model, golden_processor):
    server, port = start_server(vision_model, golden_processor)
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def client(vision_server):
    with Client(vision_server) as c:
        yield c


@pytest.fixture(scope="module")
def clip():
    """A 0.48 s video at 25 fps and its object masks: (frames (N, 3, H, W), masks (N, H, W)) torch tensors."""
    return tiny_video(frames=12, height=32, width=48, seed=2)


def run_cli(python: str, *args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("SAMAUDIO_TOKEN", "SAMAUDIO_SERVER")}
    environment.setdefault("OMP_NUM_THREADS", "1")  # the server in this process shares the cores
    return subprocess.run(
        [python, "-m", "samaudio_client.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )


def engine(model, processor, audio: np.ndarray, sample_rate: int, description: str, video) -> np.ndarray:
    """The library's streaming engine with the test OPTIONS and a `VideoPrompt`: the target (frames, channels).
    The client states the length it sends, so the engine is told it too."""
    from samaudio.streaming import StreamingSeparator

    sep = StreamingSeparator(
        model,
        processor,
        description,
        sample_rate=sample_rate,
        channels=audio.shape[1],
        chunk_seconds=CHUNK_SECONDS,
        overlap_seconds=OVERLAP_SECONDS,
        seed=0,
        ode_opt={"method": "midpoint", "options": {"step_size": 1.0 / SOLVER_STEPS}},
        max_batch=MAX_BATCH,
        video=video,
        total_frames=len(audio),
    )
    blocks = sep.push(audio) + sep.finish()
    return np.concatenate([b.target for b in blocks]).astype(np.float32)


def rgb(frames) -> np.ndarray:
    """(N, 3, H, W) torch uint8 -> (N, H, W, 3) numpy, the client's layout."""
    return frames.permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------------------- client


def test_a_video_file_starts_at_the_regions_start_and_gives_the_engines_stems(
    client, vision_model, golden_processor, clip, tmp_path
):
    from samaudio.streaming import VideoPrompt

    frames, _ = clip
    path = write_video(tmp_path / "clip.mp4", frames, Fraction(25, 2), codec="mpeg4")  # 0.96 s, lossy
    audio = make_audio(1.7, 44100, 2, seed=40)
    sf.write(tmp_path / "take.wav", audio, 44100, subtype="FLOAT")

    video = Video.from_file(path)
    stems = client.separate_file(tmp_path / "take.wav", "", start=0.4, duration=1.1, video=video, **OPTIONS)

    region = audio[round(0.4 * 44100) : round(0.4 * 44100) + round(1.1 * 44100)]
    target = engine(vision_model, golden_processor, region, 44100, "", VideoPrompt.from_file(path.read_bytes()))
    np.testing.assert_array_equal(stems.target, target)


def test_raw_frames_and_masks_give_the_engines_stems(client, vision_model, golden_processor, clip):
    from samaudio.streaming import VideoPrompt

    frames, masks = clip
    audio = make_audio(0.9, 48000, 1, seed=41)

    video = Video.from_frames(rgb(frames), FPS, masks.numpy())  # (N, H, W, 3), (N, H, W)
    stems = client.separate(audio, 48000, "a chirp", video=video, **OPTIONS)

    prompt = VideoPrompt.from_frames(frames, FPS, masks)
    np.testing.assert_array_equal(stems.target, engine(vision_model, golden_processor, audio, 48000, "a chirp", prompt))


def test_masks_from_a_npy_file_black_out_the_object_of_a_video_file(
    client, vision_model, golden_processor, clip, tmp_path
):
    from samaudio.streaming import VideoPrompt

    frames, masks = clip
    path = write_video(tmp_path / "clip.mkv", frames, FPS, codec="ffv1")
    np.save(tmp_path / "masks.npy", masks.numpy())
    audio = make_audio(0.6, 48000, 1, seed=42)

    stems = client.separate(audio, 48000, "", video=Video.from_file(path, masks=tmp_path / "masks.npy"), **OPTIONS)

    prompt = VideoPrompt.from_file(path.read_bytes(), masks)
    np.testing.assert_array_equal(stems.target, engine(vision_model, golden_processor, audio, 48000, "", prompt))


def test_the_async_client_sends_the_video_too(client, vision_server, clip):
    frames, masks = clip
    video = Video.from_frames(rgb(frames), FPS, masks.numpy())
    audio = make_audio(0.5, 48000, 1, seed=43)

    async def separate():
        async with AsyncClient(vision_server) as c:
            return await c.separate(audio, 48000, "", video=video, **OPTIONS)

    stems = asyncio.run(separate())

    np.testing.assert_array_equal(stems.target, client.separate(audio, 48000, "", video=video, **OPTIONS).target)


def test_info_says_which_models_take_a_video(client, golden_server):
    with Client(f"127.0.0.1:{golden_server[1]}") as without_vision:
        assert [m.masked_video_supported for m in without_vision.info().models] == [False]
    assert [m.masked_video_supported for m in client.info().models] == [True]


def test_a_video_to_a_model_without_vision_raises_failed_precondition(golden_server, clip):
    frames, _ = clip
    with Client(f"127.0.0.1:{golden_server[1]}") as c, pytest.raises(CallError) as err:
        c.separate(np.zeros((4800, 1), np.float32), 48000, "x", video=Video.from_frames(rgb(frames), FPS), **OPTIONS)

    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "--vision" in err.value.message


BAD_FRAMES = {
    "channels first": (lambda f: f.transpose(0, 3, 1, 2), FPS, None, "frames.transpose(0, 2, 3, 1)"),
    "float pixels": (lambda f: f.astype(np.float32) / 255, FPS, None, "astype(np.uint8)"),
    "no frame rate": (lambda f: f, 0.0, None, "frames_per_second=0.0"),
    "masks of other frames": (lambda f: f, FPS, np.ones((3, 32, 48), bool), "give (12, 32, 48), one per frame"),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_frames_raise_a_video_error_saying_what_to_give(case, clip):
    change, fps, masks, hint = BAD_FRAMES[case]
    with pytest.raises(VideoError, match=re.escape(hint)):
        Video.from_frames(change(rgb(clip[0])), fps, masks)


# ---------------------------------------------------------------------------------------------- command line


def test_cli_video_writes_the_clients_stems_which_differ_from_the_unprompted_ones(
    thin_python, client, clip, tmp_path
):
    frames, masks = clip
    clip_path = write_video(tmp_path / "clip.mp4", frames, FPS, codec="mpeg4")
    np.save(tmp_path / "masks.npy", masks.numpy())
    audio = make_audio(1.4, 44100, 2, seed=44)
    sf.write(tmp_path / "take.wav", audio, 44100, subtype="FLOAT")
    video = ["--video", str(clip_path), "--video-masks", str(tmp_path / "masks.npy")]
    region = ["--start", "0.3", "--duration", "0.9"]

    args = ["separate", str(tmp_path / "take.wav"), "--text", "a chirp", *video, *region, *FAST]
    result = run_cli(thin_python, *args, "--server", client.target)

    assert result.returncode == 0, result.stderr
    written, _ = sf.read(tmp_path / "take.target.wav", dtype="float32")
    region_kw = {"start": 0.3, "duration": 0.9, **OPTIONS}
    same_video = Video.from_file(clip_path, tmp_path / "masks.npy")
    prompted = client.separate_file(tmp_path / "take.wav", "a chirp", video=same_video, **region_kw)
    unprompted = client.separate_file(tmp_path / "take.wav", "a chirp", **region_kw)
    np.testing.assert_array_equal(written, prompted.target)  # 32-bit float WAV keeps the stems exactly
    assert np.abs(written - unprompted.target).max() > 1e-4


def test_cli_video_without_text_separates_by_the_video_alone(thin_python, vision_server, clip, tmp_path):
    write_video(tmp_path / "clip.mp4", clip[0], FPS, codec="mpeg4")
    sf.write(tmp_path / "take.wav", make_audio(0.5, 48000, 1, seed=45), 48000, subtype="FLOAT")

    args = ["separate", str(tmp_path / "take.wav"), "--video", str(tmp_path / "clip.mp4"), "--quiet", *FAST]
    result = run_cli(thin_python, *args, "--server", vision_server)

    assert result.returncode == 0, result.stderr
    assert sf.info(tmp_path / "take.target.wav").frames == 24000


def test_cli_video_to_a_server_without_vision_exits_3_with_failed_precondition(
    thin_python, golden_server, clip, tmp_path
):
    write_video(tmp_path / "clip.mp4", clip[0], FPS, codec="mpeg4")
    sf.write(tmp_path / "take.wav", make_audio(0.3, 48000, 1, seed=46), 48000, subtype="FLOAT")

    args = ["separate", str(tmp_path / "take.wav"), "--text", "x", "--video", str(tmp_path / "clip.mp4"), *FAST]
    result = run_cli(thin_python, *args, "--server", f"127.0.0.1:{golden_server[1]}")

    assert result.returncode == 3
    assert "FAILED_PRECONDITION" in result.stderr and "--vision" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "take.wav"]  # no partial stems


def test_cli_a_missing_video_exits_2_before_any_call(thin_python, tmp_path):
    sf.write(tmp_path / "take.wav", np.zeros((4800, 1), np.float32), 48000)

    result = run_cli(thin_python, "separate", str(tmp_path / "take.wav"), "--video", str(tmp_path / "nope.mp4"))

    assert result.returncode == 2
    assert "nope.mp4: no such video file" in result.stderr


def test_cli_video_with_local_exits_2_saying_it_needs_a_server(thin_python, tmp_path):
    sf.write(tmp_path / "take.wav", np.zeros((4800, 1), np.float32), 48000)
    write_video(tmp_path / "clip.mp4", tiny_video(frames=2)[0], FPS, codec="mpeg4")

    args = ["separate", str(tmp_path / "take.wav"), "--video", str(tmp_path / "clip.mp4"), "--local"]
    result = run_cli(thin_python, *args)

    assert result.returncode == 2
    assert "started with --vision, not --local" in result.stderr
