"""The streaming engine's quality path (issue 16): K candidates per window chosen by a ranker, span prediction per
window, and the span gate (a window with no predicted activity: target silence, residual the mix), on the golden
model with its golden span predictor and ensemble text ranker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samaudio.errors import PartNotLoadedError
from samaudio.model.model import midpoint_ode_opt
from samaudio.streaming import StreamingSeparator, StreamSettings, frame_noise
from samaudio.streaming.settings import span_gate_default

STEPS = 2
CHUNK, OVERLAP = 0.4, 0.12  # 10 and 3 latent frames: short windows keep the tests fast
RATE = 48000  # the model's rate: the gate's residual is the input exactly, with no resampling in between


def mix(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / RATE
    tone = 0.3 * np.sin(2 * np.pi * 330 * t * (1 + np.arange(channels)))  # (frames, channels)
    return (tone + 0.05 * rng.standard_normal((frames, channels))).astype(np.float32)


def stream(model, processor, x: np.ndarray, sizes=None, **kwargs):
    sep = StreamingSeparator(
        model, processor, "a tone", sample_rate=RATE, channels=x.shape[1], chunk_seconds=CHUNK,
        overlap_seconds=OVERLAP, ode_opt=midpoint_ode_opt(STEPS), **kwargs,
    )
    blocks, at, i = [], 0, 0
    while at < len(x):
        n = len(x) - at if sizes is None else sizes[i % len(sizes)]
        blocks += sep.push(x[at : at + n])
        at, i = at + n, i + 1
    blocks += sep.finish()
    target = np.concatenate([b.target for b in blocks])
    residual = np.concatenate([b.residual for b in blocks])
    return sep, target, residual


def test_candidate_noise_is_a_function_of_seed_candidate_and_frame():
    assert torch.equal(frame_noise(3, 7, 40, 6, candidate=0), frame_noise(3, 7, 40, 6))  # K = 1 unchanged
    a, b = frame_noise(3, 0, 60, 6, candidate=1), frame_noise(3, 20, 30, 6, candidate=1)
    assert torch.equal(a[20:50], b)
    assert not torch.equal(a, frame_noise(3, 0, 60, 6, candidate=2))
    assert not torch.equal(a, frame_noise(3, 0, 60, 6, candidate=0))


def test_two_candidates_give_the_same_stems_for_any_push_sizes(quality_model, golden_processor):
    x = mix(int(1.3 * RATE) + 77, 2)
    one, t1, r1 = stream(quality_model, golden_processor, x, candidates=2, span_gate=False)
    _, t2, r2 = stream(quality_model, golden_processor, x, sizes=[1234, 17, 9000], candidates=2, span_gate=False)
    np.testing.assert_allclose(t1, t2, atol=1e-6)
    np.testing.assert_allclose(r1, r2, atol=1e-6)
    assert one.counters.candidates_evaluated == 2 * 2 * one.counters.windows_done  # K x channels per window
    scores = one.counters.chosen_scores
    assert len(scores) == 2 * one.counters.windows_done and all(np.isfinite(scores))


def test_the_ranker_keeps_the_best_scored_of_the_candidates(quality_model, golden_processor):
    from samaudio.streaming import LocalWorker

    x = mix(int(0.5 * RATE), 1, seed=2)
    recorded = []

    class Recording(LocalWorker):
        def submit(self, jobs):
            future = super().submit(jobs)
            recorded.extend(future.result())
            return future

    worker = Recording(quality_model, golden_processor)
    stream(quality_model, golden_processor, x, candidates=3, span_gate=False, worker=worker)
    assert recorded and all(s.scores.shape == (1, 3) for s in recorded)
    assert all(int(s.chosen[0]) == int(s.scores[0].argmax()) for s in recorded)


def test_more_candidates_need_a_ranker(golden_model, golden_processor):
    with pytest.raises(PartNotLoadedError, match="ranker"):
        stream(golden_model, golden_processor, mix(4800, 1), candidates=2)


def test_span_prediction_and_the_gate_need_the_span_predictor(golden_model, golden_processor):
    assert span_gate_default(golden_model) is False
    for kwargs in (dict(predict_spans=True), dict(span_gate=True)):
        with pytest.raises(PartNotLoadedError, match="span predictor"):
            stream(golden_model, golden_processor, mix(4800, 1), **kwargs)


def test_the_gate_is_on_by_default_with_a_span_predictor(quality_model, golden_processor):
    sep, target, residual = stream(quality_model, golden_processor, mix(9600, 1), span_threshold=1.0)
    assert sep.settings.span_gate and sep.counters.windows_gated == sep.counters.windows_done


def test_a_gated_window_is_silence_and_its_residual_is_the_mix(quality_model, golden_processor):
    x = mix(int(0.9 * RATE) + 5, 2, seed=1)
    sep, target, residual = stream(quality_model, golden_processor, x, span_gate=True, span_threshold=1.0)
    n = sep.counters
    assert n.windows_gated == n.windows_done > 1 and n.nfe == 0 and n.candidates_evaluated == 0
    assert not target.any()
    np.testing.assert_allclose(residual, x, atol=1e-6)


def test_an_open_gate_changes_nothing(quality_model, golden_processor):
    x = mix(int(0.7 * RATE), 1, seed=3)
    gated, t1, r1 = stream(quality_model, golden_processor, x, span_gate=True, span_threshold=-1.0)
    _, t2, r2 = stream(quality_model, golden_processor, x, span_gate=False)
    assert gated.counters.windows_gated == 0
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(r1, r2)


def test_the_gate_decides_per_window(quality_model, golden_processor):
    """A threshold between two windows' highest frame probabilities closes the gate on one and not the other."""
    x = mix(int(0.9 * RATE), 1, seed=4)
    x[int(0.45 * RATE) :] *= 0.0  # the later windows hear silence
    plan = StreamSettings.check(
        quality_model, "a tone", sample_rate=RATE, channels=1, chunk_seconds=CHUNK, overlap_seconds=OVERLAP
    ).plan
    peaks = []
    for k in range(plan.count(len(x))):
        w = torch.from_numpy(x[plan.start(k) : plan.start(k) + plan.samples, 0]).reshape(1, 1, -1)
        w = torch.nn.functional.pad(w, (0, plan.samples - w.shape[-1]))
        z = quality_model.audio_codec(w).transpose(1, 2)
        out, _ = quality_model.frame_activity(["a tone"], torch.cat([z, z], -1))
        peaks.append(float(out.probs.max()))
    lo, hi = min(peaks), max(peaks)
    assert lo < hi
    threshold = (lo + hi) / 2
    closed = [p <= threshold for p in peaks]
    recorded = []
    from samaudio.streaming import LocalWorker

    class Recording(LocalWorker):
        def submit(self, jobs):
            future = super().submit(jobs)
            recorded.extend((job.index, s.gated) for job, s in zip(jobs, future.result()))
            return future

    worker = Recording(quality_model, golden_processor)
    sep, target, _ = stream(quality_model, golden_processor, x, span_threshold=threshold, worker=worker)
    assert [g for _, g in sorted(recorded)] == closed
    assert sep.counters.windows_gated == sum(closed)


def test_predicted_spans_condition_each_window(quality_model, golden_processor):
    x = mix(int(0.6 * RATE), 1, seed=5)
    _, t_on, _ = stream(quality_model, golden_processor, x, predict_spans=True, span_gate=False, span_threshold=-1.0)
    _, t_off, _ = stream(quality_model, golden_processor, x, span_gate=False)
    _, t_none, _ = stream(quality_model, golden_processor, x, predict_spans=True, span_gate=False, span_threshold=1.0)
    assert not np.allclose(t_on, t_off, atol=1e-5)  # every frame active: "+" anchors reach the DiT
    np.testing.assert_array_equal(t_none, t_off)  # no activity: no anchors, the plain stream
