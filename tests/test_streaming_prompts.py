"""One stream, several sounds (issue 17): prompts batched together equal their single-prompt streams, null-sum
stems add back up to the input exactly, a stream of known short length is one window of its own length, and
progress moves at every solver step inside a window. The golden tiny model, short windows, a 2-step solver."""

from __future__ import annotations

import numpy as np
import pytest

from samaudio.errors import InvalidAudioError, InvalidRequestError
from samaudio.model.model import midpoint_ode_opt
from samaudio.streaming import Prompt, StreamingSeparator, null_sum_residual

CHUNK, OVERLAP = 0.2, 0.08  # 5 and 2 latent frames
ODE = midpoint_ode_opt(2)  # 4 evaluations per window
TOL = 1e-6


def music(frames: int, channels: int, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / rate
    tones = np.sin(2 * np.pi * rng.uniform(110, 440, channels) * t[:, None])  # (n, ch)
    return (0.3 * tones + 0.05 * rng.standard_normal((frames, channels))).astype(np.float32)


def stream(model, processor, x, rate, sizes=(), **kwargs):
    """Push x in `sizes` then the rest, finish; the joined targets (P x (n, ch)) and residual (n, ch)."""
    kwargs.setdefault("chunk_seconds", CHUNK)
    kwargs.setdefault("overlap_seconds", OVERLAP)
    kwargs.setdefault("ode_opt", ODE)
    description = kwargs.pop("description", "" if "prompts" in kwargs else "a chirp")
    sep = StreamingSeparator(model, processor, description, sample_rate=rate, channels=x.shape[1], **kwargs)
    blocks, i = [], 0
    for s in sizes:
        blocks += sep.push(x[i : i + s])
        i += s
    blocks += sep.push(x[i:]) + sep.finish()
    assert [b.start for b in blocks] == list(np.cumsum([0] + [b.frames for b in blocks[:-1]]))
    targets = [np.concatenate([b.targets[p] for b in blocks]) for p in range(len(blocks[0].targets))]
    return targets, np.concatenate([b.residual for b in blocks]), sep


PROMPTS = [
    Prompt("a chirp"),
    Prompt("low hum", anchors=[("+", 0.1, 0.3)], seed=7),
    Prompt("", anchors=[("-", 0.0, 0.2), ("+", 0.25, 0.5)]),
]


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 1)], ids=["stereo-44k1", "mono-48k"])
def test_several_prompts_equal_their_single_prompt_streams(golden_model, golden_processor, rate, channels):
    x = music(round(0.61 * rate), channels, rate, seed=1)

    targets, residual, sep = stream(golden_model, golden_processor, x, rate, sizes=[777, 5000], prompts=PROMPTS)

    for p, prompt in enumerate(PROMPTS):
        alone, _, _ = stream(
            golden_model, golden_processor, x, rate, description=prompt.description, anchors=prompt.anchors,
            seed=0 if prompt.seed is None else prompt.seed,
        )  # fmt: skip
        np.testing.assert_allclose(targets[p], alone[0], atol=TOL, rtol=0)
    # several prompts: the residual is the mix minus the targets
    np.testing.assert_allclose(residual, x - np.sum(targets, axis=0), atol=TOL, rtol=0)
    assert sep.counters.nfe == sep.counters.windows_done * 4  # the prompts of a window share its model calls


def test_one_prompt_equals_the_description_config(golden_model, golden_processor):
    x = music(9000, 1, 48000, seed=2)
    via_prompt, res_p, _ = stream(golden_model, golden_processor, x, 48000, prompts=[Prompt("a chirp", seed=3)])
    via_text, res_t, _ = stream(golden_model, golden_processor, x, 48000, description="a chirp", seed=3)
    np.testing.assert_array_equal(via_prompt[0], via_text[0])
    np.testing.assert_array_equal(res_p, res_t)  # the model's own residual for one prompt


@pytest.mark.parametrize("source", ["int16", "int24"])
@pytest.mark.parametrize("prompts", [[Prompt("a chirp")], PROMPTS], ids=["one", "three"])
def test_null_sum_stems_add_back_up_to_the_input_to_the_last_bit(golden_model, golden_processor, source, prompts):
    bits = {"int16": 16, "int24": 24}[source]
    rng = np.random.default_rng(3)
    x = (np.round(music(17000, 2, 44100, seed=3) * 2 ** (bits - 1)) / 2 ** (bits - 1)).astype(np.float32)
    x[100:110] = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (10, 2)) / 2 ** (bits - 1)  # full-scale samples

    targets, residual, _ = stream(golden_model, golden_processor, x, 44100, sizes=[3000], prompts=prompts,
                                  null_sum=True)

    total = targets[0]
    for t in targets[1:]:
        total = total + t  # float32, in order
    assert np.array_equal(total + residual, x)
    assert np.array_equal(np.sum([*targets, residual], axis=0, dtype=np.float64), x.astype(np.float64))


def test_null_sum_targets_stay_the_models_targets_to_within_the_24_bit_grid(golden_model, golden_processor):
    x = music(9000, 1, 48000, seed=4)
    plain, _, _ = stream(golden_model, golden_processor, x, 48000, prompts=PROMPTS[:2])
    nulled, residual, _ = stream(golden_model, golden_processor, x, 48000, prompts=PROMPTS[:2], null_sum=True)
    for a, b in zip(plain, nulled):
        np.testing.assert_allclose(a, b, atol=2.0**-24 + 1e-9, rtol=0)
    np.testing.assert_allclose(np.sum(nulled, axis=0) + residual, x, atol=1e-7, rtol=0)  # a float mix: to rounding


def test_null_sum_residual_is_exact_for_inputs_on_the_24_bit_grid():
    rng = np.random.default_rng(5)
    mix = (rng.integers(-(2**23), 2**23, (4096, 2)) / 2**23).astype(np.float32)
    targets = [rng.uniform(-0.3, 0.3, (4096, 2)).astype(np.float32) for _ in range(3)]  # sums under 2
    q, r = null_sum_residual(mix, targets)
    assert np.array_equal(((q[0] + q[1]) + q[2]) + r, mix)
    assert np.array_equal((r + q[2]) + (q[1] + q[0]), mix)  # any order


@pytest.mark.parametrize(("rate", "seconds"), [(44100, 1.0), (48000, 0.13), (22050, 0.3337)])
def test_a_short_stream_of_known_length_is_one_window_of_its_own_length(golden_model, golden_processor, rate,
                                                                        seconds):
    n = round(seconds * rate)
    x = music(n, 1, rate, seed=6)

    one, _, sep = stream(golden_model, golden_processor, x, rate, total_frames=n, chunk_seconds=10.0,
                         overlap_seconds=2.0)
    again, _, _ = stream(golden_model, golden_processor, x, rate, sizes=[1, 999, 3], total_frames=n,
                         chunk_seconds=10.0, overlap_seconds=2.0)

    assert sep.counters.windows_done == 1
    plan = sep.settings.plan
    assert plan.frames == -(-(-(-n * 48000 // rate)) // 1920) < 250  # its own length in 40 ms frames, not 10 s
    assert one[0].shape == (n, 1)
    np.testing.assert_allclose(one[0], again[0], atol=TOL, rtol=0)  # independent of how the audio was pushed


def test_a_long_stream_of_known_length_keeps_the_usual_windows(golden_model, golden_processor):
    x = music(30000, 1, 48000, seed=7)
    known, _, a = stream(golden_model, golden_processor, x, 48000, total_frames=len(x))
    unknown, _, b = stream(golden_model, golden_processor, x, 48000)
    assert a.settings.plan == b.settings.plan
    np.testing.assert_allclose(known[0], unknown[0], atol=TOL, rtol=0)


def test_audio_beyond_the_stated_total_is_refused_before_it_changes_anything(golden_model, golden_processor):
    sep = StreamingSeparator(golden_model, golden_processor, "a chirp", sample_rate=48000, channels=1,
                             total_frames=1000, ode_opt=ODE)
    sep.push(np.zeros((600, 1), np.float32))
    with pytest.raises(InvalidAudioError, match="past its stated total of 1000"):
        sep.push(np.zeros((401, 1), np.float32))
    assert sep.counters.frames_in == 600 and not sep.closed


def test_progress_moves_at_every_solver_step_inside_one_window(golden_model, golden_processor):
    seen = []
    _, _, sep = stream(golden_model, golden_processor, music(4000, 1, 48000), 48000, prompts=PROMPTS[:2],
                       total_frames=4000, on_step=lambda done, planned: seen.append((done, planned)))
    assert sep.counters.windows_done == 1
    # 4 evaluations (2 midpoint steps) of one window for 2 prompts: 8 units, each evaluation reported
    assert [d for d, _ in seen] == list(range(1, 9))  # each job's evaluation counts once
    assert {p for _, p in seen} == {8}
    assert sep.counters.evaluations_done == sep.evaluations_planned == 8


def test_prompts_with_a_description_or_empty_prompts_are_refused(golden_model, golden_processor):
    with pytest.raises(InvalidRequestError, match="both a description"):
        StreamingSeparator(golden_model, golden_processor, "x", sample_rate=48000, channels=1, prompts=PROMPTS)
    with pytest.raises(InvalidRequestError, match=r"prompts\[1\] has an empty description and no anchor marking"):
        StreamingSeparator(golden_model, golden_processor, "", sample_rate=48000, channels=1,
                           prompts=[Prompt("a"), Prompt("  ")])
    with pytest.raises(InvalidRequestError, match=r"prompts\[1\] has an empty description and no anchor marking"):
        StreamingSeparator(golden_model, golden_processor, "", sample_rate=48000, channels=1,
                           prompts=[Prompt("a"), Prompt("", (("-", 0.0, 0.5),))])
