"""Separation quality of the samaudio-demo model (`python -m bench --only quality`, with the streaming quality
path of bench/quality.py): held-out SI-SDRi per class, the codec's ceiling, and what streaming does to it.

The model is taken by name from the catalog: the shipped weights when samaudio ships them, else the untrained
preset of that size (its figures then show what an untrained model scores).

- Held-out: the first `examples` mixtures of `samaudio.train.data.held_out` (`seconds` each), separated in one
  pass; SI-SDR improvement (fast-bss-eval) per class and overall, and the target stem's energy relative to
  the mixture where the prompted class is absent.
- Ceiling: SI-SDR of the codec's own reconstruction of the true targets (no separation involved).
- Streaming: a `stream_seconds` mixture per class (`data.long_example`: 3 s segments, the prompted class in
  about 60% of them) separated in one pass (`SAMAudio.separate`) and by `StreamingSeparator` with 10 s
  windows (2 s overlap) and 2 s windows (0.5 s overlap). Per mode: SI-SDR over the samples within 0.5 s of a
  seam (the middle of an overlap) and elsewhere, over the segments where the target sounds; and the target
  stem's energy relative to the mixture in the segments where it is absent (a model that leaks the prompted
  sound into silence scores high there; the official model's issue #94).
All stems are sampled from a fixed seed with `steps` midpoint steps.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

MODEL = "samaudio-demo"
SEAM_SECONDS = 0.5
MODES = {"one_pass": None, "windows_10s": (10.0, 2.0), "windows_2s": (2.0, 0.5)}


def _stream(model: Any, processor: Any, mixture: np.ndarray, description: str, window: tuple[float, float], steps: int):
    """Target stem (L,) of `mixture` by the streaming engine, and the seam positions (samples)."""
    from samaudio.model.model import midpoint_ode_opt
    from samaudio.streaming import StreamingSeparator

    chunk, overlap = window
    sep = StreamingSeparator(
        model, processor, description, sample_rate=model.sample_rate, channels=1, chunk_seconds=chunk,
        overlap_seconds=overlap, seed=0, ode_opt=midpoint_ode_opt(steps),
    )
    blocks = sep.push(mixture[:, None]) + sep.finish()
    target = np.concatenate([b.target[:, 0] for b in blocks])
    plan = sep.settings.plan
    seams = [plan.start(k) + plan.overlap * plan.hop // 2 for k in range(1, plan.count(len(mixture)))]
    return target, seams


def _masked_si_sdr(estimate: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    from samaudio.train.evaluate import si_sdr

    return si_sdr(estimate[mask], reference[mask]) if mask.any() else float("nan")


def measure_separation(
    examples: int = 40, seconds: float = 4.0, stream_seconds: float = 60.0, steps: int = 8, model_name: str = MODEL,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    import torch

    from samaudio.model import catalog
    from samaudio.train import data, evaluate

    model, processor = catalog.load(model_name, device="cpu")
    held = data.held_out(examples, seconds)
    summary = evaluate.summarize(evaluate.score_examples(model, held, steps=steps))
    out: dict[str, Any] = {f"quality_{k}": v for k, v in summary.items()}
    out.update(evaluate.codec_ceiling(model, held))

    seam = int(SEAM_SECONDS * model.sample_rate)
    per_mode: dict[str, dict[str, list[float]]] = {m: {"seam": [], "elsewhere": [], "all": [], "absent": []} for m in MODES}
    for description in classes or data.DESCRIPTIONS:
        example, present = data.long_example(stream_seconds, description)
        seg = len(example.mixture) // len(present)
        sounding = np.repeat(present, seg)  # (L,) the segments where the target sounds
        for mode, window in MODES.items():
            if window is None:
                target = evaluate.separate_examples(model, [example], steps=steps)[0]
                seams: list[int] = []
            else:
                with torch.inference_mode():
                    target, seams = _stream(model, processor, example.mixture, description, window, steps)
            near = np.zeros(len(target), dtype=bool)
            for s in seams:
                near[max(0, s - seam) : s + seam] = True
            per_mode[mode]["all"].append(_masked_si_sdr(target, example.target, sounding))
            if seams:
                per_mode[mode]["seam"].append(_masked_si_sdr(target, example.target, sounding & near))
                per_mode[mode]["elsewhere"].append(_masked_si_sdr(target, example.target, sounding & ~near))
            for s in np.flatnonzero(~present):
                part = slice(s * seg, (s + 1) * seg)
                per_mode[mode]["absent"].append(evaluate.energy_ratio_db(target[part], example.mixture[part]))
    for mode, figures in per_mode.items():
        for key, values in figures.items():
            values = [v for v in values if np.isfinite(v)]
            if values:
                name = {"absent": "absent_target_energy_db"}.get(key, f"si_sdr_{key}_db")
                out[f"stream_{mode}_{name}"] = round(statistics.median(values), 2)
    out["quality_model"] = model_name
    return out
