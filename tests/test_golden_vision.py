"""The PE vision encoder against the official one (golden `vision.safetensors`), its keys, and its edges."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from samaudio.errors import ConfigError, InvalidRequestError
from samaudio.model.config import PerceptionEncoderConfig, SAMAudioConfig
from samaudio.model.vision_encoder import PEConfig, PerceptionEncoder, resize_frames

ATOL = RTOL = 1e-4
PREFIX = "vision_encoder."


@pytest.fixture(scope="module")
def vision_config(golden_dir) -> PerceptionEncoderConfig:
    return SAMAudioConfig.from_json(golden_dir / "config.json").vision_encoder


@pytest.fixture(scope="module")
def checkpoint_state(golden_dir) -> dict[str, torch.Tensor]:
    """The `vision_encoder.*` tensors of the golden checkpoint, prefix stripped."""
    checkpoint = load_file(str(golden_dir / "model.safetensors"))
    return {k[len(PREFIX) :]: v for k, v in checkpoint.items() if k.startswith(PREFIX)}


@pytest.fixture(scope="module")
def case_pe(golden_dir) -> PEConfig | None:
    """The case's own PE sizes (`parity.json` `pe_tiny_config`), heads included, when the case states them."""
    parity = json.loads((golden_dir / "parity.json").read_text())
    return PEConfig.from_dict(parity["pe_tiny_config"]) if "pe_tiny_config" in parity else None


def _build(config: PerceptionEncoderConfig, pe: PEConfig | None, state: dict[str, torch.Tensor]) -> PerceptionEncoder:
    if pe is None:
        pe = PEConfig.from_state_dict(state, name=config.name, prefix="model.")
    encoder = PerceptionEncoder(config, pe).eval()
    encoder.load_state_dict(state, strict=True)
    return encoder


@pytest.fixture(scope="module")
def encoder(vision_config, case_pe, checkpoint_state) -> PerceptionEncoder:
    return _build(vision_config, case_pe, checkpoint_state)


@pytest.fixture(scope="module")
def golden_vision(golden):
    tensors, _ = golden("vision")
    return tensors["video_uint8"], tensors["features"]


def _video(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, 3, height, width), generator=g, dtype=torch.uint8)


# --------------------------------------------------------------------------------------------------- checkpoint


def test_golden_vision_state_dict_keys_shapes_and_order_equal_checkpoint(encoder, golden_keys):
    expected = [(name, shape, dtype) for name, shape, dtype in golden_keys if name.startswith(PREFIX)]
    ours = [(PREFIX + k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in encoder.state_dict().items()]
    assert ours == expected


def test_golden_vision_checkpoint_loads_strictly_into_a_fresh_encoder(vision_config, case_pe, checkpoint_state):
    pe = case_pe or PEConfig.from_state_dict(checkpoint_state, name=vision_config.name, prefix="model.")
    result = PerceptionEncoder(vision_config, pe).load_state_dict(checkpoint_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_golden_vision_sizes_read_from_checkpoint_equal_the_case_config(vision_config, case_pe, checkpoint_state):
    """Every size that shapes a tensor is recovered from the weights; head counts are not in them."""
    if case_pe is None:
        pytest.skip("this golden case does not state its PE sizes")
    inferred = PEConfig.from_state_dict(checkpoint_state, name=vision_config.name, prefix="model.")
    not_in_weights = {"heads", "attn_pooler_heads", "ls_init_value", "drop_path"}
    for part in ("vision", "text"):
        ours, theirs = dataclasses.asdict(getattr(inferred, part)), dataclasses.asdict(getattr(case_pe, part))
        for key in ours.keys() - not_in_weights:
            assert ours[key] == theirs[key], f"{part}.{key}: read {ours[key]}, case config {theirs[key]}"


def test_vision_pe_core_l14_336_has_the_official_keys_and_shapes():
    with torch.device("meta"):  # sizes only: no 2.7 GB of random weights
        encoder = PerceptionEncoder(PerceptionEncoderConfig())
    state = encoder.state_dict()
    visual = [k for k in state if k.startswith("model.visual.")]
    assert (len(state) - len(visual), len(visual)) == (294, 307)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["model.positional_embedding"] == (32, 1024)
    assert shapes["model.token_embedding.weight"] == (49408, 1024)
    assert shapes["model.visual.positional_embedding"] == (577, 1024)
    assert shapes["model.visual.conv1.weight"] == (1024, 3, 14, 14)
    assert shapes["model.visual.transformer.resblocks.23.attn.in_proj_weight"] == (3072, 1024)
    assert shapes["model.visual.attn_pool.probe"] == (1, 1, 1024)
    assert shapes["model.visual.attn_pool.mlp.c_fc.weight"] == (4096, 1024)
    assert shapes["model.visual.proj"] == (1024, 1024)


# --------------------------------------------------------------------------------------------------- features


def test_golden_vision_features_match_official(encoder, golden_vision):
    video, expected = golden_vision
    features = encoder([video])
    assert features.shape == expected.shape and features.dtype == torch.float32
    diff = (features - expected).abs().max().item()
    assert torch.allclose(features, expected, atol=ATOL, rtol=RTOL), f"max|diff| {diff:.3g}"


def test_golden_vision_features_are_unit_vectors(encoder, golden_vision):
    features = encoder([golden_vision[0]])
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(features.shape[:2]), atol=1e-6, rtol=0)


def test_golden_vision_chunked_encoding_equals_one_chunk(vision_config, case_pe, checkpoint_state, golden_vision):
    video = golden_vision[0]  # 5 frames: chunks of 2, 2, 1
    chunked = _build(dataclasses.replace(vision_config, batch_size=2), case_pe, checkpoint_state)
    whole = _build(dataclasses.replace(vision_config, batch_size=0), case_pe, checkpoint_state)
    torch.testing.assert_close(chunked([video]), whole([video]), atol=1e-6, rtol=1e-6)


def test_golden_vision_batch_zero_pads_after_each_videos_last_frame(encoder, golden_vision):
    long, short = golden_vision[0], _video(3, 27, 61)  # other frame counts and sizes in one batch
    features = encoder([long, short])
    assert features.shape == (2, 5, encoder.dim)
    torch.testing.assert_close(features[1, :3], encoder([short])[0], atol=1e-6, rtol=1e-6)
    assert torch.equal(features[1, 3:], torch.zeros(2, encoder.dim))


def test_vision_length_pads_features_to_the_latent_frames(encoder):
    features = encoder([_video(2, 20, 20), _video(4, 20, 20, seed=1)], length=7)
    assert features.shape == (2, 7, encoder.dim)
    assert torch.equal(features[0, 2:], torch.zeros(5, encoder.dim))
    assert torch.equal(features[1, 4:], torch.zeros(3, encoder.dim))


def test_vision_other_image_size_resizes_the_position_table(vision_config, case_pe, checkpoint_state):
    config = dataclasses.replace(vision_config, image_size=3 * vision_config.image_size)
    wider = _build(config, case_pe, checkpoint_state)
    features = wider([_video(2, 40, 56)])
    assert features.shape == (1, 2, wider.dim) and torch.isfinite(features).all()


# --------------------------------------------------------------------------------------------------- transform


def test_vision_uint8_resize_clamps_and_rounds_the_bicubic_result():
    frames = _video(2, 9, 13)
    as_uint8 = resize_frames(frames, 32)
    as_float = resize_frames(frames.float(), 32)
    assert as_uint8.dtype == torch.uint8 and as_float.dtype == torch.float32
    assert as_float.min() < 0 or as_float.max() > 255  # bicubic overshoots on random pixels
    assert torch.equal(as_uint8, as_float.clamp(0, 255).round().to(torch.uint8))


def test_vision_frames_already_at_image_size_are_not_resampled():
    frames = _video(1, 32, 32)
    assert resize_frames(frames, 32) is frames


# --------------------------------------------------------------------------------------------------- errors


def test_vision_unregistered_pe_name_without_sizes_is_config_error():
    with pytest.raises(ConfigError, match="PE-Unknown"):
        PerceptionEncoder(PerceptionEncoderConfig(name="PE-Unknown", dim=32))


def test_vision_dim_other_than_pe_output_is_config_error(vision_config, case_pe, checkpoint_state):
    pe = case_pe or PEConfig.from_state_dict(checkpoint_state, prefix="model.")
    out = pe.vision.output_dim
    with pytest.raises(ConfigError, match=f"set dim to {out}"):
        PerceptionEncoder(dataclasses.replace(vision_config, dim=out + 1), pe)


def test_vision_unknown_interpolation_mode_is_config_error(vision_config, case_pe, checkpoint_state):
    pe = case_pe or PEConfig.from_state_dict(checkpoint_state, prefix="model.")
    PerceptionEncoder(dataclasses.replace(vision_config, interpolation_mode="bicubic"), pe)  # any case
    with pytest.raises(ConfigError, match="LANCZOS"):
        PerceptionEncoder(dataclasses.replace(vision_config, interpolation_mode="LANCZOS"), pe)


def test_vision_video_that_is_not_rgb_frames_is_invalid_request_error(encoder):
    with pytest.raises(InvalidRequestError, match=r"videos\[1\]"):
        encoder([_video(2, 20, 20), torch.zeros(2, 1, 20, 20, dtype=torch.uint8)])


def test_vision_more_frames_than_latent_frames_is_invalid_request_error(encoder):
    with pytest.raises(InvalidRequestError, match="4 frames"):
        encoder([_video(4, 20, 20)], length=3)
