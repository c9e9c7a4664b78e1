"""Visual prompting: the PE vision encoder is built on request and its masked-video features reach the DiT.

Video files are real files written in `tmp_path` with PyAV, decoded by the processor with PyAV.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from samaudio.errors import InvalidRequestError, InvalidVideoError, VideoTooLargeError
from samaudio.processor import decode_video, nearest_frames
from video_fixtures import encode_video, numbered_video, tiny_video, vision_model, write_video  # noqa: F401

ONE_STEP = {"method": "euler", "options": {"step_size": 1.0}}


@pytest.fixture(scope="module")
def clip(golden):
    tensors, meta = golden("e2e_text")
    return tensors["audio_in_0"][:, : 48000], meta["descriptions"]


def masked_video(processor, frames: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (frames, 3, 40, 56), dtype=torch.uint8, generator=g)
    mask = torch.zeros(frames, 1, 40, 56, dtype=torch.bool)
    mask[:, :, 10:30, 20:40] = True  # the object: blacked out, as a segmenter's mask does
    return processor.mask_videos([video], [mask])[0]


def test_vision_model_state_dict_equals_the_official_keys(vision_model, golden_keys):
    actual = [(n, list(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in vision_model.state_dict().items()]
    assert actual == golden_keys


def test_mask_videos_blacks_out_the_masked_pixels(golden_processor):
    video = masked_video(golden_processor)
    assert video.dtype == torch.uint8
    assert video[:, :, 10:30, 20:40].eq(0).all()
    assert video[:, :, :10].ne(0).any()


def test_separate_with_a_masked_video_uses_its_features(vision_model, golden_processor, clip):
    audio, descriptions = clip
    plain = golden_processor(descriptions=descriptions, audios=[audio])
    with_video = golden_processor(descriptions=descriptions, audios=[audio], masked_videos=[masked_video(golden_processor)])
    T = int(with_video.sizes[0])
    assert with_video.masked_video[0].shape[0] == T  # one frame per latent frame
    noise = torch.randn(1, T, 2 * vision_model.config.audio_codec.codebook_dim, generator=torch.Generator().manual_seed(0))
    message = torch.zeros(2, 16)
    a = vision_model.separate(plain, noise=noise, ode_opt=ONE_STEP, watermark_message=message)
    b = vision_model.separate(with_video, noise=noise, ode_opt=ONE_STEP, watermark_message=message)
    assert a.target[0].shape == b.target[0].shape == (T * vision_model.hop_length,)
    assert (a.target[0] - b.target[0]).abs().max() > 1e-4


def test_video_features_are_the_encoder_output_aligned_to_latent_frames(vision_model, golden_processor, clip):
    audio, descriptions = clip
    batch = golden_processor(descriptions=descriptions, audios=[audio], masked_videos=[masked_video(golden_processor)])
    with torch.inference_mode():
        args = vision_model._get_forward_args(batch)
        expected = vision_model.vision_encoder(batch.masked_video).transpose(1, 2)
    assert torch.equal(args["masked_video_features"], expected)


def test_a_model_loaded_without_vision_refuses_video_clearly(golden_model, golden_processor, clip):
    audio, descriptions = clip
    batch = golden_processor(descriptions=descriptions, audios=[audio], masked_videos=[masked_video(golden_processor)])
    with pytest.raises(InvalidRequestError, match="vision=True"):
        golden_model.separate(batch, ode_opt=ONE_STEP)


# ----------------------------------------------------------------------------------------------------------
# video files: decoding and the official frame selection


def test_a_lossless_video_file_decodes_to_its_frames_times_and_end(tmp_path):
    video, _ = tiny_video(frames=10, height=32, width=48)
    decoded = decode_video(write_video(tmp_path / "clip.mkv", video, 25))
    assert decoded.frames.dtype == torch.uint8 and decoded.frames.shape == (10, 3, 32, 48)
    assert torch.equal(decoded.frames, video)
    assert torch.allclose(decoded.times, torch.arange(10, dtype=torch.float64) / 25)
    assert decoded.end_seconds == pytest.approx(0.4)


def test_a_video_file_decodes_from_its_bytes_as_from_its_path(tmp_path):
    video, _ = tiny_video(frames=4)
    data = encode_video(video, 25, codec="mpeg4")
    from_bytes, from_path = decode_video(data), decode_video(write_video(tmp_path / "clip.mp4", video, 25, "mpeg4"))
    assert torch.equal(from_bytes.frames, from_path.frames) and torch.equal(from_bytes.times, from_path.times)


def test_nearest_frames_takes_the_first_frame_on_ties():
    times = torch.tensor([0.0, 0.08, 0.08, 0.16], dtype=torch.float64)
    targets = torch.tensor([0.0, 0.04, 0.05, 0.08, 0.12, 0.3, -1.0], dtype=torch.float64)
    assert nearest_frames(times, targets).tolist() == [0, 0, 1, 1, 1, 3, 0]


def test_a_file_gets_the_frame_nearest_each_latent_frame_earlier_on_ties(golden_processor, tmp_path):
    # 12.5 fps: frames at 0, 80, 160 ms...; latent frames every 40 ms fall on a frame or halfway between two
    path = write_video(tmp_path / "slow.mkv", numbered_video(6), Fraction(25, 2))
    batch = golden_processor([""], [torch.zeros(1, 1920 * 14)], masked_videos=[path])
    (frames,) = batch.masked_video
    picked = (frames[:, 0, 0, 0] // 10).tolist()
    assert picked == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5]  # the last frame repeats, as the official one


def test_a_file_faster_than_the_latent_rate_skips_frames(golden_processor, tmp_path):
    path = write_video(tmp_path / "fast.mkv", numbered_video(12), 60)  # frames every 16.7 ms
    batch = golden_processor([""], [torch.zeros(1, 1920 * 5)], masked_videos=[path])
    assert (batch.masked_video[0][:, 0, 0, 0] // 10).tolist() == [0, 2, 5, 7, 10]  # nearest to 0, 40, ... 160 ms


def test_mask_videos_decodes_files_and_blacks_out_the_masked_pixels(golden_processor, tmp_path):
    video, masks = tiny_video(frames=5)
    mask_rgb = (masks[:, None] * torch.tensor(255, dtype=torch.uint8)).expand(-1, 3, -1, -1)  # white object on black
    (out,) = golden_processor.mask_videos(
        [write_video(tmp_path / "v.mkv", video, 25)], [write_video(tmp_path / "m.mkv", mask_rgb, 25)]
    )
    assert torch.equal(out, video * ~masks[:, None])


def test_separate_with_a_video_file_equals_separate_with_its_selected_frames(vision_model, golden_processor, clip,
                                                                               tmp_path):
    audio, descriptions = clip
    video, masks = tiny_video(frames=10)
    masked = golden_processor.mask_videos([video], [masks[:, None]])[0]
    path = write_video(tmp_path / "masked.mkv", masked, 10)  # 1 s at 10 fps for 1 s of audio
    from_file = golden_processor(descriptions=descriptions, audios=[audio], masked_videos=[path])
    T = int(from_file.sizes[0])
    idx = nearest_frames(torch.arange(10, dtype=torch.float64) / 10, torch.arange(T, dtype=torch.float64) * 0.04)
    assert torch.equal(from_file.masked_video[0], masked[idx])
    C = vision_model.config.audio_codec.codebook_dim
    noise = torch.randn(1, T, 2 * C, generator=torch.Generator().manual_seed(1))
    a = vision_model.separate(from_file, noise=noise, ode_opt=ONE_STEP, watermark_message=torch.zeros(2, 16))
    from_frames = golden_processor(descriptions=descriptions, audios=[audio], masked_videos=[masked[idx]])
    b = vision_model.separate(from_frames, noise=noise, ode_opt=ONE_STEP, watermark_message=torch.zeros(2, 16))
    assert torch.equal(a.target[0], b.target[0]) and torch.equal(a.residual[0], b.residual[0])


def test_an_undecodable_file_raises_invalid_video_error_naming_it(golden_processor, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all " * 50)
    with pytest.raises(InvalidVideoError, match="broken.mp4"):
        golden_processor([""], [torch.zeros(1, 1920 * 3)], masked_videos=[bad])


def test_a_missing_video_file_raises_invalid_video_error(golden_processor, tmp_path):
    with pytest.raises(InvalidVideoError, match="missing.mp4"):
        golden_processor.mask_videos([tmp_path / "missing.mp4"], [torch.zeros(1, 1, 2, 2)])


def test_a_file_without_a_video_stream_raises_invalid_video_error(tmp_path):
    import soundfile as sf

    path = tmp_path / "sound.wav"
    sf.write(path, torch.zeros(4800).numpy(), 48000)
    with pytest.raises(InvalidVideoError, match="no video stream"):
        decode_video(path)


def test_decoding_stops_with_video_too_large_beyond_max_bytes():
    data = encode_video(tiny_video(frames=10, height=32, width=48)[0], 25)
    assert len(decode_video(data, max_bytes=10 * 32 * 48 * 3).frames) == 10
    with pytest.raises(VideoTooLargeError, match=str(9 * 32 * 48 * 3)):
        decode_video(data, max_bytes=9 * 32 * 48 * 3)
