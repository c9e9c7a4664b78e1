"""Training: the synthetic data, both objectives, and a resumable loop, at tiny sizes (demo-tiny)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("auraloss")

from samaudio.model.config import get_preset  # noqa: E402
from samaudio.train import data  # noqa: E402
from samaudio.train.codec_objective import CodecLoss, autoencode, normalize_latents  # noqa: E402
from samaudio.train.flow_objective import FlowBatch, flow_matching_loss, random_anchors  # noqa: E402
from samaudio.train.loop import CHECKPOINT, Trainer, TrainConfig, build_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_config():
    return get_preset("demo-tiny").build_config()


def tiny_train(**overrides) -> TrainConfig:
    fields = dict(
        codec_steps=4, codec_batch=2, codec_seconds=0.08, flow_steps=3, flow_batch=3, flow_seconds=0.2,
        pool_size=4, pool_refresh=1, warmup_steps=1, log_every=1, checkpoint_every_s=1e9, normalize_examples=2,
        normalize_seconds=0.2,
    )
    return TrainConfig(**{**fields, **overrides})


def test_held_out_set_is_fixed_and_mixes_its_parts():
    a, b = data.held_out(3, seconds=0.5), data.held_out(5, seconds=0.5)
    for x, y in zip(a, b):
        assert np.array_equal(x.mixture, y.mixture) and x.description == y.description
        assert np.allclose(x.target + x.residual, x.mixture)
        assert np.abs(x.mixture).max() <= 0.9 + 1e-6
        assert x.present or not x.target.any()
    training = data.make_example(np.random.default_rng([7, 0]), 0.5)
    assert not np.array_equal(training.mixture, a[0].mixture)


def test_long_example_leaves_the_prompted_class_out_of_some_segments():
    example, present = data.long_example(12.0, "a kick drum")
    seg = len(example.mixture) // len(present)
    assert len(present) == 4 and 0 < present.sum() < 4
    for s, sounding in enumerate(present):
        assert bool(np.abs(example.target[s * seg : (s + 1) * seg]).max() > 0) == sounding


def test_random_anchors_mark_spans_where_the_target_sounds_or_not():
    active = torch.zeros(64, 20, dtype=torch.bool)
    active[:, 5:12] = True
    ids, alignment = random_anchors(active, torch.Generator().manual_seed(0))
    assert ids.shape == (64, 3) and (ids[:, :2] == torch.tensor([0, 3])).all()
    anchored = ids[:, 2] != 3
    assert 0 < anchored.sum() < 64
    for b in range(64):
        span = alignment[b] == 2
        assert bool(span.any()) == bool(anchored[b])
        if ids[b, 2] == 1:
            assert active[b][span].all()
        elif ids[b, 2] == 2:
            assert not active[b][span].any()


@pytest.mark.parametrize("start", ["random", "mdct"])
def test_normalized_latents_decode_as_before(tiny_config, start):
    from samaudio.train.codec_init import init_mdct_codec

    model = build_model(tiny_config, seed=0)
    codec = init_mdct_codec(model.audio_codec) if start == "mdct" else model.audio_codec  # mdct: zero rows
    wav = torch.from_numpy(np.stack([data.held_out(2, seconds=0.2)[i].mixture for i in range(2)]))[:, None]
    message = torch.zeros(2, codec.nbits)
    with torch.no_grad():
        before = codec.decode(codec(wav), message)
        latents = codec(wav)
        normalize_latents(codec, latents)
        after_latents = codec(wav)
        after = codec.decode(after_latents, message)
    assert after_latents.mean(dim=(0, 2)).abs().max() < 1e-4  # zero mean per channel
    # one scale for all channels (the latents' overall std), so channels keep their relative sizes
    expected = (latents - latents.mean(dim=(0, 2))[None, :, None]) / latents.std()
    torch.testing.assert_close(after_latents, expected, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-3)


def test_codec_steps_raise_the_reconstruction_snr_of_a_fixed_batch(tiny_config):
    torch.manual_seed(0)
    codec = build_model(tiny_config, seed=0).audio_codec.train()
    wav = torch.from_numpy(np.stack([e.mixture for e in data.held_out(2, seconds=0.08)]))[:, None]
    loss_fn = CodecLoss(48000)
    opt = torch.optim.Adam(codec.parameters(), lr=1e-3)
    first = None
    for _ in range(12):
        losses = loss_fn(autoencode(codec, wav), wav)
        first = float(losses["snr_db"].detach()) if first is None else first
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    with torch.no_grad():
        assert float(loss_fn(autoencode(codec, wav), wav)["snr_db"]) > first + 1.0


def test_flow_steps_reduce_the_velocity_loss_of_a_fixed_batch(tiny_config):
    model = build_model(tiny_config, seed=0)
    B, T, C = 4, 6, tiny_config.audio_codec.codebook_dim
    g = torch.Generator().manual_seed(1)
    text, mask = model.encode_text(["a sine tone", "a kick drum", "a bass line", "a sine tone"])
    batch = FlowBatch(
        mixture=torch.randn(B, T, C, generator=g), target=torch.randn(B, T, C, generator=g),
        residual=torch.randn(B, T, C, generator=g), text=text.detach(), text_mask=mask,
        active=torch.rand(B, T, generator=g) > 0.5,
    )
    params = [p for n, p in model.named_parameters() if not n.startswith(("audio_codec.", "text_encoder."))]
    opt = torch.optim.Adam(params, lr=3e-3)
    model.train()

    def loss() -> torch.Tensor:  # the same noise, times and anchors every call
        return flow_matching_loss(model, batch, torch.Generator().manual_seed(2))

    start = float(loss().detach())
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < 0.7 * start
    assert all(p.grad is None for p in model.audio_codec.parameters())


def test_a_resumed_run_continues_exactly_where_the_checkpoint_left_off(tiny_config, tmp_path):
    whole = Trainer(tiny_config, tmp_path / "whole", tiny_train())
    whole.run(max_steps=4)
    assert (whole.stage, whole.step) == ("codec", 4)  # stopped after its four steps, before normalising

    halves = Trainer(tiny_config, tmp_path / "halves", tiny_train())
    assert halves.run(max_steps=2) is None and (tmp_path / "halves" / CHECKPOINT).is_file()
    resumed = Trainer(tiny_config, tmp_path / "halves", tiny_train())
    assert (resumed.stage, resumed.step) == ("codec", 2)
    resumed.run(max_steps=2)
    for (name, a), b in zip(whole.model.audio_codec.state_dict().items(), resumed.model.audio_codec.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)

    folder = Trainer(tiny_config, tmp_path / "halves", tiny_train()).run()
    assert (folder / "model.safetensors").is_file() and (folder / "t5" / "config.json").is_file()
    log = (tmp_path / "halves" / "losses.jsonl").read_text().splitlines()
    assert sum('"stage": "codec"' in line for line in log) == 4 and sum('"stage": "flow"' in line for line in log) == 3


def test_the_mdct_codec_reconstructs_band_limited_audio_with_its_phase(tiny_config):
    from samaudio.model.codec import DACVAE
    from samaudio.train.codec_init import init_mdct_codec
    from samaudio.train.evaluate import si_sdr

    codec = init_mdct_codec(DACVAE(tiny_config.audio_codec)).eval()  # 16 bins: below 200 Hz
    t = np.arange(24000) / 48000
    x = (0.2 * np.sin(2 * np.pi * 70 * t + 1.0) + 0.1 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    with torch.no_grad():
        y = codec.decode(codec(torch.from_numpy(x)[None, None]), torch.zeros(1, codec.nbits))[0, 0, : len(x)].numpy()
    inner = slice(2400, -2400)  # the clip's edges are padded
    assert si_sdr(y[inner], x[inner]) > 25.0
