"""Bad processor input raises a named error whose message gives the numbers and the fix."""

from __future__ import annotations

import json

import pytest
import torch

from samaudio.errors import (
    CheckpointError,
    ConfigError,
    InvalidAnchorError,
    InvalidAudioError,
    InvalidRequestError,
    ModelUnavailableError,
    SAMAudioError,
)
from samaudio.processor import SAMAudioProcessor, min_audio_samples

HOP, SR = 1920, 48000


@pytest.fixture
def processor() -> SAMAudioProcessor:
    return SAMAudioProcessor(HOP, SR)


def _audio(samples: int = 4000, channels: int = 1) -> torch.Tensor:
    return torch.zeros(channels, samples)


def test_empty_audio_raises_invalid_audio(processor):
    with pytest.raises(InvalidAudioError, match="empty"):
        processor(["a"], [torch.zeros(1, 0)])


def test_audio_without_channels_raises_invalid_audio(processor):
    with pytest.raises(InvalidAudioError, match="empty"):
        processor(["a"], [torch.zeros(0, 4000)])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_audio_raises_invalid_audio(processor, bad):
    wav = _audio()
    wav[0, 100] = bad
    with pytest.raises(InvalidAudioError, match="non-finite"):
        processor(["a"], [wav])


@pytest.mark.parametrize("shape", [(4000,), (1, 1, 4000)])
def test_audio_of_wrong_rank_raises_invalid_audio_naming_the_shape(processor, shape):
    with pytest.raises(InvalidAudioError, match=r"2-D \(channels, samples\)") as e:
        processor(["a"], [torch.zeros(shape)])
    assert str(tuple(shape)) in str(e.value)


def test_integer_audio_raises_invalid_audio(processor):
    with pytest.raises(InvalidAudioError, match="floating point"):
        processor(["a"], [torch.zeros(1, 4000, dtype=torch.int16)])


def test_min_audio_samples_is_just_over_half_a_hop():
    assert min_audio_samples(1920) == 961
    assert min_audio_samples(7) == 4  # odd hop: pad 7 - 4 = 3 < 4, but 7 - 3 = 4 is not < 3


def test_audio_of_half_a_hop_raises_invalid_audio_with_the_limit(processor):
    with pytest.raises(InvalidAudioError, match="at least 961") as e:
        processor(["a"], [_audio(HOP // 2)])
    assert "960 samples" in str(e.value)


def test_audio_given_as_samples_by_channels_raises_with_a_transpose_hint(processor):
    with pytest.raises(InvalidAudioError, match="transpose"):
        processor(["a"], [_audio(4000).T.repeat(1, 2)])


def test_audio_just_over_half_a_hop_is_accepted(processor):
    assert processor(["a"], [_audio(HOP // 2 + 1)]).wav_sizes.tolist() == [HOP // 2 + 1]


def test_short_item_in_a_batch_raises_naming_the_item(processor):
    with pytest.raises(InvalidAudioError, match=r"audios\[1\]"):
        processor(["a", "b"], [_audio(), _audio(100)])


def test_anchor_with_start_not_before_end_raises_invalid_anchor(processor):
    with pytest.raises(InvalidAnchorError, match="1.0 s.*0.5 s"):
        processor(["a"], [_audio()], anchors=[[("+", 1.0, 0.5)]])


def test_anchor_with_equal_start_and_end_raises_invalid_anchor(processor):
    with pytest.raises(InvalidAnchorError, match="start < end"):
        processor(["a"], [_audio()], anchors=[[("+", 0.5, 0.5)]])


def test_anchor_with_negative_time_raises_invalid_anchor(processor):
    with pytest.raises(InvalidAnchorError, match="negative"):
        processor(["a"], [_audio()], anchors=[[("-", -0.5, 0.5)]])


def test_anchor_with_non_finite_time_raises_invalid_anchor(processor):
    with pytest.raises(InvalidAnchorError, match="non-finite"):
        processor(["a"], [_audio()], anchors=[[("+", 0.0, float("inf"))]])


@pytest.mark.parametrize("sign", ["*", "<null>", "<pad>", "plus", 1])
def test_anchor_with_unknown_sign_raises_invalid_anchor(processor, sign):
    with pytest.raises(InvalidAnchorError, match="'\\+'.*'-'"):
        processor(["a"], [_audio()], anchors=[[(sign, 0.0, 0.1)]])


def test_anchor_that_is_not_a_triple_raises_invalid_anchor(processor):
    with pytest.raises(InvalidAnchorError, match="triple"):
        processor(["a"], [_audio()], anchors=[[("+", 0.1)]])


def test_more_descriptions_than_audios_raises_invalid_request(processor):
    with pytest.raises(InvalidRequestError, match="2 descriptions but 1 audios"):
        processor(["a", "b"], [_audio()])


def test_anchor_lists_count_mismatch_raises_invalid_request(processor):
    with pytest.raises(InvalidRequestError, match="1 anchor lists for 2 audios"):
        processor(["a", "b"], [_audio(), _audio()], anchors=[[("+", 0.0, 0.1)]])


def test_masked_videos_count_mismatch_raises_invalid_request(processor):
    with pytest.raises(InvalidRequestError, match="2 masked videos for 1 audios"):
        processor(["a"], [_audio()], masked_videos=[torch.zeros(2, 3, 4, 4)] * 2)


def test_no_items_raises_invalid_request(processor):
    with pytest.raises(InvalidRequestError, match="at least one"):
        processor([], [])


def test_non_string_description_raises_invalid_request(processor):
    with pytest.raises(InvalidRequestError, match=r"descriptions\[0\]"):
        processor([None], [_audio()])


def test_unreadable_file_raises_invalid_audio_naming_it(processor, tmp_path):
    path = tmp_path / "not_audio.wav"
    path.write_bytes(b"this is not a wav file")
    with pytest.raises(InvalidAudioError, match="not_audio.wav"):
        processor(["a"], [str(path)])


def test_missing_file_raises_invalid_audio(processor, tmp_path):
    with pytest.raises(InvalidAudioError, match="missing.wav"):
        processor(["a"], [str(tmp_path / "missing.wav")])


def test_video_of_wrong_shape_raises_invalid_request(processor):
    with pytest.raises(InvalidRequestError, match=r"\(N, 3, H, W\)"):
        processor(["a"], [_audio()], masked_videos=[torch.zeros(2, 4, 4)])


def test_mask_that_does_not_broadcast_raises_invalid_request(processor):
    with pytest.raises(InvalidRequestError, match="broadcast"):
        processor.mask_videos([torch.zeros(2, 3, 4, 4)], [torch.zeros(3, 1, 4, 4)])


def test_from_pretrained_of_a_missing_repo_offline_raises_model_unavailable():
    with pytest.raises(ModelUnavailableError, match="no-such-org/no-such-model"):
        SAMAudioProcessor.from_pretrained("no-such-org/no-such-model")


def test_from_pretrained_of_a_folder_without_config_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        SAMAudioProcessor.from_pretrained(tmp_path)


def test_from_pretrained_with_an_unknown_config_key_raises_config_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"no_such_field": 1}))
    with pytest.raises(ConfigError, match="no_such_field"):
        SAMAudioProcessor.from_pretrained(tmp_path)


def test_every_processor_error_is_a_samaudio_error():
    named = (CheckpointError, ConfigError, InvalidAnchorError, InvalidAudioError, InvalidRequestError)
    named += (ModelUnavailableError,)
    assert all(issubclass(cls, SAMAudioError) for cls in named)
