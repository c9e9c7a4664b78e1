"""separate_rtf: audio seconds per wall second of `SAMAudio.separate()` per preset size, default solver.

Each preset is built with random weights (a random 2-layer T5 of the preset's text width stands in for
t5-base: text encoding is a few milliseconds of a separation either way) and separates one mono clip of
`seconds` (one batch item; a stereo window is two). The default solver is the official one: midpoint,
step 1/16, 32 model evaluations. Figures above 1 are faster than real time.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import MODEL_RATE, sync, bench_signal


def measure_separate_rtf(
    presets: list[str],
    seconds: float,
    device: str = "cpu",
    dtype: Any = None,
    repeats: int = 1,
    warmup: bool = True,
) -> dict[str, Any]:
    """{"separate_rtf": {preset: rtf}, ...} for each preset: the median of `repeats` timed calls, after an
    untimed one when `warmup` (kernel selection and compilation on a GPU; little on a CPU)."""
    import torch

    from samaudio import SAMAudio, SAMAudioProcessor
    from samaudio.model.config import get_preset

    rtf: dict[str, float] = {}
    walls: dict[str, float] = {}
    nfe = 0
    audio = torch.from_numpy(bench_signal(0, round(seconds * MODEL_RATE), 1).T.copy())  # (1, samples) mono
    for name in presets:
        torch.manual_seed(0)
        model = SAMAudio.from_config(get_preset(name).build_config(), random_text_encoder=True)
        model = model.to(device=device, dtype=dtype)
        processor = SAMAudioProcessor(model.hop_length, model.sample_rate)
        batch = processor(descriptions=["a chirp"], audios=[audio])
        if warmup:
            model.separate(batch)
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            result = model.separate(batch)
            sync(device)
            times.append(time.perf_counter() - start)
        nfe = result.nfe
        walls[name] = statistics.median(times)
        rtf[name] = seconds / walls[name]
        del model, result
    tag = "" if dtype in (None, torch.float32) else "_" + str(dtype).removeprefix("torch.")
    return {
        f"separate_rtf{tag}": rtf,
        f"separate_wall_seconds{tag}": walls,
        "separate_audio_seconds": seconds,
        "separate_model_evaluations": nfe,
    }
