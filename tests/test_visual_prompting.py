"""Visual prompting: the PE vision encoder is built on request and its masked-video features reach the DiT."""

from __future__ import annotations

import json

import pytest
import torch

from samaudio import SAMAudio
from samaudio.errors import InvalidRequestError

ONE_STEP = {"method": "euler", "options": {"step_size": 1.0}}


@pytest.fixture(scope="module")
def vision_model(golden_dir):
    # the case's own PE sizes (its head counts cannot be read off the weights)
    pe = json.loads((golden_dir / "parity.json").read_text())["pe_tiny_config"]
    return SAMAudio.from_pretrained(golden_dir, vision=True, pe_config=pe)


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
