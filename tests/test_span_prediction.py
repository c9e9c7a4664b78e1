"""separate(predict_spans=True) with a randomly initialised tiny PE-A-Frame: how activity becomes anchors."""

from __future__ import annotations

import pytest
import torch

ONE_STEP = {"method": "euler", "options": {"step_size": 1.0}}


def tiny_predictor(codebook_dim: int, bias: float):
    """A random PE-A-Frame at awkward sizes whose logit bias decides that every frame is active (or none)."""
    from samaudio.model.config import PEAudioFrameConfig
    from samaudio.model.span_predictor import PEAudioFrame, PEAudioFrameTransform
    from samaudio.model.text_encoder import _char_tokenizer

    config = PEAudioFrameConfig(
        text_model=dict(
            vocab_size=128,
            hidden_size=24,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            global_attn_every_n_layers=2,
            local_attention=4,
            pad_token_id=0,
        ),
        audio_model=dict(
            dac_vae_encoder=dict(encoder_hidden_size=2, codebook_dim=codebook_dim, codebook_size=8),
            audio_transformer=dict(hidden_size=20, intermediate_size=29, num_hidden_layers=1, num_attention_heads=2),
        ),
        nth_text_layer=1,
        output_dim=6,
    )
    torch.manual_seed(0)
    predictor = PEAudioFrame(config).eval()
    with torch.no_grad():
        predictor.logit_scale.fill_(0.0)  # scores = bias: all active or none, whatever the random weights
        predictor.logit_bias.fill_(bias)
    return predictor, PEAudioFrameTransform(_char_tokenizer())


@pytest.fixture(scope="module")
def tiny():
    from samaudio import SAMAudio, SAMAudioProcessor
    from samaudio.model.config import get_preset

    config = get_preset("demo-tiny").build_config()
    torch.manual_seed(1)
    model = SAMAudio.from_config(config, random_text_encoder=True)
    processor = SAMAudioProcessor(config.hop_length, config.sample_rate)
    audios = [torch.randn(1, 48000 // 2 + 311), torch.randn(1, 48000 // 5)]
    batch = processor(descriptions=["a dog barking", "rain"], audios=audios)
    return model, batch


def with_predictor(model, bias: float):
    """A model of the same config (random weights, the same T5) with a tiny predictor attached."""
    from samaudio import SAMAudio

    predictor, transform = tiny_predictor(2 * model.config.audio_codec.codebook_dim, bias)
    return SAMAudio(
        model.config,
        text_encoder=model.text_encoder,
        span_predictor=predictor,
        span_predictor_transform=transform,
    ).eval()


def test_every_frame_active_gives_one_span_per_item_through_its_padded_frames(tiny):
    model, batch = tiny
    spanned = with_predictor(model, bias=10.0)
    found = spanned.predict_spans(batch)
    T = batch.audio_pad_mask.shape[1]
    end = float(torch.tensor(T) * 1920 / 48000)
    assert found.spans == [[[0.0, end]], [[0.0, end]]]  # padded frames are scored: item 1 runs to the end too
    assert found.anchor_ids.tolist() == [[0, 3, 1], [0, 3, 1]]
    assert (found.anchor_alignment == 2).all()  # the span overwrites the <pad> slot of padded frames


def anchors_seen(model, batch, **kwargs):
    """separate() with one solver step; the anchor ids every vector-field evaluation saw, and the result."""
    seen = []
    forward = model.forward

    def recording_forward(**kw):
        seen.append(kw["anchor_ids"].tolist())
        return forward(**kw)

    model.forward = recording_forward  # an instance attribute shadowing the method, removed below
    try:
        result = model.separate(batch, ode_opt=ONE_STEP, watermark_message=torch.zeros(4, 16), **kwargs)
    finally:
        del model.forward
    return seen, result


def test_no_active_frame_leaves_the_null_anchors(tiny):
    model, batch = tiny
    quiet = with_predictor(model, bias=-10.0)
    seen, result = anchors_seen(quiet, batch, predict_spans=True)
    assert result.spans == [[], []]
    assert seen and all(ids == [[0, 3], [0, 3]] for ids in seen)


@pytest.mark.parametrize("mode, ids", [("fixed", [[0, 3, 1], [0, 3, 1]]), ("released", [[0, 3], [0, 3]])])
def test_predicted_anchors_reach_the_dit_unless_released_behaviour_is_asked_for(tiny, mode, ids):
    model, batch = tiny
    loud = with_predictor(model, bias=10.0)
    seen, result = anchors_seen(loud, batch, predict_spans=True, span_anchors=mode)
    assert len(result.spans[0]) == 1
    assert seen and all(s == ids for s in seen)


def test_from_config_takes_a_predictor_only_with_its_transform(tiny):
    from samaudio import SAMAudio
    from samaudio.errors import InvalidRequestError

    model, _ = tiny
    predictor, _ = tiny_predictor(2 * model.config.audio_codec.codebook_dim, 0.0)
    with pytest.raises(InvalidRequestError, match="together"):
        SAMAudio.from_config(model.config, random_text_encoder=True, span_predictor=predictor)
