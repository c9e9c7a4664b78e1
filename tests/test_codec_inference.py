"""The codec's inference shortcuts (#20) change no output: weight norm folded once, the watermark LSTM on one
thread; training still reaches the weight-norm parameters. A tiny codec with awkward sizes, random weights."""

from __future__ import annotations

import pytest
import torch

from samaudio.model.codec import DACVAE, WNConv1d
from samaudio.model.config import DACVAEConfig

# awkward sizes: odd latent widths, a hop of 5 * 4 * 2 * 8 = 320 samples, the smallest decoder the watermark allows
CONFIG = DACVAEConfig(
    encoder_dim=6, encoder_rates=[5, 4, 2, 8], latent_dim=22, decoder_dim=96, decoder_rates=[8, 4, 5, 2], codebook_dim=7
)
FRAMES = 9


def _codec(seed: int) -> DACVAE:
    torch.manual_seed(seed)
    codec = DACVAE(CONFIG).eval()
    for name, p in codec.named_parameters():  # random g too, so folding is not the identity
        if name.endswith("weight_g"):
            torch.nn.init.uniform_(p, 0.5, 1.5)
    return codec


@pytest.fixture(scope="module")
def codec() -> DACVAE:
    return _codec(0)


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    wav = 0.3 * torch.randn(3, 1, FRAMES * CONFIG.hop_length - 101, generator=g)  # reflect-padded to the hop
    latent = torch.randn(3, CONFIG.codebook_dim, FRAMES, generator=g)
    message = torch.randint(0, 2, (3, 16), generator=g).float()
    return wav, latent, message


def _run(codec: DACVAE, wav, latent, message) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        return codec(wav), codec.decode(latent, message)


def test_folded_weight_norm_codec_equals_the_per_call_one(codec, inputs):
    codec.set_inference_shortcuts(fold_weight_norm=False)
    z0, y0 = _run(codec, *inputs)
    codec.set_inference_shortcuts()
    z1, y1 = _run(codec, *inputs)
    z2, y2 = _run(codec, *inputs)  # the second call reuses the folded weights
    v_bytes = sum(p.numel() * p.element_size() for n, p in codec.named_parameters() if n.endswith("weight_v"))
    assert codec.folded_weight_bytes == v_bytes  # every weight-normed layer folded once, held once
    for a, b in ((z0, z1), (y0, y1), (z0, z2), (y0, y2)):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


def test_folded_weights_follow_loaded_weights(codec, inputs):
    other = _codec(1)
    model = _codec(0)
    _run(model, *inputs)  # fold the first weights
    model.load_state_dict(other.state_dict())
    for (z, y), (z_ref, y_ref) in zip([_run(model, *inputs)], [_run(other, *inputs)]):
        torch.testing.assert_close(z, z_ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=0)


def test_folded_weights_follow_an_in_place_change_of_g(inputs):
    model = _codec(0)
    before = _run(model, *inputs)[1]
    with torch.no_grad():
        model.decoder.model[0].weight_g.mul_(2.0)  # the decoder's first conv, doubled
    after = _run(model, *inputs)[1]
    assert not torch.allclose(before, after, atol=1e-4)
    model.set_inference_shortcuts(fold_weight_norm=False)
    torch.testing.assert_close(after, _run(model, *inputs)[1], atol=1e-6, rtol=0)


def test_state_dict_keys_are_unchanged_by_folding(codec, inputs):
    keys = list(DACVAE(CONFIG).state_dict())
    _run(codec, *inputs)
    assert list(codec.state_dict()) == keys
    assert not any("folded" in k for k in keys)


def test_training_gets_gradients_through_weight_norm(inputs):
    model = _codec(0)
    wav, latent, message = inputs
    _run(model, wav, latent, message)  # folded for inference first: training must not use those weights
    model.train()
    loss = model.decode(latent, message).square().mean() + model.encoder(wav[..., : FRAMES * CONFIG.hop_length]).mean()
    loss.backward()
    # every weight-normed conv but the bottleneck's in_proj, which only encoding to latents runs
    wn = [m for m in model.modules() if isinstance(m, WNConv1d) and m is not model.quantizer.in_proj]
    assert all(m._folded is None for m in wn)  # no folded copy is held while training
    for m in wn:
        assert m.weight_g.grad is not None and m.weight_g.grad.abs().sum() > 0
        assert m.weight_v.grad is not None and m.weight_v.grad.abs().sum() > 0


def test_eval_with_gradients_on_recomputes_the_weight(inputs):
    model = _codec(0)
    _, latent, message = inputs
    model.decode(latent, message).sum().backward()  # eval mode, grad enabled: a fresh g * v / ||v||
    assert model.decoder.model[0].weight_v.grad is not None


def test_watermark_lstm_on_one_thread_equals_all_threads(codec, inputs):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        codec.set_inference_shortcuts(single_thread_lstm=False)
        _, y0 = _run(codec, *inputs)
        codec.set_inference_shortcuts()
        _, y1 = _run(codec, *inputs)
        assert torch.get_num_threads() == 2  # restored after the LSTM
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(y1, y0, atol=1e-6, rtol=0)
