"""The DACVAE codec against the official one: same checkpoint layout, same latents, same watermarked audio.

Tolerances follow the golden README: latents atol = rtol = 1e-4, waveforms atol 1e-5 (an fp32 port on another
torch version; the official float64 check sits near 1e-7). Every size comes from the case's config and tensors.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from samaudio.errors import InvalidAudioError, InvalidRequestError
from samaudio.model.codec import DACVAE
from samaudio.model.config import SAMAudioConfig

PREFIX = "audio_codec."
LATENT_TOL = 1e-4
WAV_ATOL = 1e-5


def _config(golden_dir):
    return SAMAudioConfig.from_json(golden_dir / "config.json").audio_codec


@pytest.fixture(scope="module")
def codec(golden_dir) -> DACVAE:
    weights = load_file(str(golden_dir / "model.safetensors"))
    model = DACVAE(_config(golden_dir)).eval()
    model.load_state_dict({k[len(PREFIX) :]: v for k, v in weights.items() if k.startswith(PREFIX)}, strict=True)
    return model


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------------------------------------
# Checkpoint layout


def test_golden_codec_state_dict_has_the_official_keys_shapes_dtypes_and_order(golden_dir, golden_keys):
    expected = [(name[len(PREFIX) :], shape, dtype) for name, shape, dtype in golden_keys if name.startswith(PREFIX)]
    built = [
        (name, list(t.shape), str(t.dtype).removeprefix("torch."))
        for name, t in DACVAE(_config(golden_dir)).state_dict().items()
    ]
    assert built == expected


# ----------------------------------------------------------------------------------------------------------
# Parity with the official outputs


def test_golden_codec_encodes_wav_in_to_the_official_latent(codec, golden):
    tensors, _ = golden("codec")
    latent = codec(tensors["wav_in"])  # reflect-padded: the input is not a multiple of the hop
    assert latent.shape == tensors["latent"].shape
    torch.testing.assert_close(latent, tensors["latent"], atol=LATENT_TOL, rtol=LATENT_TOL)


def test_golden_codec_encodes_a_zero_padded_batch_to_the_official_audio_features(codec, golden):
    # separate() encodes the processor's zero-padded batch and feeds the latent twice: (B, T, 2C).
    tensors, _ = golden("e2e_batch")
    audios = [tensors[f"audio_in_{i}"] for i in range(tensors["noise"].shape[0])]  # (1, L_i) each
    length = max(a.shape[-1] for a in audios)
    wav = torch.stack([torch.nn.functional.pad(a, (0, length - a.shape[-1])) for a in audios])  # (B, 1, L)
    features = codec(wav).transpose(1, 2)  # (B, T, C)
    expected = tensors["fwd_audio_features"]  # (B, T, 2C)
    C = codec.codebook_dim
    torch.testing.assert_close(features, expected[..., :C], atol=LATENT_TOL, rtol=LATENT_TOL)
    torch.testing.assert_close(features, expected[..., C:], atol=LATENT_TOL, rtol=LATENT_TOL)


def test_golden_codec_decodes_latent_with_the_stored_message_to_wav_out(codec, golden):
    tensors, _ = golden("codec")
    with torch.no_grad():
        wav = codec.decode(tensors["latent"], message=tensors["wm_message"])
    assert wav.shape == tensors["wav_out"].shape
    torch.testing.assert_close(wav, tensors["wav_out"], atol=WAV_ATOL, rtol=0)


def test_golden_codec_decodes_the_e2e_batch_rows_to_target_and_residual(codec, golden):
    tensors, _ = golden("e2e_batch")
    decode_in = tensors["decode_in"]  # (2B, C, T): row 2i target, 2i + 1 residual of item i
    with torch.no_grad():
        wav = codec.decode(decode_in, message=tensors["wm_message"])  # (2B, 1, T * hop)
    assert wav.shape == (decode_in.shape[0], 1, decode_in.shape[-1] * codec.hop_length)
    for i in range(decode_in.shape[0] // 2):
        for row, stem in ((2 * i, "target"), (2 * i + 1, "residual")):
            expected = tensors[f"{stem}_{i}"]
            got = wav[row, 0, : expected.shape[0]]
            torch.testing.assert_close(got, expected, atol=WAV_ATOL, rtol=0, msg=lambda m: f"{stem}_{i}: {m}")


# ----------------------------------------------------------------------------------------------------------
# The watermark message


def test_golden_codec_decode_without_message_draws_bits_from_the_cpu_generator(codec, golden):
    latent = golden("codec")[0]["latent"][..., :4]  # a few frames are enough and keep the test fast
    with torch.no_grad():
        torch.manual_seed(1234)
        drawn = codec.decode(latent)
        torch.manual_seed(1234)
        message = torch.randint(0, 2, (latent.shape[0], 16), dtype=torch.float32)
        replayed = codec.decode(latent, message=message)
    assert torch.equal(drawn, replayed)


def test_golden_codec_output_depends_on_the_message(codec, golden):
    latent = golden("codec")[0]["latent"][..., :4]  # a few frames are enough and keep the test fast
    with torch.no_grad():
        torch.manual_seed(0)
        message = torch.randint(0, 2, (latent.shape[0], 16), dtype=torch.float32)
        wav = codec.decode(latent, message=message)
        flipped = codec.decode(latent, message=1 - message)
    # Flipping the public wav_out's message changes it by ~1.7e-3; require far more than the parity tolerance.
    assert _max_diff(wav, flipped) > 10 * WAV_ATOL


# ----------------------------------------------------------------------------------------------------------
# Lengths and index conversions


@pytest.mark.parametrize("extra", [0, 1, 1000])
def test_golden_codec_encodes_ceil_of_samples_over_hop_frames(codec, extra):
    length = 2 * codec.hop_length + extra
    latent = codec(torch.randn(2, 1, length) * 0.1)
    assert latent.shape == (2, codec.codebook_dim, -(-length // codec.hop_length))


def test_golden_codec_accepts_the_shortest_reflectable_input(codec):
    length = codec.hop_length // 2 + 1  # reflect padding needs fewer pad samples than input samples
    assert codec(torch.randn(1, 1, length) * 0.1).shape == (1, codec.codebook_dim, 1)


def test_golden_codec_decodes_hop_samples_per_frame(codec):
    frames = 3
    with torch.no_grad():
        wav = codec.decode(torch.randn(2, codec.codebook_dim, frames) * 0.1)
    assert wav.shape == (2, 1, frames * codec.hop_length)


def test_golden_codec_converts_frame_and_sample_indices(codec):
    hop, sr = codec.hop_length, codec.sample_rate
    assert codec.feature_idx_to_wav_idx(3) == 3 * hop
    assert codec.feature_idx_to_wav_idx(3, sample_rate=sr // 2) == 3 * hop // 2
    assert codec.wav_idx_to_feature_idx(hop) == 1
    assert codec.wav_idx_to_feature_idx(hop + 1) == 2
    assert codec.wav_idx_to_feature_idx(hop // 2, sample_rate=sr // 2) == 1
    assert codec.wav_idx_to_feature_idx(hop // 2 + 1, sample_rate=sr // 2) == 2


def test_golden_codec_converts_index_tensors_to_int32(codec):
    frames = torch.tensor([76.0, 56.0])  # batch.sizes is a float tensor
    samples = codec.feature_idx_to_wav_idx(frames)
    assert samples.dtype == torch.int32
    assert samples.tolist() == [76 * codec.hop_length, 56 * codec.hop_length]
    back = codec.wav_idx_to_feature_idx(torch.tensor([1, codec.hop_length, codec.hop_length + 1]))
    assert back.dtype == torch.int32 and back.tolist() == [1, 1, 2]


# ----------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("shape", [(100_000,), (1, 100_000), (1, 2, 100_000), (1, 1, 1, 100_000)])
def test_golden_codec_rejects_audio_not_shaped_batch_1_samples(codec, shape):
    with pytest.raises(InvalidAudioError, match=r"\(batch, 1, samples\)"):
        codec(torch.zeros(shape))


@pytest.mark.parametrize("shape", [(0, 1, 4000), (1, 1, 0)])
def test_golden_codec_rejects_empty_audio(codec, shape):
    with pytest.raises(InvalidAudioError, match="empty"):
        codec(torch.zeros(shape))


def test_golden_codec_rejects_audio_too_short_to_reflect_pad(codec):
    length = codec.hop_length // 2
    with pytest.raises(InvalidAudioError, match=f"{length} samples is too short"):
        codec(torch.zeros(1, 1, length))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_golden_codec_rejects_non_finite_audio(codec, bad):
    wav = torch.zeros(1, 1, 4000)
    wav[0, 0, 123] = bad
    with pytest.raises(InvalidAudioError, match="NaN or infinite"):
        codec(wav)


def test_golden_codec_rejects_integer_audio(codec):
    with pytest.raises(InvalidAudioError, match="float"):
        codec(torch.zeros(1, 1, 4000, dtype=torch.int16))


def test_golden_codec_rejects_latents_with_the_wrong_channel_count(codec):
    with pytest.raises(InvalidRequestError, match=f"\\(batch, {codec.codebook_dim}, frames\\)"):
        codec.decode(torch.zeros(1, codec.codebook_dim + 1, 2))


@pytest.mark.parametrize("shape", [(1, 16), (2, 15), (2,), (2, 16, 1)])
def test_golden_codec_rejects_a_message_not_shaped_rows_by_16(codec, shape):
    with pytest.raises(InvalidRequestError, match=r"must be shaped \(2, 16\)"):
        codec.decode(torch.zeros(2, codec.codebook_dim, 2), message=torch.zeros(shape))


def test_golden_codec_rejects_a_message_that_is_not_bits(codec):
    message = torch.zeros(1, 16)
    message[0, 3] = 0.5
    with pytest.raises(InvalidRequestError, match="only 0 and 1"):
        codec.decode(torch.zeros(1, codec.codebook_dim, 2), message=message)
