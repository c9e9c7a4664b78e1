"""The T5 text encoder against the official one (golden `text.safetensors`), and its random demo variant."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from samaudio.errors import ConfigError, InvalidRequestError, ModelUnavailableError
from samaudio.model.config import SAMAudioConfig, T5EncoderConfig
from samaudio.model.text_encoder import EOS_ID, PAD_ID, UNK_ID, T5TextEncoder

ATOL = RTOL = 1e-4
PREFIX = "text_encoder."


@pytest.fixture(scope="module")
def golden_config(golden_dir) -> SAMAudioConfig:
    return SAMAudioConfig.from_dict(json.loads((golden_dir / "config.json").read_text()))


def _checkpoint_text_state(golden_dir) -> dict[str, torch.Tensor]:
    checkpoint = load_file(str(golden_dir / "model.safetensors"))
    return {k[len(PREFIX) :]: v for k, v in checkpoint.items() if k.startswith(PREFIX)}


@pytest.fixture(scope="module")
def encoder(golden_config, golden_dir) -> T5TextEncoder:
    """T5 and tokenizer from the folder config.json names, weights from the checkpoint's text_encoder.* keys.

    The golden checkpoint's T5 norms were randomised after the T5 folder was written (parity.json
    `perturbed_constant_params`), so the official features come from the checkpoint's weights.
    """
    enc = T5TextEncoder.from_config(golden_config.text_encoder, root=golden_dir)
    enc.load_state_dict(_checkpoint_text_state(golden_dir), strict=True)
    return enc


@pytest.fixture(scope="module")
def golden_text(golden):
    tensors, meta = golden("text")
    return tensors, meta["descriptions"]


def test_golden_text_tokens_equal_official(encoder, golden_text):
    tensors, descriptions = golden_text
    input_ids, attention_mask = encoder.tokenize(descriptions)
    assert input_ids.dtype == attention_mask.dtype == torch.int64
    assert torch.equal(input_ids, tensors["input_ids"])
    assert torch.equal(attention_mask, tensors["attention_mask"])


def test_golden_text_features_match_official(encoder, golden_text):
    tensors, descriptions = golden_text
    with torch.inference_mode():
        features, _ = encoder(descriptions)
    assert features.shape == tensors["features"].shape
    assert features.dtype == torch.float32
    torch.testing.assert_close(features, tensors["features"], atol=ATOL, rtol=RTOL)


def test_golden_text_mask_is_bool_and_equals_official(encoder, golden_text):
    tensors, descriptions = golden_text
    with torch.inference_mode():
        _, mask = encoder(descriptions)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, tensors["mask"])


def test_golden_text_state_dict_keys_and_shapes_equal_keys_txt(encoder, golden_keys):
    expected = [(name[len(PREFIX) :], shape, dtype) for name, shape, dtype in golden_keys if name.startswith(PREFIX)]
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in encoder.state_dict().items()]
    assert got == expected


def test_golden_text_embeddings_are_tied(encoder):
    assert encoder.model.encoder.embed_tokens.weight is encoder.model.shared.weight


def test_golden_text_loaded_model_is_in_eval_mode(encoder):
    assert not encoder.training
    assert not any(m.training for m in encoder.model.modules())


def test_golden_text_from_config_loads_the_named_folder_beside_config_json(golden_config, golden_dir):
    enc = T5TextEncoder.from_config(golden_config.text_encoder, root=golden_dir)
    stored = load_file(str(golden_dir / golden_config.text_encoder.name / "model.safetensors"))
    state = enc.model.state_dict()
    assert set(stored) <= set(state)
    assert all(torch.equal(state[k], v) for k, v in stored.items())
    cfg = golden_config.text_encoder
    assert (enc.max_length, enc.pad_mode) == (cfg.max_length, cfg.pad_mode)


def test_golden_text_state_dict_with_one_tied_name_loads_and_stays_tied(golden_config, golden_dir, golden_text):
    tensors, descriptions = golden_text
    state = _checkpoint_text_state(golden_dir)
    del state["model.encoder.embed_tokens.weight"]  # as a t5-base checkpoint stores it
    enc = T5TextEncoder.from_config(golden_config.text_encoder, root=golden_dir)
    enc.load_state_dict(state, strict=True)
    assert enc.model.encoder.embed_tokens.weight is enc.model.shared.weight
    with torch.inference_mode():
        features, _ = enc(descriptions)
    torch.testing.assert_close(features, tensors["features"], atol=ATOL, rtol=RTOL)


def test_golden_text_one_description_alone_matches_its_padded_batch_row(encoder, golden_text):
    _, descriptions = golden_text
    with torch.inference_mode():
        batch, mask = encoder(descriptions)
        alone, _ = encoder(descriptions[:1])
    n = alone.shape[1]
    assert mask[0].sum() == n
    torch.testing.assert_close(alone[0], batch[0, :n], atol=1e-5, rtol=1e-5)


def test_text_encoder_unknown_name_offline_raises_model_unavailable(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no-such-t5-xyz"):
        T5TextEncoder.from_config(T5EncoderConfig(name="no-such-org/no-such-t5-xyz", dim=32), root=tmp_path)


def test_text_encoder_dim_other_than_d_model_raises_config_error(golden_config, golden_dir):
    cfg = T5EncoderConfig(**{**vars(golden_config.text_encoder), "dim": golden_config.text_encoder.dim + 3})
    with pytest.raises(ConfigError, match="d_model"):
        T5TextEncoder.from_config(cfg, root=golden_dir)


def test_text_encoder_empty_list_raises_invalid_request(encoder):
    with pytest.raises(InvalidRequestError, match="empty"):
        encoder([])


def test_text_encoder_non_string_entry_raises_invalid_request(encoder):
    with pytest.raises(InvalidRequestError, match=r"texts\[1\]"):
        encoder(["a dog barking", 3])


def test_text_encoder_bare_string_raises_invalid_request(encoder):
    with pytest.raises(InvalidRequestError, match="list of strings"):
        encoder("a dog barking")


# The random encoder: a T5 of any width with a tokenizer made in code, for demos and tests.


@pytest.fixture(scope="module")
def tiny() -> T5TextEncoder:
    return T5TextEncoder.random(24, num_layers=1, num_heads=3, d_ff=37, seed=0)


def test_random_text_encoder_width_is_dim(tiny):
    assert tiny.model.config.d_model == tiny.dim == 24
    with torch.inference_mode():
        features, mask = tiny(["dog barking", "x"])
    assert features.shape == (2, mask.shape[1], 24)


def test_random_text_encoder_follows_t5_token_conventions(tiny):
    input_ids, attention_mask = tiny.tokenize(["ab", "a b c", "\u00e9"])
    assert (input_ids[:, 0] != EOS_ID).all()  # no BOS
    for row, m in zip(input_ids, attention_mask):
        n = int(m.sum())
        assert row[n - 1] == EOS_ID  # </s> appended
        assert (row[n:] == PAD_ID).all()  # right-padded with 0
    assert UNK_ID in input_ids[2].tolist()  # an unknown character is <unk>
    assert tiny.tokenize([""])[0].tolist() == [[EOS_ID]]  # "" is </s> alone


def test_random_text_encoder_truncation_keeps_eos_within_max_length():
    enc = T5TextEncoder.random(8, num_layers=1, num_heads=2, max_length=5, seed=0)
    input_ids, _ = enc.tokenize(["a long description"])
    assert input_ids.shape == (1, 5)
    assert input_ids[0, -1] == EOS_ID


def test_random_text_encoder_seed_makes_weights_reproducible_without_touching_global_rng():
    state = torch.random.get_rng_state()
    a = T5TextEncoder.random(16, num_layers=1, num_heads=2, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = T5TextEncoder.random(16, num_layers=1, num_heads=2, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_random_text_encoder_is_in_eval_mode(tiny):
    assert not any(m.training for m in tiny.model.modules())


def test_random_text_encoder_from_a_config_takes_its_width_and_tokenizer_settings():
    cfg = T5EncoderConfig(name="unused", max_length=6, pad_mode="longest", dim=20)
    enc = T5TextEncoder.random(cfg, seed=0)
    assert enc.dim == 20
    assert (enc.max_length, enc.pad_mode) == (6, "longest")


def test_random_text_encoder_saved_and_loaded_by_name_gives_the_same_tokens_and_features(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "t5")
    loaded = T5TextEncoder.from_config(T5EncoderConfig(name="t5", dim=tiny.dim), root=tmp_path)
    texts = ["dog barking", "snare drum, hits!"]
    assert all(torch.equal(a, b) for a, b in zip(loaded.tokenize(texts), tiny.tokenize(texts)))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(texts)[0], tiny(texts)[0], atol=0, rtol=0)
