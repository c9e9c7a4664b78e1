"""The streaming engine with a visual prompt: each window gets the masked frames of its own latent frames.

A frame is picked per latent frame by time (the frame shown nearest to f * 40 ms, the earlier on ties); latent
frames at or after the video's end get none, so their vision features are zeros, exactly as without a video.
Streamed results stay independent of pushes and batches, and one window equals `SAMAudio.separate`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from samaudio.errors import InvalidRequestError, InvalidVideoError
from samaudio.streaming import (
    StreamingSeparator,
    VideoPrompt,
    frame_noise,
    separate_windows,
    watermark_bits,
    window_batch,
)
from test_streaming import CHUNK, FAST_ODE, OVERLAP, TOL, EchoWorker, W, joined, music, random_sizes, run
from video_fixtures import encode_video, numbered_video, tiny_video, vision_model  # noqa: F401

FPS = 25.0


def separator(model, processor, video, *, description="the masked object", rate=48000, channels=1, **kw):
    kw.setdefault("ode_opt", FAST_ODE)
    return StreamingSeparator(
        model, processor, description, sample_rate=rate, channels=channels, chunk_seconds=CHUNK,
        overlap_seconds=OVERLAP, video=video, **kw,
    )


@pytest.fixture(scope="module")
def prompt() -> VideoPrompt:
    video, masks = tiny_video(frames=12, height=32, width=48, seed=1)  # 0.48 s at 25 fps
    return VideoPrompt.from_frames(video, FPS, masks=masks)


# ----------------------------------------------------------------------------------------------------------
# which frames each window gets


def test_each_window_gets_the_frame_nearest_each_of_its_latent_frames(vision_model, golden_processor):
    video = VideoPrompt.from_frames(numbered_video(6), 12.5)  # frames at 0, 80, ... 400 ms; ends at 480 ms
    echo = EchoWorker()
    sep = separator(vision_model, golden_processor, video, worker=echo)
    run(sep, music(48000, 1, 48000))  # 1 s: windows start at latent frames 0, 3, 6, ..., 24
    got = {job.first_frame: (job.masked_video[:, 0, 0, 0] // 10).tolist() for job in echo.jobs}
    # latent frame f at f * 40 ms -> frame round-half-down(f / 2); latent frames 12 on (480 ms) are past the end
    assert got[0] == [0, 0, 1, 1, 2]
    assert got[3] == [1, 2, 2, 3, 3]
    assert got[9] == [4, 5, 5]
    assert all(got[f] == [] for f in got if f >= 12)


def test_the_same_frames_prompt_every_channel(vision_model, golden_processor, prompt):
    echo = EchoWorker()
    sep = separator(vision_model, golden_processor, prompt, channels=2, worker=echo)
    sep.push(music(9600, 2, 48000))
    batch = window_batch(golden_processor, echo.jobs[:1])
    assert len(batch.masked_video) == 2 and batch.masked_video[0] is batch.masked_video[1]
    assert torch.equal(batch.masked_video[0], prompt.frames[:W])  # 25 fps: one frame per latent frame


def test_a_file_prompt_uses_its_presentation_times(vision_model, golden_processor):
    frames = numbered_video(5)
    from_file = VideoPrompt.from_file(encode_video(frames, Fraction(25, 2)))
    assert torch.equal(from_file.frames, frames)
    assert torch.allclose(from_file.times, torch.arange(5, dtype=torch.float64) * 0.08)
    assert from_file.end_seconds == pytest.approx(0.4) and from_file.frames_per_second == pytest.approx(12.5)
    same = VideoPrompt.from_frames(frames, 12.5)
    assert torch.equal(from_file.window(0, 10, 1920, 48000), same.window(0, 10, 1920, 48000))


# ----------------------------------------------------------------------------------------------------------
# results


def test_one_window_with_a_video_matches_model_separate(vision_model, golden_processor, prompt):
    x = music(W * 1920, 1, 48000, seed=21)  # exactly one window: its 5 latent frames get video frames 0..4
    sep = separator(vision_model, golden_processor, prompt, seed=4, ode_opt=None)
    target, residual = joined(run(sep, x))

    batch = golden_processor(["the masked object"], [torch.from_numpy(x.T.copy())], masked_videos=[prompt.frames[:W]])
    noise = frame_noise(4, 0, W, 2 * vision_model.config.audio_codec.codebook_dim)[None]  # (1, W, 2C)
    ref = vision_model.separate(batch, noise=noise, watermark_message=watermark_bits(4))
    assert np.abs(target[:, 0] - ref.target[0].numpy()).max() <= TOL
    assert np.abs(residual[:, 0] - ref.residual[0].numpy()).max() <= TOL


def test_the_video_changes_the_stems(vision_model, golden_processor, prompt):
    x = music(19200, 1, 48000, seed=22)
    with_video = joined(run(separator(vision_model, golden_processor, prompt), x))
    without = joined(run(separator(vision_model, golden_processor, None), x))
    assert np.abs(with_video[0] - without[0]).max() > 1e-4


def test_past_the_video_end_a_window_is_separated_as_without_video(vision_model, golden_processor, prompt):
    echo = EchoWorker()
    sep = separator(vision_model, golden_processor, prompt, worker=echo)
    run(sep, music(48000, 1, 48000, seed=23))
    past = next(job for job in echo.jobs if job.masked_video.shape[0] == 0)  # starts after 0.48 s
    (with_empty,) = separate_windows(vision_model, golden_processor, [past])
    past.masked_video = None
    (without,) = separate_windows(vision_model, golden_processor, [past])
    assert torch.equal(with_empty.target, without.target) and torch.equal(with_empty.residual, without.residual)


def test_split_and_batch_invariance_with_a_video(vision_model, golden_processor, prompt):
    take = music(round(0.9 * 44100), 2, 44100, seed=24)  # longer than the video: windows with, across, after it
    at_once = joined(run(separator(vision_model, golden_processor, prompt, rate=44100, channels=2, max_batch=4), take))
    sep = separator(vision_model, golden_processor, prompt, rate=44100, channels=2, max_batch=1)
    pieces = joined(run(sep, take, random_sizes(np.random.default_rng(6), len(take) - 1, 5000)))
    assert np.abs(pieces[0] - at_once[0]).max() <= TOL
    assert np.abs(pieces[1] - at_once[1]).max() <= TOL


def test_windows_with_and_without_video_batch_together_without_changing_results(vision_model, golden_processor,
                                                                                 prompt):
    """What a server's pool does: a stream with a video and one without in the same model call."""
    jobs = []
    for video, description in ((prompt, ""), (None, "rain")):
        echo = EchoWorker()
        separator(vision_model, golden_processor, video, description=description, worker=echo).push(
            music(9600, 1, 48000, seed=25)
        )
        jobs.append(echo.jobs[0])
    together = separate_windows(vision_model, golden_processor, jobs)
    for job, stems in zip(jobs, together):
        (alone,) = separate_windows(vision_model, golden_processor, [job])
        assert torch.allclose(stems.target, alone.target, rtol=0, atol=TOL)
        assert torch.allclose(stems.residual, alone.residual, rtol=0, atol=TOL)


def test_an_empty_description_is_allowed_with_a_video(vision_model, golden_processor, prompt):
    sep = separator(vision_model, golden_processor, prompt, description="")
    blocks = run(sep, music(6000, 1, 48000))
    assert sum(b.frames for b in blocks) == 6000


def test_the_stream_frees_its_video_when_it_closes(vision_model, golden_processor, prompt):
    sep = separator(vision_model, golden_processor, prompt, worker=EchoWorker())
    run(sep, music(4800, 1, 48000))
    assert sep.video is None


# ----------------------------------------------------------------------------------------------------------
# errors, before any model work


def test_a_video_for_a_model_without_vision_encoder_is_refused(golden_model, golden_processor, prompt):
    with pytest.raises(InvalidRequestError, match="vision=True"):
        separator(golden_model, golden_processor, prompt, worker=EchoWorker())


def _frames(**kw) -> torch.Tensor:
    shape = kw.pop("shape", (4, 3, 8, 8))
    return torch.zeros(shape, dtype=kw.pop("dtype", torch.uint8))


BAD_PROMPTS = {
    "float frames": (lambda: VideoPrompt.from_frames(_frames(dtype=torch.float32), FPS), "uint8"),
    "frames without channels": (lambda: VideoPrompt.from_frames(_frames(shape=(4, 8, 8)), FPS), "(frames, 3"),
    "no frames": (lambda: VideoPrompt.from_frames(_frames(shape=(0, 3, 8, 8)), FPS), "(0, 3, 8, 8)"),
    "zero frame rate": (lambda: VideoPrompt.from_frames(_frames(), 0.0), "frames_per_second is 0.0"),
    "infinite frame rate": (lambda: VideoPrompt.from_frames(_frames(), math.inf), "frames_per_second"),
    "masks for other frames": (
        lambda: VideoPrompt.from_frames(_frames(), FPS, masks=torch.zeros(3, 8, 8)),
        "(3, 8, 8)",
    ),
    "times out of order": (
        lambda: VideoPrompt(_frames(), torch.tensor([0.0, 0.2, 0.1, 0.3], dtype=torch.float64), 0.4),
        "non-decreasing",
    ),
    "end before the last frame": (
        lambda: VideoPrompt(_frames(), torch.arange(4, dtype=torch.float64), 3.0),
        "3.0",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_a_bad_video_prompt_raises_invalid_video_error(case):
    make, hint = BAD_PROMPTS[case]
    with pytest.raises(InvalidVideoError) as info:
        make()
    assert hint in str(info.value)


def test_a_video_that_is_not_a_prompt_is_refused(vision_model, golden_processor):
    with pytest.raises(InvalidVideoError, match="VideoPrompt"):
        separator(vision_model, golden_processor, torch.zeros(4, 3, 8, 8, dtype=torch.uint8), worker=EchoWorker())

