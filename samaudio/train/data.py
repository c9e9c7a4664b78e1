"""Training data made on the fly: mixtures of procedurally synthesised sound classes, each with a description.

Every example is a mixture of two or three classes at random levels, each sounding only part of the clip, and
a prompt: the description of one class (the target; the rest of the mixture is the residual). Sometimes the
prompted class is absent from the mixture, so the model learns to answer silence. A fixed seed gives a fixed
held-out set (`held_out`), which the quality benchmark and the tests score.

Every class stays below 400 Hz: a codec latent of 32 channels per 40 ms frame can then hold the waveform itself
(2 * 400 Hz * 40 ms = 32 numbers), so the codec reconstructs it with its phase, which the SI-SDR of separated
stems needs. Above that band a codec must learn to synthesise, which takes far longer. The classes share the band
(kick and bass, the tones and the noise overlap), so the prompt and the sounds' time structure decide the split.

Legend: L samples at 48 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

SAMPLE_RATE = 48000
HELD_OUT_SEED = 20260  # the held-out set; training draws from other seeds (see train.loop)
ABSENT_PROB = 0.15  # how often the prompted class is missing from the mixture


def _segment(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A 0/1 gate (n,) open over one random stretch of at least a third of the clip, with 5 ms ramps."""
    length = int(n * rng.uniform(0.35, 1.0))
    start = int(rng.integers(0, n - length + 1))
    gate = np.zeros(n)
    gate[start : start + length] = 1.0
    ramp = int(0.005 * sr)
    kernel = np.ones(ramp) / ramp
    return np.convolve(gate, kernel, mode="same")


def sine_tone(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f = rng.uniform(170, 290)
    return np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))


def beeping_tone(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f, rate = rng.uniform(290, 380), rng.uniform(2, 6)
    gate = ((t * rate + rng.uniform()) % 1) < 0.5
    smooth = np.convolve(gate.astype(float), np.ones(int(0.004 * sr)) / int(0.004 * sr), mode="same")
    return np.sin(2 * np.pi * f * t) * smooth


def bass_line(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Notes of 0.2-0.5 s from an A-minor pentatonic between 55 and 110 Hz, three harmonics each."""
    out, pos = np.zeros(n), 0
    scale = 55.0 * 2 ** (np.array([0, 3, 5, 7, 10, 12]) / 12)
    while pos < n:
        length = int(rng.uniform(0.2, 0.5) * sr)
        f = rng.choice(scale)
        t = np.arange(min(length, n - pos)) / sr
        env = np.minimum(1.0, t / 0.01) * np.exp(-t * 2.0)
        note = sum(np.sin(2 * np.pi * k * f * t) / k for k in (1, 2, 3))
        out[pos : pos + len(t)] = env * note
        pos += length
    return out


def kick_drum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Hits every 0.3-0.6 s: a sine sweeping 130 -> 45 Hz under a 0.15 s decay."""
    out = np.zeros(n)
    period = int(rng.uniform(0.3, 0.6) * sr)
    hit_len = int(0.35 * sr)
    t = np.arange(hit_len) / sr
    freq = 45 + 85 * np.exp(-t / 0.04)
    hit = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.15)
    for start in range(int(rng.integers(0, period)), n, period):
        end = min(n, start + hit_len)
        out[start:end] += hit[: end - start]
    return out


def noise_burst(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Bursts of 0.1-0.4 s of noise band-limited to 100-380 Hz, with gaps between them."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spec[(freqs < 100) | (freqs > 380)] = 0
    noise = np.fft.irfft(spec, n)
    gate, pos = np.zeros(n), int(rng.integers(0, int(0.2 * sr)))
    while pos < n:
        length = int(rng.uniform(0.1, 0.4) * sr)
        gate[pos : pos + length] = 1.0
        pos += length + int(rng.uniform(0.1, 0.4) * sr)
    gate = np.convolve(gate, np.ones(int(0.005 * sr)) / int(0.005 * sr), mode="same")
    return noise * gate


# description -> synthesiser; the descriptions are the prompts the model is trained and tested with
CLASSES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "a sine tone": sine_tone,
    "a beeping tone": beeping_tone,
    "a bass line": bass_line,
    "a kick drum": kick_drum,
    "a noise burst": noise_burst,
}
DESCRIPTIONS = list(CLASSES)


@dataclass
class Example:
    mixture: np.ndarray  # (L,) float32, peak at most 0.9
    target: np.ndarray  # (L,) float32, the prompted class as mixed (zeros when absent)
    description: str
    present: bool  # False when the prompted class is not in the mixture

    @property
    def residual(self) -> np.ndarray:  # (L,)
        return self.mixture - self.target


def make_source(description: str, rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One class, sounding over a random stretch of the clip, at RMS 0.1 * 10^(U(-6, 6) / 20) where it sounds."""
    wav = CLASSES[description](rng, n, sr) * _segment(rng, n, sr)
    active = np.abs(wav) > 1e-4
    rms = np.sqrt(np.mean(wav[active] ** 2)) if active.any() else 1.0
    return wav / max(rms, 1e-8) * 0.1 * 10 ** (rng.uniform(-6, 6) / 20)


def make_example(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> Example:
    """A mixture of 2-3 classes and the prompt for one of them (absent from the mixture ABSENT_PROB of the time)."""
    n = int(round(seconds * sr))
    k = int(rng.integers(2, 4))
    order = rng.permutation(len(DESCRIPTIONS))
    in_mix = [DESCRIPTIONS[i] for i in order[:k]]
    present = rng.uniform() >= ABSENT_PROB
    prompt = in_mix[0] if present else DESCRIPTIONS[order[k]]
    sources = {d: make_source(d, rng, n, sr) for d in in_mix}
    mixture = sum(sources.values())
    target = sources[prompt] if present else np.zeros(n)
    scale = min(1.0, 0.9 / max(np.abs(mixture).max(), 1e-8))
    return Example((mixture * scale).astype(np.float32), (target * scale).astype(np.float32), prompt, present)


def held_out(n: int, seconds: float = 4.0, seed: int = HELD_OUT_SEED) -> list[Example]:
    """The first `n` examples of the fixed held-out set (the same for any `n` given the seed)."""
    return [make_example(np.random.default_rng([seed, i]), seconds) for i in range(n)]


def demo_mixture(
    seconds: float, descriptions: Sequence[str], seed: int = HELD_OUT_SEED + 2
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The mixture `samaudio demo` separates: one source of each described class (each sounding over a random
    stretch, as in training), summed. Returns the mixture (L,) float32 with peak 0.9 at most and the sources as
    mixed, by description."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    sources = {d: make_source(d, rng, n) for d in descriptions}
    mixture = sum(sources.values())
    scale = min(1.0, 0.9 / max(np.abs(mixture).max(), 1e-8))
    return (mixture * scale).astype(np.float32), {d: (s * scale).astype(np.float32) for d, s in sources.items()}


def long_example(
    seconds: float, description: str, seed: int = HELD_OUT_SEED + 1, segment_seconds: float = 3.0, present_prob: float = 0.6
) -> tuple[Example, np.ndarray]:
    """A long mixture for streaming: segments of `segment_seconds`, each with 1-2 other classes, and the
    prompted class in each segment with probability `present_prob`. Returns the example and (segments,) bool
    saying where the prompted class sounds."""
    rng = np.random.default_rng([seed, DESCRIPTIONS.index(description)])
    n_seg, seg = int(round(seconds / segment_seconds)), int(round(segment_seconds * SAMPLE_RATE))
    others = [d for d in DESCRIPTIONS if d != description]
    mixture, target, present = np.zeros(n_seg * seg), np.zeros(n_seg * seg), np.zeros(n_seg, dtype=bool)
    for s in range(n_seg):
        part = slice(s * seg, (s + 1) * seg)
        for i in rng.permutation(len(others))[: int(rng.integers(1, 3))]:
            mixture[part] += make_source(others[i], rng, seg)
        if rng.uniform() < present_prob:
            present[s] = True
            target[part] = make_source(description, rng, seg)
            mixture[part] += target[part]
    scale = min(1.0, 0.9 / max(np.abs(mixture).max(), 1e-8))
    example = Example((mixture * scale).astype(np.float32), (target * scale).astype(np.float32), description, True)
    return example, present
