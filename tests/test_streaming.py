"""The streaming engine (`samaudio.streaming`): any length, rate and channel count, in overlapping windows.

Streamed stems must equal offline ones: the same input gives the same stems however it is pushed and batched,
one window equals `SAMAudio.separate` with the same noise, and the stitching adds nothing of its own. Most
tests run the golden tiny model with short windows (0.2 s, overlapping by 0.08 s) and a 2-step solver, which
the engine's behaviour does not depend on; tests of the seams use a stand-in worker that echoes its input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio
from server_fixtures import EchoWorker

from samaudio.streaming import (
    SeparatedBlock,
    StreamingSeparator,
    WindowPlan,
    frame_noise,
    separate_windows,
    watermark_bits,
    window_batch,
)

CHUNK, OVERLAP = 0.2, 0.08  # 5 and 2 latent frames: a window every 0.12 s keeps the golden model fast
W, V = 5, 2  # the same, in latent frames of 1920 samples at 48 kHz
FAST_ODE = {"method": "euler", "options": {"step_size": 0.5}}  # 2 evaluations; the solver is not under test
TOL = 1e-6


# ----------------------------------------------------------------------------------------------------------
# helpers


def music(frames: int, channels: int, rate: int, seed: int = 0) -> np.ndarray:
    """Audio like a recording: plucked harmonic notes plus a little noise, different per channel; (n, ch) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / rate
    out = np.empty((frames, channels), np.float32)
    for c in range(channels):
        f0 = rng.uniform(110, 440)
        note = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 6))
        out[:, c] = 0.3 * note * np.exp(-4 * (t % 0.25)) + 0.02 * rng.standard_normal(frames)
    return out


def run(sep: StreamingSeparator, x: np.ndarray, sizes=None) -> list[SeparatedBlock]:
    """Push `x` in pieces of `sizes` (all at once if None; the rest last), then finish."""
    blocks, i = [], 0
    for s in [] if sizes is None else sizes:
        blocks += sep.push(x[i : i + s])
        i += s
    blocks += sep.push(x[i:])
    return blocks + sep.finish()


def joined(blocks: list[SeparatedBlock]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([b.target for b in blocks]), np.concatenate([b.residual for b in blocks])


def random_sizes(rng: np.random.Generator, total: int, largest: int) -> list[int]:
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(0, largest)))  # zeros included
    return sizes


def separator(model, processor, *, rate=48000, channels=1, description="a dog barking", anchors=(), **kw):
    kw.setdefault("ode_opt", FAST_ODE)
    return StreamingSeparator(
        model, processor, description, anchors, sample_rate=rate, channels=channels,
        chunk_seconds=CHUNK, overlap_seconds=OVERLAP, **kw,
    )


# ----------------------------------------------------------------------------------------------------------
# length and contiguity, on the golden model

LENGTHS = {
    "shorter than a window": 0.13,
    "exactly one window": CHUNK,
    "many windows": 0.5,
}


@pytest.mark.parametrize("rate", [48000, 44100, 22050])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("kind", list(LENGTHS))
def test_blocks_are_contiguous_and_as_long_as_the_input(golden_model, golden_processor, rate, channels, kind):
    n = round(LENGTHS[kind] * rate) + (37 if kind == "many windows" else 0)
    sep = separator(golden_model, golden_processor, rate=rate, channels=channels)
    blocks = run(sep, music(n, channels, rate), [n // 3, 0, n // 5])

    start = 0
    for b in blocks:
        assert b.start == start
        assert b.target.dtype == b.residual.dtype == np.float32
        assert b.target.shape == b.residual.shape == (b.frames, channels)
        start += b.frames
    assert start == n == sep.counters.frames_in == sep.counters.frames_out
    assert sep.counters.windows_done == sep.settings.plan.count(-(-n * 48000 // rate))
    if kind != "many windows":
        assert sep.counters.windows_done == 1


# ----------------------------------------------------------------------------------------------------------
# invariance: pushes, batches, streams


@pytest.fixture(scope="module")
def stereo_take():
    return music(round(0.7 * 44100), 2, 44100, seed=3)


@pytest.fixture(scope="module")
def pushed_at_once(golden_model, golden_processor, stereo_take):
    sep = separator(golden_model, golden_processor, rate=44100, channels=2, anchors=[("+", 0.1, 0.3)], max_batch=4)
    return joined(run(sep, stereo_take))


def test_split_invariance(golden_model, golden_processor, stereo_take, pushed_at_once):
    sep = separator(golden_model, golden_processor, rate=44100, channels=2, anchors=[("+", 0.1, 0.3)], max_batch=4)
    sizes = random_sizes(np.random.default_rng(5), len(stereo_take) - 1, 4000)
    target, residual = joined(run(sep, stereo_take, sizes))
    assert np.abs(target - pushed_at_once[0]).max() <= TOL
    assert np.abs(residual - pushed_at_once[1]).max() <= TOL


def test_batch_invariance(golden_model, golden_processor, stereo_take, pushed_at_once):
    sep = separator(golden_model, golden_processor, rate=44100, channels=2, anchors=[("+", 0.1, 0.3)], max_batch=1)
    target, residual = joined(run(sep, stereo_take))
    assert np.abs(target - pushed_at_once[0]).max() <= TOL
    assert np.abs(residual - pushed_at_once[1]).max() <= TOL


def test_windows_of_different_streams_batch_together_without_changing_results(golden_model, golden_processor):
    """What a server's pool does: jobs of streams with other texts (other token counts) and anchors in one call."""
    jobs = []
    streams = [("a dog barking in the distance at night", (), 1), ("rain", [("-", 0, 0.1)], 2)]
    for description, anchors, seed in streams:
        echo = EchoWorker()
        sep = separator(golden_model, golden_processor, description=description, anchors=anchors, seed=seed,
                        worker=echo)
        sep.push(music(9600, 1, 48000, seed))
        jobs.append(echo.jobs[0])
    assert jobs[0].text.features(golden_model)[0].shape[1] != jobs[1].text.features(golden_model)[0].shape[1]

    together = separate_windows(golden_model, golden_processor, jobs)
    for job, stems in zip(jobs, together):
        (alone,) = separate_windows(golden_model, golden_processor, [job])
        assert torch.allclose(stems.target, alone.target, rtol=0, atol=TOL)
        assert torch.allclose(stems.residual, alone.residual, rtol=0, atol=TOL)


# ----------------------------------------------------------------------------------------------------------
# one window equals the model's own separate()


def test_one_window_matches_model_separate(golden_model, golden_processor):
    x = music(W * 1920, 1, 48000, seed=11)  # mono, 48 kHz, exactly one window
    anchors = [("+", 0.05, 0.15)]
    sep = separator(golden_model, golden_processor, anchors=anchors, seed=7, ode_opt=None)  # the default solver
    target, residual = joined(run(sep, x))

    batch = golden_processor(["a dog barking"], [torch.from_numpy(x.T.copy())], anchors=[anchors])
    noise = frame_noise(7, 0, W, 2 * golden_model.config.audio_codec.codebook_dim)[None]  # (1, W, 2C)
    ref = golden_model.separate(batch, noise=noise, watermark_message=watermark_bits(7))
    assert np.abs(target[:, 0] - ref.target[0].numpy()).max() <= TOL
    assert np.abs(residual[:, 0] - ref.residual[0].numpy()).max() <= TOL


def test_a_short_input_is_separated_as_one_window_padded_with_zeros(golden_model, golden_processor):
    n = 6240  # 0.13 s
    x = music(n, 1, 48000, seed=12)
    sep = separator(golden_model, golden_processor, seed=3)
    target, residual = joined(run(sep, x))

    padded = torch.zeros(1, W * 1920)
    padded[0, :n] = torch.from_numpy(x[:, 0])
    batch = golden_processor(["a dog barking"], [padded])
    noise = frame_noise(3, 0, W, 2 * golden_model.config.audio_codec.codebook_dim)[None]
    ref = golden_model.separate(batch, noise=noise, watermark_message=watermark_bits(3), ode_opt=FAST_ODE)
    assert target.shape == (n, 1)
    assert np.abs(target[:, 0] - ref.target[0][:n].numpy()).max() <= TOL
    assert np.abs(residual[:, 0] - ref.residual[0][:n].numpy()).max() <= TOL


# ----------------------------------------------------------------------------------------------------------
# the seams: stitching, cross-fades, noise


@pytest.mark.parametrize("rate", [48000, 44100, 22050, 16000, 11025, 8000, 32768])
def test_stitching_reproduces_the_input(golden_model, golden_processor, rate):
    """With a stand-in that returns its input, the output is the input itself at 48 kHz, and at other rates
    the input resampled to 48 kHz and back in one pass: windows and seams add nothing (max|diff| <= 1e-6,
    window boundaries included). 32768 Hz puts window edges between input frames (40 ms = 1310.72 frames)."""
    n = round(1.0 * rate) + 11
    x = music(n, 2, rate, seed=rate)
    sep = separator(golden_model, golden_processor, rate=rate, channels=2, worker=EchoWorker())
    target, residual = joined(run(sep, x, random_sizes(np.random.default_rng(rate), n - 1, rate // 7)))
    assert sep.counters.windows_done > 5

    wav = torch.from_numpy(x.T.copy())
    expected = torchaudio.functional.resample(torchaudio.functional.resample(wav, rate, 48000), 48000, rate)
    expected = expected[:, :n].T.numpy()
    if rate == 48000:
        np.testing.assert_array_equal(expected, x)
    assert np.abs(target - expected).max() <= TOL
    assert not residual.any()


def test_a_constant_passes_the_crossfades_unchanged(golden_model, golden_processor):
    x = np.full((48000, 1), 0.25, np.float32)
    sep = separator(golden_model, golden_processor, worker=EchoWorker())
    target, _ = joined(run(sep, x, [1000] * 20))
    assert np.abs(target - 0.25).max() <= 1e-7


@pytest.mark.parametrize("max_batch", [1, 3])
def test_windows_overlapping_by_more_than_half_stitch_back_to_the_input(golden_model, golden_processor, max_batch):
    """Overlap 4 of 5 frames: each window still shares samples with several later ones when its stems are final."""
    x = music(48000 + 7, 2, 48000)
    sep = StreamingSeparator(
        golden_model, golden_processor, "a dog barking", sample_rate=48000, channels=2, chunk_seconds=0.2,
        overlap_seconds=0.16, max_batch=max_batch, worker=EchoWorker(),
    )
    target, residual = joined(run(sep, x, random_sizes(np.random.default_rng(max_batch), len(x) - 1, 5000)))
    assert sep.counters.windows_done > 10
    assert np.abs(target - x).max() <= TOL and not residual.any()


def test_crossfade_weights_are_complementary():
    plan = WindowPlan(frames=W, overlap=V, hop=1920, sample_rate=48000)
    n = V * 1920
    for k in range(3):
        w, nxt = plan.weights(k), plan.weights(k + 1)
        assert torch.allclose(w[-n:] + nxt[:n], torch.ones(n), rtol=0, atol=1e-7)
        assert (w > 0).all() and (w <= 1).all()
        assert (w[n:-n] == 1).all()
    assert (plan.weights(0)[:n] == 1).all()  # the first window has nothing to fade in from


def test_overlapping_windows_start_from_the_same_noise(golden_model, golden_processor):
    echo = EchoWorker()
    run(separator(golden_model, golden_processor, seed=9, worker=echo), music(48000, 1, 48000))
    jobs = echo.jobs
    width = 2 * golden_model.config.audio_codec.codebook_dim
    S = W - V
    for a, b in zip(jobs, jobs[1:]):
        assert b.first_frame == a.first_frame + S
        assert torch.equal(a.noise[S:], b.noise[:V])
        assert torch.equal(a.watermark_message, b.watermark_message)
    for job in jobs:
        assert job.noise.shape == (W, width)
        assert torch.equal(job.noise, frame_noise(9, job.first_frame, W, width))
    assert not torch.equal(frame_noise(9, 0, W, width), frame_noise(10, 0, W, width))


def test_text_is_encoded_once_per_stream_by_the_worker(golden_model, golden_processor, monkeypatch):
    calls = []
    encode = golden_model.encode_text
    monkeypatch.setattr(golden_model, "encode_text", lambda texts: calls.append(texts) or encode(texts))
    echo = EchoWorker()
    run(separator(golden_model, golden_processor, worker=echo), music(48000, 1, 48000))
    assert calls == [] and len(echo.jobs) > 5  # the stream itself encodes nothing: that is model work
    assert all(job.text is echo.jobs[0].text for job in echo.jobs)
    separate_windows(golden_model, golden_processor, echo.jobs[:2])
    separate_windows(golden_model, golden_processor, echo.jobs[2:3])
    assert calls == [["a dog barking"]]  # once, by the first worker call, and reused
    features, mask = echo.jobs[0].text.features(golden_model)
    with torch.inference_mode():
        expected_features, expected_mask = encode(["a dog barking"])
    assert torch.allclose(features, expected_features, rtol=0, atol=TOL)
    assert torch.equal(mask, expected_mask)


def test_windows_are_batched_up_to_max_batch_with_channels_as_items(golden_model, golden_processor):
    echo = EchoWorker()
    run(separator(golden_model, golden_processor, rate=44100, channels=2, max_batch=3, worker=echo),
        music(44100, 2, 44100))
    sizes = [len(call) for call in echo.calls]
    assert max(sizes) == 3 and sum(sizes) == 8
    assert all(job.audio.shape == (2, W * 1920) for job in echo.jobs)
    assert [job.index for job in echo.jobs] == list(range(8))

    batch = window_batch(golden_processor, echo.calls[0])
    assert batch.audios.shape == (6, 1, W * 1920)  # 3 windows x 2 channels, all full length
    assert bool(batch.audio_pad_mask.all())


# ----------------------------------------------------------------------------------------------------------
# anchors


def frame_tokens(batch) -> torch.Tensor:
    """The anchor token the model embeds at each frame: (B, T)."""
    return batch.anchor_ids.gather(1, batch.anchor_alignment)


def test_each_window_gets_its_part_of_the_anchors(golden_model, golden_processor):
    anchors = [("+", 0.05, 0.3), ("-", 0.26, 0.34), ("+", 0.71, 5.0)]  # overlapping; past the end
    echo = EchoWorker()
    run(separator(golden_model, golden_processor, rate=44100, channels=2, anchors=anchors, worker=echo),
        music(round(0.9 * 44100), 2, 44100))
    jobs = echo.jobs
    frames = jobs[-1].first_frame + W

    # the whole stream as one item: the frames each anchor token covers, by the processor's own rule
    whole = golden_processor(["a dog barking"], [torch.zeros(1, frames * 1920)], anchors=[anchors])
    expected = frame_tokens(whole)[0]  # (frames,)

    seen_signs = []
    for job in jobs:
        batch = window_batch(golden_processor, [job])
        tokens = frame_tokens(batch)  # (2, W): both channels of the window
        assert torch.equal(tokens[0], expected[job.first_frame : job.first_frame + W])
        assert torch.equal(tokens[1], tokens[0])
        assert all(0 <= s < e <= CHUNK + 1e-9 for _, s, e in job.anchors)  # window time, clipped to the window
        seen_signs.append("".join(sign for sign, _, _ in job.anchors))
        if not job.anchors:
            assert batch.anchor_ids.tolist() == [[0, 3], [0, 3]]  # <null> and <pad> only
    assert "" in seen_signs and "+-" in seen_signs  # windows without anchors, and one with two, in order


def test_anchor_edges_anywhere_in_long_awkward_windows_fall_on_the_processors_frames(golden_model, golden_processor):
    """Windows of 37 frames every 26: anchor edges land at every frame offset of a window, not only the first few,
    exactly on frame times (k * 40 ms, where ceil decides) and between them."""
    rng = np.random.default_rng(15)
    seconds = 4.1
    edges = np.concatenate([np.arange(1, 100) * 0.04, rng.uniform(0, seconds, 60)])  # on and between frame times
    edges = rng.permutation(edges)
    anchors = [("+" if i % 3 else "-", float(min(a, b)), float(max(a, b)))
               for i, (a, b) in enumerate(zip(edges[::2], edges[1::2])) if a != b]
    echo = EchoWorker()
    sep = StreamingSeparator(golden_model, golden_processor, "a dog barking", anchors, sample_rate=48000, channels=1,
                             chunk_seconds=37 * 0.04, overlap_seconds=11 * 0.04, worker=echo)
    run(sep, music(round(seconds * 48000), 1, 48000))
    jobs, frames = echo.jobs, echo.jobs[-1].first_frame + 37
    assert len(jobs) >= 4

    whole = golden_processor(["a dog barking"], [torch.zeros(1, frames * 1920)], anchors=[anchors])
    expected = frame_tokens(whole)[0]  # (frames,) the token at each frame, by the processor's rule
    for job in jobs:
        tokens = frame_tokens(window_batch(golden_processor, [job]))[0]  # (37,)
        assert torch.equal(tokens, expected[job.first_frame : job.first_frame + 37]), job.index


# ----------------------------------------------------------------------------------------------------------
# bounded state and progress


def test_memory_held_per_stream_is_bounded_by_a_few_windows(golden_model, golden_processor):
    sep = separator(golden_model, golden_processor, rate=44100, channels=2, worker=EchoWorker())
    x = music(8 * 44100, 2, 44100)
    held = []
    for i in range(0, len(x), 4410):
        sep.push(x[i : i + 4410])
        held.append(sep.held_samples)
    sep.finish()
    assert max(held) <= 4 * sep.settings.plan.samples  # 0.8 s of 48 kHz audio held for an 8 s stream
    assert max(held[len(held) // 2 :]) <= max(held[: len(held) // 10])  # not growing with the stream


def test_progress_reports_frames_done_and_known(golden_model, golden_processor):
    reports = []
    sep = separator(golden_model, golden_processor, rate=22050, channels=2, worker=EchoWorker(),
                    on_progress=lambda done, known: reports.append((done, known)))
    n = 22050 + 5
    run(sep, music(n, 2, 22050), [3000] * 5)
    assert reports[-1] == (n, n)
    assert all(done <= known for done, known in reports)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)
    assert [k for _, k in reports] == sorted(k for _, k in reports)
    assert any(0 < done < n for done, _ in reports)  # stems came out before the end


def test_pushed_arrays_are_not_changed(golden_model, golden_processor):
    x = music(30000, 2, 44100)
    before = x.copy()
    run(separator(golden_model, golden_processor, rate=44100, channels=2, worker=EchoWorker()), x, [7000, 0, 9000])
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("channels", [1, 2])
def test_a_caller_may_refill_its_buffer_as_soon_as_push_returns(golden_model, golden_processor, channels):
    """An audio callback fills one buffer again and again: the stems are of what was pushed, not of the buffer."""
    x = music(48000, channels, 48000)
    sep = separator(golden_model, golden_processor, channels=channels, worker=EchoWorker())
    buffer, blocks = np.empty((1000, channels), np.float32), []
    for i in range(0, len(x), len(buffer)):
        piece = buffer[: len(x[i : i + len(buffer)])]
        piece[:] = x[i : i + len(buffer)]
        blocks += sep.push(piece)
        buffer[:] = 7.0  # the caller's next use of its buffer
    target, _ = joined(blocks + sep.finish())
    assert np.abs(target - x).max() <= TOL  # the stand-in's target is its input


def test_an_empty_stream_gives_no_blocks(golden_model, golden_processor):
    echo = EchoWorker()
    sep = separator(golden_model, golden_processor, channels=2, worker=echo)
    assert sep.push(np.zeros((0, 2), np.float32)) == []
    assert sep.finish() == []
    assert sep.counters.frames_out == 0 and echo.calls == []
