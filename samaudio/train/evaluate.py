"""Separation quality on the held-out set: SI-SDR improvement per example and per class (fast-bss-eval).

SI-SDRi = SI-SDR(estimated target, true target) - SI-SDR(mixture, true target): how much closer to the
prompted sound the model's target stem is than the mixture it was given. Examples whose prompted class is
absent have no SI-SDR; for them the target stem's energy relative to the mixture's is reported instead.

Legend: L samples at 48 kHz, C codec latent channels, T latent frames.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np
import torch

from samaudio.model.model import SAMAudio, midpoint_ode_opt
from samaudio.processor import SAMAudioProcessor
from samaudio.train.data import Example

EVAL_STEPS = 8  # midpoint steps of the evaluation ODE (16 vector-field evaluations)


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """SI-SDR in dB of a (L,) estimate against a (L,) reference (fast-bss-eval, no zero-mean)."""
    import fast_bss_eval

    ref = np.asarray(reference, dtype=np.float64)[None]  # (1, L)
    est = np.asarray(estimate, dtype=np.float64)[None]
    return float(fast_bss_eval.si_sdr(ref, est)[0])


def energy_ratio_db(estimate: np.ndarray, mixture: np.ndarray) -> float:
    """10 log10(energy of the estimate / energy of the mixture): how much a stem keeps of the mixture."""
    return float(10 * np.log10((np.sum(estimate.astype(np.float64) ** 2) + 1e-12) / (np.sum(mixture.astype(np.float64) ** 2) + 1e-12)))


@dataclass
class Score:
    description: str
    present: bool
    si_sdr_mixture: float | None  # dB; None when the prompted class is absent
    si_sdr_target: float | None  # dB
    si_sdri: float | None  # dB
    target_energy_db: float  # energy of the target stem relative to the mixture


@torch.inference_mode()
def separate_examples(
    model: SAMAudio, examples: list[Example], steps: int = EVAL_STEPS, seed: int = 0, batch_size: int = 8
) -> list[np.ndarray]:
    """Target stems (L,) of each example, sampled from noise drawn with `seed` (reproducible)."""
    processor = SAMAudioProcessor(model.hop_length, model.sample_rate)
    generator = torch.Generator().manual_seed(seed)
    stems = []
    for i in range(0, len(examples), batch_size):
        group = examples[i : i + batch_size]
        batch = processor(
            descriptions=[e.description for e in group], audios=[torch.from_numpy(e.mixture)[None] for e in group]
        )
        T = int(batch.sizes.max())
        C = model.config.audio_codec.codebook_dim
        noise = torch.randn(len(group), T, 2 * C, generator=generator)  # (B, T, 2C)
        message = torch.zeros(2 * len(group), model.audio_codec.nbits)
        result = model.separate(batch, noise=noise, ode_opt=midpoint_ode_opt(steps), watermark_message=message)
        stems += [t.float().cpu().numpy()[: len(e.mixture)] for t, e in zip(result.target, group)]
    return stems


def score_examples(model: SAMAudio, examples: list[Example], steps: int = EVAL_STEPS, seed: int = 0) -> list[Score]:
    scores = []
    for e, est in zip(examples, separate_examples(model, examples, steps, seed)):
        energy = energy_ratio_db(est, e.mixture)
        if not e.present:
            scores.append(Score(e.description, False, None, None, None, energy))
            continue
        mix, tgt = si_sdr(e.mixture, e.target), si_sdr(est, e.target)
        scores.append(Score(e.description, True, mix, tgt, tgt - mix, energy))
    return scores


def summarize(scores: list[Score]) -> dict[str, float | dict[str, float]]:
    """Median SI-SDRi overall and per class (present examples), and the target energy where absent."""
    present = [s for s in scores if s.present]
    per_class = {}
    for d in sorted({s.description for s in present}):
        per_class[d] = round(statistics.median(s.si_sdri for s in present if s.description == d), 2)
    absent = [s.target_energy_db for s in scores if not s.present]
    return {
        "si_sdri_median_db": round(statistics.median(s.si_sdri for s in present), 2) if present else float("nan"),
        "si_sdri_mean_db": round(statistics.fmean(s.si_sdri for s in present), 2) if present else float("nan"),
        "si_sdr_target_median_db": round(statistics.median(s.si_sdr_target for s in present), 2) if present else float("nan"),
        "si_sdri_per_class_db": per_class,
        "absent_target_energy_median_db": round(statistics.median(absent), 2) if absent else float("nan"),
        "examples_present": len(present),
        "examples_absent": len(absent),
    }


@torch.inference_mode()
def codec_ceiling(model: SAMAudio, examples: list[Example]) -> dict[str, float]:
    """SI-SDR of the codec's own reconstruction (encode, decode) of each present target: the best a stem
    decoded by this codec can score, whatever the DiT does."""
    codec = model.audio_codec
    values = []
    for e in examples:
        if not e.present:
            continue
        wav = torch.from_numpy(e.target)[None, None].to(model.device, model.dtype)  # (1, 1, L)
        message = torch.zeros(1, codec.nbits, device=model.device)
        rec = codec.decode(codec(wav), message=message)[0, 0, : wav.shape[-1]].float().cpu().numpy()
        values.append(si_sdr(rec, e.target))
    return {"codec_si_sdr_median_db": round(statistics.median(values), 2), "codec_si_sdr_mean_db": round(statistics.fmean(values), 2)}
